"""The compute engine: a resolved :class:`~fastmse._resolve.Call` -> a plan
(:mod:`fastmse._plan`) -> the backend's passes (:mod:`fastmse._backends`), which finish
the loss (each sum divided and rounded once into the result) where they can; otherwise
the loss finished here from the float64 sums (a scalar result, a dtype of the caller's).

Also the pieces that batches, chunks and workers combine: :func:`partial_sums`,
:func:`finish_mean` and :func:`gradient_with_denominator`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _backends, _gpu
from ._plan import Operands, Plan, contiguous_plan, make_plan, scalar_loss
from ._resolve import Call, aligned, dense, is_dense, kept_as_one, resolve
from ._types import Axis

_FLOAT64 = np.dtype(np.float64)


def _denominators(call: Call, warn: bool = True) -> Any:
    """What "mean" divides by: the count, or the weight sums per kept position; with
    `warn`, a RuntimeWarning where one is zero (the mean is nan there)."""
    if call.weights is None:
        denominator: np.ndarray | float = float(call.count)
        # Warn only where a nan is returned: not for a result with no elements at all.
        empty = call.count == 0 and 0 not in call.kept_shape
    else:
        xp = call.xp
        denominator = _weight_sums(call.weights, call, xp)
        empty = warn and not bool(xp.all(denominator))  # on a GPU, a wait
    if empty and warn:
        what = "zero elements" if call.weights is None else "weights that sum to zero"
        warnings.warn(f"mean over {what}: the result is nan", RuntimeWarning, stacklevel=4)
    return denominator


def _without_cancelling_weights(call: Call) -> tuple[Call, Any]:
    """`call` without its weights where they cancel, and the outputs whose mean is nan
    (or None where none is). A mean whose weights are constant along the summed axes
    (weights per sample with a loss per sample, per column with axis=0) is
    w * sum(e) / (w * count) at each output: the plain mean where w is positive and
    finite, with no weight sums and no weights read, and one rounding fewer; nan where w
    is 0 (0 / 0, with a RuntimeWarning), inf or nan. Such weights are left out and those
    outputs marked: a boolean array shaped as the weights broadcast to the call's
    dimensions. Weights with a negative among them stay (the weighted path checks or,
    for signed weights, sums them), as do those of predictions that broadcast (their
    gradient sums outputs, marked or not)."""
    w = call.weights
    if w is None or call.reduction != "mean" or not call.count or not w.size:
        return call, None
    padded = (1,) * (len(call.shape) - w.ndim) + w.shape
    if any(padded[d] != 1 for d in call.axes):
        return call, None
    xp = call.xp
    lowest, highest = float(xp.min(w)), float(xp.max(w))  # nan where one is
    if lowest > 0 and highest < math.inf:
        return dataclasses.replace(call, weights=None), None
    with np.errstate(invalid="ignore"):
        if lowest < 0 or call.predictions_broadcast or (math.isnan(lowest) and bool(xp.any(w < 0))):
            return call, None
        # Few passes over the weights: all of them are >= 0 or nan.
        zero = lowest == 0 or (math.isnan(lowest) and bool(xp.any(w == 0)))
        marked = ~(w > 0) if math.isnan(lowest) else w <= 0
        if highest == math.inf or math.isnan(highest):
            marked |= w == math.inf
    if zero and 0 not in call.kept_shape:  # as _denominators: only where a nan is returned
        warnings.warn("mean over weights that sum to zero: the result is nan", RuntimeWarning, stacklevel=4)
    return dataclasses.replace(call, weights=None), xp.reshape(marked, padded)


def _with_nan_outputs(call: Call, values: Any, nan_outputs: Any, keepdims: bool = True) -> Any:
    """`values` (a loss, or with `keepdims` a loss or gradient over the call's dimensions,
    but for leading ones of 1 that predictions lack) with nan at the outputs that
    :func:`_without_cancelling_weights` marked: in place for an array, each marked
    output's positions indexed (a mask broadcast over the positions took 3-10x longer
    than the loss)."""
    if nan_outputs is None:
        return values
    if isinstance(values, np.generic):  # a loss over everything: one output
        return values.dtype.type(math.nan) if bool(nan_outputs.any()) else values
    varying = [d for d, n in enumerate(nan_outputs.shape) if n != 1]
    if not varying:  # one weight for every output
        if bool(nan_outputs.any()):
            values[...] = math.nan
        return values
    marked = iter(call.xp.nonzero(call.xp.reshape(nan_outputs, tuple(nan_outputs.shape[d] for d in varying))))
    # A gradient lacks the leading dimensions that only the targets or weights have: their
    # extent is 1 (else the predictions broadcast, and the weights stayed).
    dims = (
        range(len(call.shape) - values.ndim, len(call.shape))
        if keepdims
        else (d for d in range(len(call.shape)) if d not in call.axes)
    )
    values[tuple(next(marked) if d in varying else slice(None) for d in dims)] = math.nan
    return values


def _weight_sums(weights: Any, call: Call, xp: ModuleType) -> Any:
    """sum(w) over the reduced axes, in float64, shaped `kept_shape`; on the host, one
    float where it is the same for every kept position (weights per column with a loss
    per sample), as the count is without weights: an array per output would cost its
    pages on every call. Summed only where the weights vary: along a reduced axis that
    broadcasts them (weights per sample with a loss per sample) each weight counts that
    axis's extent times, so the sum is multiplied by it instead of reading the copies."""
    padded = (1,) * (len(call.shape) - weights.ndim) + weights.shape
    varying = tuple(d for d in call.axes if padded[d] != 1)
    copies = math.prod(call.shape[d] for d in call.axes if padded[d] == 1)
    weights = xp.reshape(weights, padded)
    if not varying and copies:  # one pass, where the sum would copy and then multiply
        sums = xp.multiply(weights, float(copies), dtype=np.float64)
    else:
        # The kernels' sum of w - 0 (NumPy's over a few positions per output, weights per
        # position with a loss per sample, is a buffered loop at a tenth of their speed).
        sums = xp.empty(tuple(n for d, n in enumerate(padded) if d not in varying), np.float64)
        operands = Operands(weights, xp.zeros((), weights.dtype), loss=sums)
        _backend(call).reduce_difference(make_plan(padded, varying, operands))
        sums = xp.reshape(sums, tuple(1 if d in varying else n for d, n in enumerate(padded)))
        if copies != 1:
            with np.errstate(over="ignore"):  # a weight sum beyond float64 is inf, silently
                sums = sums * float(copies) if copies else xp.zeros_like(sums)
    if xp is np and sums.size == 1 and 0 not in call.kept_shape:
        return float(sums.reshape(()))
    # As the weights broadcast over the kept axes, without the reduced ones; a new array
    # of that shape already is one.
    kept_one = kept_as_one(call.shape, call.axes)
    return xp.reshape(sums if sums.shape == kept_one else xp.broadcast_to(sums, kept_one).copy(), call.kept_shape)


