"""PyTorch's ``torch.nn.functional.mse_loss`` and ``torch.nn.MSELoss``, computed by fastmse.

Switch with one line::

    # from torch.nn.functional import mse_loss
    from fastmse.compat.torch import mse_loss

Same arguments and defaults: ``reduction`` ``"mean"``, ``"sum"`` or ``"none"``, the
deprecated ``size_average``/``reduce`` pair, and ``weight`` (the shape of `input`;
``"mean"`` is then ``sum(weight * e) / sum(weight)``, negative weights allowed as in
PyTorch). Targets of another shape broadcast, with PyTorch's ``UserWarning``.

Tensors in, tensors out, on their device (CPU tensors are read without a copy; CUDA
tensors run on PyTorch's current stream), with gradients through autograd. Where PyTorch
is installed, importing this module imports it and registers the operators. The loss is
the custom operator ``torch.ops.fastmse.mse_loss`` (``torch.library``, with a fake
implementation, so ``torch.compile(fullgraph=True)`` keeps it in one graph; eagerly the
same functions run as a ``torch.autograd.Function``, without the operator's dispatch).
Where `input` requires grad and the loss is reduced, the forward runs the fused pass
(``torch.ops.fastmse.mse_loss_and_grad``, whose second output, the gradient, carries no
gradient) and the backward only scales that gradient; ``create_graph=True``, targets or
weights that require grad, and ``reduction="none"`` take PyTorch's expressions in the
backward. float16, bfloat16, float32 and float64 tensors (bfloat16 on the CPU, read as
``ml_dtypes.bfloat16`` arrays: the optional extra ``fastmse[bfloat16]``).

Forward-mode AD (``torch.autograd.forward_ad``) and ``torch.func``'s transforms work as
on PyTorch's loss: ``grad``, ``vmap`` (a loss per sample is one fastmse call over the
samples' axes, not a loop), ``jacrev``, ``jvp``, ``jacfwd``, ``hessian``, ``linearize``
and their compositions, such as per-sample gradients (``vmap(grad(...))``). Forward mode
over forward mode (``jacfwd`` of ``jacfwd``) raises NotImplementedError: PyTorch gives a
custom function's jvp no derivative of its own. Traced (``make_fx``, as ``torch.export``
traces; ``torch.jit.trace``), functionalized or on fake tensors, the loss is the operator
(``vmap`` traced so raises NotImplementedError: the operator has no batch dimension).

NumPy arrays (and anything else ``np.asarray`` takes) in give NumPy scalars or arrays out.
"""

from __future__ import annotations

import importlib
import math
import warnings
from types import SimpleNamespace
from typing import Any, TypeGuard

import numpy as np

from .._types import Reduction
from ._tensors import as_tensor, computed, is_tensor, operands

_REDUCTIONS = ("none", "mean", "sum")  # in the order of PyTorch's reduction codes (0, 1, 2)


def _is_reduction(reduction: str) -> TypeGuard[Reduction]:
    """Whether `reduction` is one of PyTorch's (a check type checkers follow)."""
    return reduction in _REDUCTIONS


def _size(shape: tuple[int, ...]) -> str:
    return f"torch.Size({list(shape)})"


def _legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
        UserWarning,
        stacklevel=3,
    )
    return reduction


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if is_tensor(value) else tuple(np.shape(value))


def _mean_over_own_weights(input_shape: Any, target_shape: Any, weight: Any, reduction: str) -> bool:
    """Whether PyTorch's weighted mean differs from fastmse's: it divides by the sum of the
    weights over their own shape (input's), also where targets broadcast input further."""
    if weight is None or reduction != "mean":
        return False
    return tuple(np.broadcast_shapes(tuple(input_shape), tuple(target_shape))) != tuple(input_shape)


