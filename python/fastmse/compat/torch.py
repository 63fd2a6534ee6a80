"""PyTorch's ``torch.nn.functional.mse_loss`` and ``torch.nn.MSELoss``, computed by fastmse.

Switch with one line::

    # from torch.nn.functional import mse_loss
    from fastmse.compat.torch import mse_loss

Same arguments and defaults: ``reduction`` ``"mean"``, ``"sum"`` or ``"none"``, the
deprecated ``size_average``/``reduce`` pair, and ``weight`` (the shape of `input`;
``"mean"`` is then ``sum(weight * e) / sum(weight)``, negative weights allowed as in
PyTorch). Targets of another shape broadcast, with PyTorch's ``UserWarning``.

Tensors in, tensors out, on their device (CPU tensors are read without a copy; CUDA
tensors run on PyTorch's current stream), with gradients through autograd (not through
``torch.func`` transforms yet). Where PyTorch is installed, importing this module imports
it and registers the operators. The loss is
the custom operator ``torch.ops.fastmse.mse_loss`` (``torch.library``, with a fake
implementation, so ``torch.compile(fullgraph=True)`` keeps it in one graph; eagerly the
same functions run as a ``torch.autograd.Function``, without the operator's dispatch).
Where `input` requires grad and the loss is reduced, the forward runs the fused pass
(``torch.ops.fastmse.mse_loss_and_grad``, whose second output, the gradient, carries no
gradient) and the backward only scales that gradient; ``create_graph=True``, targets or
weights that require grad, and ``reduction="none"`` take PyTorch's expressions in the
backward. float16, bfloat16, float32 and float64 tensors (bfloat16 on the CPU, read as
``ml_dtypes.bfloat16`` arrays: the optional extra ``fastmse[bfloat16]``).

NumPy arrays (and anything else ``np.asarray`` takes) in give NumPy scalars or arrays out.
"""

from __future__ import annotations

import importlib
import warnings
from types import SimpleNamespace
from typing import Any, TypeGuard

import numpy as np

from .._compute import gradient, loss
from .._resolve import Call, resolve
from .._types import Reduction
from ._tensors import as_tensor, operands

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


def _is_tensor(value: Any) -> bool:
    return _torch is not None and isinstance(value, _torch.Tensor)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if _is_tensor(value) else tuple(np.shape(value))


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
    if _is_tensor(input) or _is_tensor(target):
        return _tensor_loss(input, target, weight, reduction)
    if _mean_over_own_weights(input_shape, target_shape, weight, reduction):
        value = loss(_call(input, target, weight, "sum"), keepdims=False)
        return value / np.asarray(weight).sum(dtype=np.result_type(value))
    return loss(_call(input, target, weight, reduction), keepdims=False)


def _call(input: Any, target: Any, weight: Any, reduction: str) -> Call:
    """The fastmse call PyTorch's loss is: weights may be negative, and float64 weights
    make a float64 loss (PyTorch multiplies by them in their dtype)."""
    if weight is None:
        return resolve(input, target, None, None, reduction)
    if not isinstance(weight, np.ndarray) and not _is_tensor(weight):
        weight = np.asarray(weight)
    call = resolve(input, target, weight, None, reduction, signed_weights=True)
    if isinstance(weight, np.ndarray) and weight.dtype.kind == "f" and weight.dtype.itemsize > call.dtype.itemsize:
        wider = weight.dtype
        call = resolve(input.astype(wider), target.astype(wider), weight, None, reduction, signed_weights=True)
    return call


# Tensors: the loss as torch.library operators, registered as this module is imported
# (where PyTorch is installed), so that a first call inside torch.compile finds them.
_MEAN = _REDUCTIONS.index("mean")


def _tensor_loss(input: Any, target: Any, weight: Any, reduction: str) -> Any:
    ops = _OPS
    code = _REDUCTIONS.index(reduction)
    fused = reduction != "none" and _torch.is_grad_enabled() and input.requires_grad
    if _torch.compiler.is_compiling():  # the operators: one node each in the graph
        return (
            ops.mse_loss_and_grad(input, target, weight, code)[0]
            if fused
            else ops.mse_loss(input, target, weight, code)
        )
    # Eagerly, the same functions without the operators' dispatch (tens of microseconds a call).
    if fused:
        return ops.Fused.apply(input, target, weight, code)
    if _torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (input, target, weight)):
        return ops.Loss.apply(input, target, weight, code)
    return _forward(input, target, weight, code, with_gradient=False)[0]