def _scale(denominator: Any, xp: ModuleType = np, in_place: bool = False) -> Any:
    """The gradient factor 2 / denominator, one float64 per kept position (or one for all),
    as an `xp` array (the GPU kernels read it from device memory); `in_place`: written over
    the denominators, where they are not needed again."""
    if denominator is None or isinstance(denominator, float):
        value = 2.0 if denominator is None else 2.0 / denominator if denominator else math.inf
        return np.array(value) if xp is np else xp.full((), value)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return xp.asarray(xp.divide(2.0, denominator, out=denominator if in_place else None), dtype=np.float64)


def _finish(call: Call, sums: np.ndarray, denominator: np.ndarray | float | None, keepdims: bool) -> Any:
    """The loss from the float64 sums: divided for "mean", shaped, rounded once. A loss
    beyond the dtype's range is inf, silently, as in the kernels."""
    dtype = call.result_dtype
    if type(denominator) is float and not keepdims and not call.kept_shape and call.device is None:
        return scalar_loss(dtype, float(sums) / denominator if denominator else math.nan)
    if sums.ndim == 0 and not keepdims and denominator is None and call.device is None:
        return scalar_loss(dtype, float(sums))
    xp = call.xp
    if call.device is None and sums.ndim:
        # One pass, no float64 temporary: the quotient is computed in float64 and rounded
        # once into the result, as astype would.
        result = np.empty(kept_as_one(call.shape, call.axes) if keepdims else sums.shape, dtype)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if denominator is None:
                np.copyto(result, sums.reshape(result.shape), casting="unsafe")
            else:
                np.divide(sums.reshape(result.shape), _shaped(denominator, result.shape), out=result, casting="unsafe")
        return result
    if denominator is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            sums = xp.divide(sums, denominator)
    if keepdims:
        sums = xp.reshape(sums, kept_as_one(call.shape, call.axes))
    with np.errstate(over="ignore"):
        result = xp.asarray(sums).astype(dtype)
    # NumPy gives a scalar for a full reduction, CuPy a 0-d array (never a host value).
    return result[()] if result.ndim == 0 and call.device is None else result