def mse_loss(
    input: Any,
    target: Any,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Any = None,
) -> Any:
    """Element-wise mean squared error, optionally weighted, as PyTorch computes it.

    Parameters
    ----------
    input : torch.Tensor or array_like
        Predicted values.
    target : torch.Tensor or array_like
        Ground truth values; broadcast to `input` (with a ``UserWarning`` when the
        shapes differ, as in PyTorch).
    size_average, reduce : bool, optional
        Deprecated; they override `reduction` (with PyTorch's warning).
    reduction : {"mean", "sum", "none"}, optional
        As in PyTorch. Default ``"mean"``.
    weight : torch.Tensor or array_like, optional
        Weights of the shape of `input`.

    Returns
    -------
    torch.Tensor, numpy scalar or ndarray
        A tensor (0-d where reduced) where `input` or `target` is one, on its device and
        in the autograd graph; otherwise NumPy's types.

    Raises
    ------
    ValueError
        An unknown `reduction`, a `weight` of another shape than `input`, shapes that do
        not broadcast.
    TypeError
        Tensors of a dtype fastmse does not compute (integers, bfloat16 on CUDA), or
        bfloat16 tensors where ml_dtypes is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse.compat.torch import mse_loss
    >>> mse_loss(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    np.float64(2.5)
    """
    input_shape, target_shape = _shape(input), _shape(target)
    if input_shape != target_shape:
        warnings.warn(
            f"Using a target size ({_size(target_shape)}) that is different to the input size "
            f"({_size(input_shape)}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            UserWarning,
            stacklevel=2,
        )
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    if weight is not None:
        if _shape(weight) != input_shape:
            msg = "Weights and input must have the same size."
            raise ValueError(msg)
        if reduction not in _REDUCTIONS:
            msg = f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'."
            raise ValueError(msg)
    elif not _is_reduction(reduction):
        msg = f"{reduction} is not a valid value for reduction"
        raise ValueError(msg)
    if is_tensor(input) or is_tensor(target):
        return _tensor_loss(input, target, weight, reduction)
    if _mean_over_own_weights(input_shape, target_shape, weight, reduction):
        value = computed(input, target, weight, "sum", with_gradient=False)[0]
        return value / np.asarray(weight).sum(dtype=np.result_type(value))
    return computed(input, target, weight, reduction, with_gradient=False)[0]


# Tensors: the loss as torch.library operators, registered as this module is imported
# (where PyTorch is installed), so that a first call inside torch.compile finds them.
_MEAN = _REDUCTIONS.index("mean")


def _tensor_loss(input: Any, target: Any, weight: Any, reduction: str) -> Any:
    ops = _OPS
    code = _REDUCTIONS.index(reduction)
    fused = reduction != "none" and _torch.is_grad_enabled() and input.requires_grad
    if _torch.compiler.is_compiling():  # the operators: one node each in the graph
        return _operator(fused, input, target, weight, code)
    if _differentiated_otherwise():
        # torch.func, or forward-mode AD (torch.autograd.forward_ad, torch.func.linearize):
        # the loss alone, whose backward is differentiated again and which has a jvp.
        return ops.Transformable.apply(input, target, weight, code, 0)
    if _traced() or _transforms_active():  # the operators too (that transform: functionalize)
        return _operator(fused, input, target, weight, code)
    # Eagerly, the same functions without the operators' dispatch (tens of microseconds a call).
    if fused:
        return ops.Fused.apply(input, target, weight, code)
    if _requires_grad(input, target, weight):
        return ops.Loss.apply(input, target, weight, code)
    return _forward(input, target, weight, code, with_gradient=False)[0]


def _differentiated_otherwise() -> bool:
    """Whether a torch.func transform (but functionalize alone, which the operators take) or
    forward-mode AD is active."""
    if _forward_ad.get("_current_level", -1) >= 0:
        return True
    return bool(_transforms_active()) and set(_transforms()) != {"Functionalize"}


def _requires_grad(*tensors: Any) -> bool:
    """Whether autograd records the call: grad mode on, and a tensor (not None) requiring grad."""
    return bool(_torch.is_grad_enabled()) and any(x is not None and x.requires_grad for x in tensors)