def _forward(input: Any, target: Any, weight: Any, code: int, with_gradient: bool) -> tuple[Any, Any]:
    """The loss, and the gradient with respect to input where asked (both C-contiguous)."""
    reduction = _REDUCTIONS[code]
    # PyTorch's result dtype, weights included (a copy only where one differs).
    dtype = _result_dtype(input, target, weight)
    input, target = input.to(dtype), target.to(dtype)
    weight = None if weight is None else weight.to(dtype)
    spread = _mean_over_own_weights(input.shape, target.shape, weight, reduction)
    call = _call(*operands(input, target, weight), "sum" if spread else reduction)
    if with_gradient:
        value, grad = gradient(call, None, False, with_loss=True)
        value, grad = as_tensor(value, input), as_tensor(grad, input).contiguous()
    else:
        # C-contiguous, as the fake says ("none" follows predictions' layout).
        value, grad = as_tensor(loss(call, keepdims=False), input).contiguous(), None
    if spread:
        total = weight.sum()
        value = value / total
        grad = None if grad is None else grad / total
    return value, grad


def _result_shape(input: Any, target: Any, code: int) -> tuple[int, ...]:
    return tuple(_torch.broadcast_shapes(input.shape, target.shape)) if code == 0 else ()


def _result_dtype(input: Any, target: Any, weight: Any) -> Any:
    dtype = _torch.promote_types(input.dtype, target.dtype)
    return dtype if weight is None else _torch.promote_types(dtype, weight.dtype)


def _backward(ctx: Any, grad_loss: Any, *_: Any) -> tuple[Any, Any, Any, None]:
    """Gradients of the loss: the fused pass's, scaled by grad_loss, where that is all that
    is asked; PyTorch's expressions otherwise (they are differentiable again). In an eager
    call through the wrapper, which holds the fused gradient alone, it is scaled in place,
    once: a second backward through the same graph takes PyTorch's expressions."""
    input, target, weight = ctx.saved_tensors
    wants_input, wants_target, wants_weight = ctx.needs_input_grad[:3]
    fused, ctx.fused = ctx.fused, None
    if grad_loss is None:  # the loss took no part in what is differentiated
        return None, None, None, None
    if fused is not None and not _torch.is_grad_enabled() and not wants_target and not wants_weight:
        return (fused.mul_(grad_loss) if ctx.owns_fused else fused * grad_loss), None, None, None
    difference = input - target
    factor = 2 * difference * grad_loss if weight is None else 2 * weight * difference * grad_loss
    total = None
    if ctx.reduction == _MEAN:
        total = difference.numel() if weight is None else weight.sum()
        factor = factor / total
    grad_input = factor.sum_to_size(input.shape) if wants_input else None
    grad_target = (-factor).sum_to_size(target.shape) if wants_target else None
    grad_weight = None
    if wants_weight:
        squares = difference * difference
        if total is not None:  # d/dw of sum(w * squares) / sum(w), w over its own shape
            mean = (weight * squares).sum() / total
            grad_weight = (grad_loss * squares / total).sum_to_size(weight.shape) - grad_loss * mean / total
        else:
            grad_weight = (grad_loss * squares).sum_to_size(weight.shape)
    return grad_input, grad_target, grad_weight, None


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    input, target, weight, code = inputs
    ctx.reduction = code
    ctx.owns_fused = False  # the operators' callers may hold their second output
    # The fused gradient, the operator's second output, which carries no gradient of its own.
    ctx.fused = output[1] if isinstance(output, tuple) else None
    if ctx.fused is not None:
        ctx.mark_non_differentiable(ctx.fused)
    ctx.set_materialize_grads(False)  # no zeros for that second output's gradient
    ctx.save_for_backward(input, target, weight)


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

    return SimpleNamespace(
        mse_loss=torch.ops.fastmse.mse_loss,
        mse_loss_and_grad=torch.ops.fastmse.mse_loss_and_grad,
        Loss=function(with_gradient=False),
        Fused=function(with_gradient=True),
    )


try:
    _torch: Any = importlib.import_module("torch")
except ImportError:  # NumPy arrays only
    _torch = None
_OPS: Any = None if _torch is None else _operators(_torch)

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