def _shaped(denominator: Any, shape: tuple[int, ...]) -> Any:
    """A float denominator as it is, an array of them shaped like the result."""
    return denominator if isinstance(denominator, float) else np.reshape(denominator, shape)


def _check_out(out: Any, call: Call) -> Any:
    shape = call.predictions.shape
    if call.device is not None:
        if not _gpu.is_gpu_array(out):
            msg = f"out must be a GPU array like the inputs, not {type(out).__name__}"
            raise TypeError(msg)
        out = _gpu.as_cupy(out, "out")
        if out.device.id != call.device.id:
            msg = f"out is on GPU {out.device.id}; the inputs are on GPU {call.device.id}"
            raise ValueError(msg)
    elif not isinstance(out, np.ndarray):
        msg = f"out must be a NumPy array, not {type(out).__name__}"
        raise TypeError(msg)
    if out.shape != shape:
        msg = f"out has shape {out.shape}; the gradient has the shape of predictions, {shape}"
        raise ValueError(msg)
    if out.dtype != call.dtype:
        msg = f"out has dtype {out.dtype}; the gradient's dtype is {call.dtype}"
        raise TypeError(msg)
    if call.device is None and not out.flags.writeable:
        msg = "out is read-only"
        raise ValueError(msg)
    return out


def _address(array: Any) -> int:
    if isinstance(array, np.ndarray):
        return int(array.__array_interface__["data"][0])
    return _gpu.address(array)


def _same_view(a: Any, b: Any) -> bool:
    return _address(a) == _address(b) and a.shape == b.shape and a.strides == b.strides


def _writable_target(out: Any, call: Call) -> Any:
    """Where the kernel may write the gradient: `out`, or a scratch array if `out` overlaps
    an input in any way other than being exactly `predictions` or `targets`, overlaps
    itself (a zero stride) or is not aligned."""
    xp = call.xp
    # A C-contiguous aligned NumPy array (the common `out`) has neither odd nor zero
    # strides: only the overlap is left to check.
    dense_host = type(out) is np.ndarray and is_dense(out.flags)
    if not dense_host and (
        not aligned(out)
        or any(s % out.itemsize for s in out.strides)
        or any(s == 0 and n > 1 for s, n in zip(out.strides, out.shape, strict=True))
    ):
        return xp.empty(out.shape, out.dtype)
    for source, exact_allowed in ((call.predictions, True), (call.targets, True), (call.weights, False)):
        if source is None or not xp.may_share_memory(out, source):
            continue
        if exact_allowed and _same_view(out, source) and source.shape == call.predictions.shape:
            continue
        return xp.empty(out.shape, out.dtype)
    return out


def _broadcast_gradient(call: Call, scale: Any, out: Any) -> None:
    """The gradient where predictions is broadcast: summed over the axes it is broadcast
    along, as autograd does. Where the factor 2 / denominator is constant along those
    axes (always, but for a weighted mean over an axis along which predictions is also
    broadcast), the kernels sum w * (p - t) there and the factor is applied after;
    otherwise plain NumPy in float64 (O(n) temporaries)."""
    padded, spread = call.spread_axes()
    if scale.ndim:  # one factor per loss position: as an array broadcasting to the shape
        scale = scale.reshape(kept_as_one(call.shape, call.axes))
    p, t, w, xp = call.predictions, call.targets, call.weights, call.xp
    if 0 in call.shape:  # a sum of no terms, whatever the (infinite) factor
        out[...] = 0
        return
    if scale.ndim == 0 or all(scale.shape[d] == 1 for d in spread):
        sums = xp.empty(tuple(n for d, n in enumerate(call.shape) if d not in spread), _FLOAT64)
        _backend(call).reduce_difference(make_plan(call.shape, spread, call.operands(loss=sums)))
        with np.errstate(invalid="ignore"):  # inf * 0 where weights sum to zero: nan, as termwise
            gradient = scale * sums.reshape(padded)  # scale has extent 1 along `spread`
    else:
        with np.errstate(all="ignore"):
            d = p.astype(np.float64) - t.astype(np.float64)
            full = xp.broadcast_to(scale * d if w is None else scale * w.astype(np.float64) * d, call.shape)
            gradient = xp.sum(full, axis=spread, keepdims=True)
    with np.errstate(over="ignore"):
        out[...] = gradient.reshape(call.predictions.shape)