def _traced() -> bool:
    """Whether the call is traced (make_fx, as torch.export traces; torch.jit.trace) or runs
    on fake tensors: the functions' NumPy would be a constant in the trace, or fail on data
    that is not there."""
    return bool(_dispatch_modes()) or bool(_torch._C._is_tracing())


def _operator(fused: bool, input: Any, target: Any, weight: Any, code: int) -> Any:
    return (
        _OPS.mse_loss_and_grad(input, target, weight, code)[0] if fused else _OPS.mse_loss(input, target, weight, code)
    )


def _forward(
    input: Any, target: Any, weight: Any, code: int, with_gradient: bool, batch_dims: int = 0
) -> tuple[Any, Any]:
    """The loss, and the gradient with respect to input where asked (both C-contiguous);
    with `batch_dims`, a loss for each position of the leading dimensions of the broadcast
    shape (torch.vmap's samples: see _vmap)."""
    reduction = _REDUCTIONS[code]
    # PyTorch's result dtype, weights included (a copy only where one differs).
    dtype = _result_dtype(input, target, weight)
    input, target = _as_dtype(input, dtype), _as_dtype(target, dtype)
    weight = None if weight is None else _as_dtype(weight, dtype)
    axis = sample_ndim = None
    if batch_dims:  # input has every batch dimension (see _vmap)
        sample_ndim = max(input.dim(), target.dim()) - batch_dims  # the broadcast's (torch's is slow)
        axis = tuple(range(batch_dims, batch_dims + sample_ndim)) if code != 0 else None
    # Per sample, a weight's own shape is input's (PyTorch's check saw the samples' shapes).
    spread = weight is not None and code == _MEAN and bool(batch_dims)
    spread = spread or _mean_over_own_weights(input.shape, target.shape, weight, reduction)
    value, grad = computed(*operands(input, target, weight), "sum" if spread else reduction, with_gradient, axis)
    # C-contiguous, as the fake says ("none" follows predictions' layout).
    value = as_tensor(value, input).contiguous()
    grad = None if grad is None else as_tensor(grad, input).contiguous()
    if spread:  # PyTorch's weighted mean divides by the sum of the weights over their own shape
        total = _sample_sums(weight, sample_ndim, keepdim=False)
        value = value / total
        grad = None if grad is None else grad / total  # (fused: no batch dimensions)
    return value, grad


def _sample_sums(x: Any, sample_ndim: int | None, keepdim: bool = True) -> Any:
    """`x` summed over its own shape (`sample_ndim` None: no batch dimensions), or over
    its last `sample_ndim` dimensions, one sample's: none where the samples are 0-d (a
    sum over no dimensions is torch's sum over all)."""
    if sample_ndim is None:
        return x.sum()
    dims = tuple(range(max(0, x.dim() - sample_ndim), x.dim()))
    return x.sum(dims, keepdim=keepdim) if dims else x


def _vmap(
    info: Any, in_dims: tuple[int | None, ...], input: Any, target: Any, weight: Any, code: int, batch_dims: int
) -> tuple[Any, int]:
    """The loss under torch.vmap, as one call with one more batch dimension: each batched
    tensor's batch dimension first, then dimensions of 1 up to the samples' number of
    dimensions (so that batches and unbatched tensors broadcast as the samples do); an
    unbatched input is expanded along the batch, so that the loss has it too."""
    tensors = (input, target, weight)
    ndim = max(x.dim() - (d is not None) for x, d in zip(tensors, in_dims, strict=False) if x is not None)
    if in_dims[0] is None:
        tensors = (input.expand(info.batch_size, *input.shape), target, weight)
        in_dims = (0, *in_dims[1:])

    def front(x: Any, d: int | None) -> Any:
        if x is None or d is None:
            return x
        x = x.movedim(d, 0)
        return x.reshape(x.shape[:1] + (1,) * (ndim + 1 - x.dim()) + x.shape[1:])

    input, target, weight = (front(x, d) for x, d in zip(tensors, in_dims, strict=False))
    if _differentiated_otherwise() or _requires_grad(input, target, weight):
        return _OPS.Transformable.apply(input, target, weight, code, batch_dims + 1), 0
    # The last transform, nothing to differentiate: the loss itself (apply's own cost is most of a call).
    return _transformable_forward(input, target, weight, code, batch_dims + 1), 0