def _elementwise_plan(call: Call, operands: Operands) -> Plan:
    """The plan of a pass that sums nothing (grad, squared_error), whose order is free:
    where one gradient factor serves every position, all dimensions are walked as summed
    ones, ordered and merged by memory distance, so that any contiguous layout is one flat
    walk (axis=0 of a C-ordered batch, a loss per position)."""
    scale = operands.scale
    everywhere = scale is None or scale.ndim == 0
    return make_plan(call.shape, tuple(range(len(call.shape))) if everywhere else call.axes, operands)


def _elementwise_loss(call: Call) -> Any:
    if call.result_dtype != call.dtype:
        return _elementwise_loss_as(call, call.result_dtype)
    # Laid out like predictions where they are not broadcast, as NumPy's ufuncs do.
    errors = _empty_like(call) if call.predictions.shape == call.shape else call.xp.empty(call.shape, call.dtype)
    _backend(call).squared_error(_elementwise_plan(call, call.operands(out=errors)))
    return errors[()] if errors.ndim == 0 and call.device is None else errors


def _elementwise_loss_as(call: Call, dtype: np.dtype) -> Any:
    """``w * (p - t) ** 2`` (the kernels' ``(w * d) * d``) in float64, rounded once to
    `dtype`, another than the kernels write: with O(n) float64 temporaries."""
    xp, p, t, w = call.xp, call.predictions, call.targets, call.weights
    with np.errstate(all="ignore"):
        d = xp.subtract(p, t, dtype=_FLOAT64)
        errors = (d if w is None else xp.multiply(w, d, dtype=_FLOAT64)) * d
        result = xp.broadcast_to(errors, call.shape).astype(dtype)
    return result[()] if result.ndim == 0 and call.device is None else result


def _loss_plan(call: Call, sums: Any, loss_divisor: Any = 1.0) -> Plan:
    """The plan over which mse sums the loss of `call` into `sums`: that of the inputs
    alone, whatever `out` a fused pass writes."""
    if call.flat:
        return contiguous_plan(Operands(call.predictions, call.targets, loss=sums), loss_divisor)
    return make_plan(call.shape, call.axes, call.operands(loss=sums), loss_divisor)


def _sums(call: Call) -> Any:
    """sum(w * (p - t) ** 2) over the call's axes, in float64, shaped `kept_shape`."""
    sums = call.xp.empty(call.kept_shape, _FLOAT64)
    _reduce(_backend(call), _loss_plan(call, sums), fused=False)
    return sums


# The longest rows the kernels sum as short rows (kBlock of cpp/kernels.hpp).
_SHORT_ROW = 2048


def _two_stage(plan: Plan) -> bool:
    """Whether `plan` is summed in two stages (see :func:`_reduce`): a sum over everything
    of short rows that do not merge because an input broadcasts (a zero stride), as
    weights or a target per sample do. Read from the inputs' strides alone, so that an
    `out` of any layout leaves the loss as it is. Not contiguous rows with one row of
    targets for all (a target per column), the weights (if any) contiguous rows too: one
    stage, whose blocks the CPU kernels run across the rows with the target row repeated,
    at the speed of a flat sum."""
    if plan.n_kept or len(plan.shape) < 2 or plan.shape[-1] > _SHORT_ROW or type(plan.operands.loss) is not np.ndarray:
        return False
    rows = (plan.shape[-1], 1)
    p, t, w = plan.strides[:3]
    if len(plan.shape) == 2 and t == (0, 1) and p == rows and (plan.operands.weights is None or w == rows):
        return False
    return any(0 in strides for strides in plan.strides[:3])