def _result_shape(input: Any, target: Any, code: int) -> tuple[int, ...]:
    return tuple(_torch.broadcast_shapes(input.shape, target.shape)) if code == 0 else ()


def _as_dtype(tensor: Any, dtype: Any) -> Any:
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _result_dtype(input: Any, target: Any, weight: Any) -> Any:
    if target.dtype == input.dtype and (weight is None or weight.dtype == input.dtype):
        return input.dtype
    dtype = _torch.promote_types(input.dtype, target.dtype)
    return dtype if weight is None else _torch.promote_types(dtype, weight.dtype)


def _backward(ctx: Any, grad_loss: Any, *_: Any) -> tuple[Any, ...]:
    """Gradients of the loss: the fused pass's, scaled by grad_loss, where that is all that
    is asked; PyTorch's expressions otherwise (they are differentiable again). In an eager
    call through the wrapper, which holds the fused gradient alone, it is scaled in place,
    once: a second backward through the same graph takes PyTorch's expressions."""
    input, target, weight = ctx.saved_tensors
    wants_input, wants_target, wants_weight = ctx.needs_input_grad[:3]
    others = (None,) * (len(ctx.needs_input_grad) - 3)  # reduction (and batch_dims)
    fused, ctx.fused = ctx.fused, None
    if grad_loss is None:  # the loss took no part in what is differentiated
        return None, None, None, *others
    if fused is not None and not _torch.is_grad_enabled() and not wants_target and not wants_weight:
        return (fused.mul_(grad_loss) if ctx.owns_fused else fused * grad_loss), None, None, *others
    difference = input - target
    batch_dims = ctx.batch_dims
    sample_ndim = difference.dim() - batch_dims if batch_dims else None
    if sample_ndim is not None and ctx.reduction != 0:  # a loss per sample, over that sample's positions
        grad_loss = grad_loss.reshape(grad_loss.shape + (1,) * sample_ndim)
    # The scalar (or per-sample) factors first, then one product over the positions, as
    # PyTorch's own backward orders it: (p - t) * (2 / n * grad).
    scale = 2 * grad_loss
    total = None
    if ctx.reduction == _MEAN:
        if weight is None:
            total = math.prod(difference.shape[batch_dims:])
        else:
            total = _sample_sums(weight, sample_ndim)
        scale = grad_loss * (2 / total) if weight is None else scale / total
    factor = difference * scale if weight is None else weight * difference * scale
    grad_input = factor.sum_to_size(input.shape) if wants_input else None
    grad_target = (-factor).sum_to_size(target.shape) if wants_target else None
    grad_weight = None
    if wants_weight:
        squares = difference * difference
        if total is not None:  # d/dw of sum(w * squares) / sum(w), w over its own shape
            mean = _sample_sums(weight * squares, sample_ndim) / total
            correction = grad_loss * mean / total
            if sample_ndim is not None:  # summed over the samples that share a weight
                kept = max(0, weight.dim() - sample_ndim)
                correction = correction.sum_to_size(weight.shape[:kept] + (1,) * (weight.dim() - kept))
            grad_weight = (grad_loss * squares / total).sum_to_size(weight.shape) - correction
        else:
            grad_weight = (grad_loss * squares).sum_to_size(weight.shape)
    return grad_input, grad_target, grad_weight, *others


def _jvp(ctx: Any, input_tangent: Any, target_tangent: Any, weight_tangent: Any, *_: Any) -> Any:
    """The loss's change along the tangents (forward-mode: torch.func.jvp, jacfwd)."""
    if _forward_modes() > 1:  # one differentiates the other's jvp
        msg = (
            "fastmse's loss under two forward-mode transforms (jacfwd of jacfwd, jvp of jvp) is not "
            "computed: PyTorch gives a custom function's jvp no derivative of its own, so the result "
            "would be 0; use torch.func.hessian (jacfwd of jacrev) or jacrev of jacrev"
        )
        raise NotImplementedError(msg)
    input, target, weight = ctx.saved_tensors
    difference = input - target
    change = difference.new_zeros(())
    if input_tangent is not None:
        change = change + input_tangent
    if target_tangent is not None:
        change = change - target_tangent
    terms = 2 * difference * change if weight is None else 2 * weight * difference * change
    if weight_tangent is not None:
        terms = terms + weight_tangent * difference * difference
    terms = terms.expand(difference.shape)
    if ctx.reduction == 0:
        return terms
    batch_dims = ctx.batch_dims
    sample_ndim = difference.dim() - batch_dims if batch_dims else None
    sums = _sample_sums(terms, sample_ndim)
    if ctx.reduction == _MEAN:
        if weight is None:
            sums = sums / math.prod(difference.shape[batch_dims:])
        else:  # d(sum(w * e) / sum(w)) = (d sum(w * e) - mean * sum(dw)) / sum(w)
            total = _sample_sums(weight, sample_ndim)
            if weight_tangent is not None:
                mean = _sample_sums(weight * difference * difference, sample_ndim) / total
                sums = sums - mean * _sample_sums(weight_tangent, sample_ndim)
            sums = sums / total
    return sums.reshape(difference.shape[:batch_dims])


def _transforms() -> list[str]:
    """The names of the active torch.func transforms, outermost first ("Vmap", "Grad",
    "Jvp", "Functionalize"), from torch.func's interpreter stack: a private API (where it
    is missing, none are found)."""
    try:
        pyfunctorch = importlib.import_module("torch._functorch.pyfunctorch")
        interpreters = pyfunctorch.retrieve_all_functorch_interpreters()
    except (ImportError, AttributeError):
        return []
    return [str(interpreter.key().name) for interpreter in interpreters]


def _forward_modes() -> int:
    """How many forward-mode transforms (torch.func.jvp, jacfwd) are active."""
    return _transforms().count("Jvp")


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    input, target, weight, code = inputs[:4]
    ctx.reduction = code
    ctx.batch_dims = inputs[4] if len(inputs) > 4 else 0  # Transformable's
    ctx.owns_fused = False  # the operators' callers may hold their second output
    # The fused gradient, the operator's second output, which carries no gradient of its own.
    ctx.fused = output[1] if isinstance(output, tuple) else None
    if ctx.fused is not None:
        ctx.mark_non_differentiable(ctx.fused)
    ctx.set_materialize_grads(False)  # no zeros for that second output's gradient
    ctx.save_for_backward(input, target, weight)