def _reduce(backend: _backends.Kernels, plan: Plan, fused: bool) -> None:
    """``reduce`` (``reduce_and_grad`` if `fused`) over `plan`. Where :func:`_two_stage`
    says so, on the CPU: each short row along the innermost dimension, then the row sums
    as a flat sum (:attr:`~fastmse._plan.Plan.rows_first`); in one stage the kernels
    would walk one long output across every row boundary. Backends without that order of
    their own get it in two passes: the rows into a float64 array, then the array."""
    run = backend.reduce_and_grad if fused else backend.reduce
    if not _two_stage(plan):
        run(plan)
        return
    if backend.rows_first:
        run(dataclasses.replace(plan, rows_first=True))
        return
    rows = np.empty(plan.shape[:-1], _FLOAT64)
    row_strides = (*(s // _FLOAT64.itemsize for s in rows.strides), 0)
    strides = [*plan.strides[:4], row_strides, plan.strides[5]]
    run(Plan(plan.shape, len(plan.shape) - 1, plan.operands._replace(loss=rows), strides))
    flat = rows.reshape(-1)
    loss = plan.operands.loss
    # The row sums' pass stores float64 (or their own dtype): a loss in another dtype is
    # finished here as the kernels would, the float64 quotient rounded once.
    total = loss if loss.dtype == _FLOAT64 else np.empty((), _FLOAT64)
    divisor = plan.loss_divisor if total is loss else 1.0
    operands = Operands(flat, np.zeros((), _FLOAT64), loss=total)
    backend.reduce_difference(Plan((flat.size,), 0, operands, ((1,), (0,), (), (), (0,), ()), divisor))
    if total is not loss:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            loss[...] = total / plan.loss_divisor


def _backend(call: Call) -> _backends.Kernels:
    """The backend that runs `call`: the current CPU one, or the GPU one."""
    return _backends.current() if call.device is None else _backends.gpu()


def _loss_per_position(call: Call) -> bool:
    """Whether each output has one position and no weight ((N, 1) with axis=-1): its sum
    is 0 + (p - t)^2 and its mean that divided by 1, the squared error itself (never -0),
    which the kernels write in the data's dtype."""
    return call.count == 1 and call.weights is None and bool(call.kept_shape) and call.result_dtype == call.dtype


def _squared_errors(call: Call, keepdims: bool) -> Any:
    """The loss of a call of :func:`_loss_per_position`: one squared-error pass in the
    result dtype, instead of float64 sums and a division over as many."""
    errors = _elementwise_loss(call)
    return errors.reshape(kept_as_one(call.shape, call.axes) if keepdims else call.kept_shape)


def _loss_divisor(call: Call, denominator: Any) -> Any:
    """What the kernels divide each sum by to finish the loss themselves (see
    :attr:`fastmse._plan.Plan.loss_divisor`): a float, or a weighted mean's denominator
    per output laid out as the loss (C order); None where :func:`_finish` does it from
    float64 sums: a scalar result, or a loss in a dtype the caller chose (the kernels
    store the data's)."""
    if not call.kept_shape or call.result_dtype != call.dtype:
        return None
    if denominator is None:
        return 1.0
    if isinstance(denominator, float):
        return denominator
    # No outputs: nothing is divided (and CuPy gives an empty array no address).
    return call.xp.ascontiguousarray(denominator) if denominator.size else 1.0


def _loss_from(call: Call, denominator: Any, keepdims: bool, run: Callable[[Any, Any], None]) -> Any:
    """The loss as mse returns it, from `run(loss, loss_divisor)`, a reducing pass into
    `loss`: the result array itself, finished by the kernels, where they can divide (see
    :func:`_loss_divisor`); otherwise float64 sums that :func:`_finish` divides and
    rounds."""
    divisor = _loss_divisor(call, denominator)
    if divisor is None:
        sums = call.xp.empty(call.kept_shape, _FLOAT64)
        run(sums, 1.0)
        return _finish(call, sums, denominator, keepdims)
    result = call.xp.empty(call.kept_shape, call.dtype)
    run(result, divisor)
    return result.reshape(kept_as_one(call.shape, call.axes)) if keepdims else result


def loss(call: Call, keepdims: bool) -> Any:
    """The loss of `call`, as :func:`fastmse.mse` returns it."""
    if call.flat and call.reduction == "mean" and not keepdims and call.count and call.device is None:
        # The common small call, inlined: here Python overhead is most of the cost.
        sums = np.empty((), _FLOAT64)
        _backends.current().reduce(contiguous_plan(Operands(call.predictions, call.targets, loss=sums)))
        return _finish(call, sums, float(call.count), keepdims)
    with call.on_device():
        if call.reduction == "none":
            return _elementwise_loss(call)
        call, nan_outputs = _without_cancelling_weights(call)
        if _loss_per_position(call):
            return _with_nan_outputs(call, _squared_errors(call, keepdims), nan_outputs, keepdims)
        denominator = _denominators(call) if call.reduction == "mean" else None
        backend = _backend(call)
        result = _loss_from(
            call,
            denominator,
            keepdims,
            lambda loss, divisor: _reduce(backend, _loss_plan(call, loss, divisor), fused=False),
        )
        return _with_nan_outputs(call, result, nan_outputs, keepdims)


@dataclass(slots=True)
class Partial:
    """The float64 sums behind a loss, before division and rounding: what batches,
    chunks and workers add up to give the one-call result. The sums are NumPy arrays
    for host inputs and CuPy arrays, on the inputs' device, for GPU inputs."""

    dtype: np.dtype  # the result dtype of the call
    shape: tuple[int, ...]  # the broadcast shape S
    axes: tuple[int, ...]  # the reduced axes, normalized
    kept_shape: tuple[int, ...]
    sums: Any  # sum(w * (p - t) ** 2) per kept position, float64
    weight_sums: Any  # sum(w) per kept position (the count without weights), float64


def partial_sums(
    predictions: ArrayLike,
    targets: ArrayLike,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    *,
    signed_weights: bool = False,
) -> Partial:
    """The float64 sums of a ``mse(..., reduction="sum")`` call and of its weights, with
    every check of :func:`mse`; computed where the arrays are, and left there (GPU sums are
    CuPy arrays; as in :func:`mse`, only weights make the host wait for the device)."""
    call = resolve(predictions, targets, weights, axis, "sum", signed_weights)
    with call.on_device():
        if call.weights is None:
            weight_sums = call.xp.full(call.kept_shape, float(call.count))
        else:
            weight_sums = call.xp.broadcast_to(call.xp.asarray(_denominators(call, warn=False)), call.kept_shape)
        return Partial(call.dtype, call.shape, call.axes, call.kept_shape, _sums(call), weight_sums)


def finish_mean(sums: Any, weight_sums: Any, dtype: np.dtype, reduction: str) -> Any:
    """The loss from summed partials: divided for "mean" (nan with a RuntimeWarning where
    the weights sum to zero, as :func:`mse` does), rounded once to `dtype`. NumPy sums
    give a NumPy scalar or array, CuPy sums a CuPy array."""
    xp = _gpu.array_module(sums)
    sums = xp.asarray(sums, dtype=_FLOAT64)
    if reduction == "mean":
        weight_sums = xp.asarray(weight_sums, dtype=_FLOAT64)
        if bool(xp.any(weight_sums == 0)):  # on a GPU, the one wait of a mean
            msg = "mean over zero elements or weights that sum to zero: the result is nan"
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        with np.errstate(divide="ignore", invalid="ignore"):
            sums = sums / weight_sums
    with np.errstate(over="ignore"):
        result = sums.astype(dtype)
    return result[()] if result.ndim == 0 and xp is np else result


def _gradient_into(
    call: Call, target: np.ndarray, scale: np.ndarray, sums: np.ndarray | None, loss_divisor: Any = 1.0
) -> None:
    """Writes the gradient into `target`, and the loss into `sums` in the same pass (each
    sum divided by `loss_divisor` and rounded to the dtype of `sums`)."""
    if call.predictions_broadcast:
        if sums is not None:  # first: the gradient may overwrite an input (out=predictions)
            _reduce(_backend(call), _loss_plan(call, sums, loss_divisor), fused=False)
        _broadcast_gradient(call, scale, target)
        return
    operands = call.operands(out=target, loss=sums, scale=scale)
    backend = _backend(call)
    flat = call.flat and dense(target) and scale.ndim == 0
    if sums is None:
        backend.grad(contiguous_plan(operands) if flat else _elementwise_plan(call, operands))
        return
    plan = contiguous_plan(operands, loss_divisor) if flat else make_plan(call.shape, call.axes, operands, loss_divisor)
    # The loss is summed as mse sums it, from the inputs' plan: `out` may keep apart
    # dimensions that the inputs merge (a 1-D plan merged everything, out included).
    split = plan.n_kept == 0 and len(plan.shape) > 1
    loss_plan = _loss_plan(call, sums, loss_divisor) if split else plan
    if not _two_stage(loss_plan):
        backend.reduce_and_grad(plan)  # one stage: the lane walk's order is the positions'
    elif loss_plan.shape == plan.shape:
        _reduce(backend, plan, fused=True)
    else:  # the loss first: out may be predictions
        _reduce(backend, loss_plan, fused=False)
        backend.grad(plan)


def gradient_with_denominator(
    predictions: ArrayLike,
    targets: ArrayLike,
    weights: ArrayLike | None,
    axis: Axis,
    reduction: str,
    denominator: Any,
    *,
    with_sums: bool = False,
) -> Any:
    """``mse_grad`` of a piece of a larger array: the mean's denominators (a float, or
    float64 per kept position) are given, since they are those of the whole. With
    `with_sums`, ``(gradient, sums)``: also the piece's float64 loss sums per kept
    position, from the same pass over memory."""
    call = resolve(predictions, targets, weights, axis, reduction)
    with call.on_device():
        target = _empty_like(call)
        if reduction != "mean":
            denominator = None
        elif not isinstance(denominator, (int, float)):
            denominator = call.xp.asarray(denominator).reshape(call.kept_shape)
        sums = call.xp.empty(call.kept_shape, _FLOAT64) if with_sums else None
        _gradient_into(call, target, _scale(denominator, call.xp), sums)
        return (target, sums) if with_sums else target


def _empty_like(call: Call) -> Any:
    """An array for the gradient, laid out like predictions (as NumPy's ufuncs do)."""
    if call.device is None:
        return np.empty_like(call.predictions, subok=False)
    return call.xp.empty_like(call.predictions)


def gradient(call: Call, out: Any, keepdims: bool, with_loss: bool) -> tuple[Any, Any]:
    """``(loss, gradient)`` of `call`, the gradient written to `out` (checked here) where
    given; the loss is None unless `with_loss`, then computed in the same pass."""
    with call.on_device():
        return _gradient_here(call, out, keepdims, with_loss)


def _gradient_here(call: Call, out: Any, keepdims: bool, with_loss: bool) -> tuple[Any, Any]:
    if out is None:
        out = view = target = _empty_like(call)
    else:
        view = _check_out(out, call)  # `out` itself, or a CuPy view of a GPU array of another kind
        target = _writable_target(view, call)
    # After `out`'s checks: their errors come first, not a zero weight's warning.
    call, nan_outputs = _without_cancelling_weights(call)
    result = None
    if call.reduction == "none":
        if with_loss:  # first: the gradient may overwrite an input (out=predictions)
            result = _elementwise_loss(call)
        _gradient_into(call, target, _scale(None, call.xp), None)
    else:
        # Without the loss, a zero denominator gives nan only where weights sum to zero.
        warn = with_loss or (call.weights is not None and call.predictions.size > 0)
        denominator = _denominators(call, warn) if call.reduction == "mean" else None
        scale = _scale(denominator, call.xp, in_place=not with_loss)
        if with_loss and not _loss_per_position(call):  # the loss in the gradient's pass
            result = _loss_from(
                call, denominator, keepdims, lambda loss, divisor: _gradient_into(call, target, scale, loss, divisor)
            )
        else:
            if with_loss:  # first: the gradient may overwrite an input
                result = _squared_errors(call, keepdims)
            _gradient_into(call, target, scale, None)
        if with_loss:
            result = _with_nan_outputs(call, result, nan_outputs, keepdims)
        _with_nan_outputs(call, target, nan_outputs)
    if target is not view:
        view[...] = target
    return result, out