def _setup_transformable(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    _setup_context(ctx, inputs, output)
    ctx.save_for_forward(*inputs[:3])


def _transformable_forward(input: Any, target: Any, weight: Any, reduction: int, batch_dims: int) -> Any:
    if _traced():  # the operator, whose fake and tracing there are; it has no batch dimensions
        if batch_dims:
            msg = "fastmse's loss under torch.vmap, traced (make_fx) or on fake tensors, is not computed"
            raise NotImplementedError(msg)
        return _OPS.mse_loss(input, target, weight, reduction)
    return _forward(input, target, weight, reduction, with_gradient=False, batch_dims=batch_dims)[0]


def _operators(torch: Any) -> SimpleNamespace:
    """torch.ops.fastmse.mse_loss and mse_loss_and_grad, and the same as autograd Functions."""
    arguments = "(Tensor input, Tensor target, Tensor? weight, int reduction)"

    def loss_impl(input: Any, target: Any, weight: Any, reduction: int) -> Any:
        return _forward(input, target, weight, reduction, with_gradient=False)[0]

    def loss_fake(input: Any, target: Any, weight: Any, reduction: int) -> Any:
        shape = _result_shape(input, target, reduction)
        return input.new_empty(shape, dtype=_result_dtype(input, target, weight))

    def loss_and_grad_impl(input: Any, target: Any, weight: Any, reduction: int) -> tuple[Any, Any]:
        return _forward(input, target, weight, reduction, with_gradient=True)

    def loss_and_grad_fake(input: Any, target: Any, weight: Any, reduction: int) -> tuple[Any, Any]:
        dtype = _result_dtype(input, target, weight)
        return input.new_empty((), dtype=dtype), input.new_empty(input.shape, dtype=dtype)

    custom_op = torch.library.custom_op
    loss_op = custom_op("fastmse::mse_loss", mutates_args=(), schema=f"{arguments} -> Tensor")(loss_impl)
    loss_and_grad_op = custom_op(
        "fastmse::mse_loss_and_grad", mutates_args=(), schema=f"{arguments} -> (Tensor, Tensor)"
    )(loss_and_grad_impl)
    loss_op.register_fake(loss_fake)
    loss_and_grad_op.register_fake(loss_and_grad_fake)
    loss_op.register_autograd(_backward, setup_context=_setup_context)
    loss_and_grad_op.register_autograd(_backward, setup_context=_setup_context)

    def function(with_gradient: bool) -> Any:
        """The operator's forward and backward as a torch.autograd.Function."""

        def forward(ctx: Any, input: Any, target: Any, weight: Any, reduction: int) -> Any:
            output = _forward(input, target, weight, reduction, with_gradient)
            _setup_context(ctx, (input, target, weight, reduction), output if with_gradient else output[0])
            ctx.owns_fused = True  # the wrapper returns the loss alone
            return output[0]

        methods = {"forward": staticmethod(forward), "backward": staticmethod(_backward)}
        return type("FusedLoss" if with_gradient else "Loss", (torch.autograd.Function,), methods)

    # For torch.func: forward and setup_context apart (torch.func's condition), a vmap rule
    # and a jvp; eagerly, Function.apply binds such a forward's arguments by inspect.signature
    # (tens of microseconds), so eager calls take the functions above.
    transformable = {
        "forward": staticmethod(_transformable_forward),
        "setup_context": staticmethod(_setup_transformable),
        "backward": staticmethod(_backward),
        "vmap": staticmethod(_vmap),
        "jvp": staticmethod(_jvp),
    }
    return SimpleNamespace(
        mse_loss=torch.ops.fastmse.mse_loss,
        mse_loss_and_grad=torch.ops.fastmse.mse_loss_and_grad,
        Loss=function(with_gradient=False),
        Fused=function(with_gradient=True),
        Transformable=type("Transformable", (torch.autograd.Function,), transformable),
    )


try:
    _torch: Any = importlib.import_module("torch")
except ImportError:  # NumPy arrays only
    _torch = None
_OPS: Any = None if _torch is None else _operators(_torch)
# Whether a torch.func transform (grad, vmap, jvp, ...) is running: what Function.apply asks.
_transforms_active: Any = getattr(getattr(_torch, "_C", None), "_are_functorch_transforms_active", lambda: False)
# How many torch dispatch modes (make_fx's proxy mode, FakeTensorMode, ...) are active.
_dispatch_modes: Any = getattr(getattr(_torch, "_C", None), "_len_torch_dispatch_stack", lambda: 0)
# torch.autograd.forward_ad's globals: its _current_level is that of the innermost dual_level
# (-1 outside any), a module global that its dual_level context sets.
_forward_ad: dict[str, Any] = {} if _torch is None else vars(importlib.import_module("torch.autograd.forward_ad"))

if _torch is not None:

    class MSELoss(_torch.nn.Module):  # type: ignore[misc]
        """``torch.nn.MSELoss`` computed by :func:`mse_loss`: the same arguments."""

        def __init__(
            self, size_average: bool | None = None, reduce: bool | None = None, reduction: str = "mean"
        ) -> None:
            super().__init__()
            if size_average is not None or reduce is not None:
                reduction = _legacy_reduction(size_average, reduce)
            self.reduction = reduction

        def forward(self, input: Any, target: Any) -> Any:
            return mse_loss(input, target, reduction=self.reduction)


__all__ = ["MSELoss", "mse_loss"]
