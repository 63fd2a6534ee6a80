"""The public functions: arguments -> resolved call -> plan -> backend kernels.

Everything a user can get wrong is checked here, before any kernel runs and before
anything is written to ``out``.
"""

from __future__ import annotations

import contextlib
import math
import operator
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, Protocol, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _backends, _gpu
from ._plan import contiguous_plan, make_plan

Reduction = Literal["mean", "sum", "none"]
Axis = int | tuple[int, ...] | None
Scalar = np.floating[Any]  # float16, float32 or float64, as the result dtype
FloatArray = NDArray[np.floating[Any]]


class DaskArray(Protocol):
    """A Dask array, to type checkers: results from one are lazy Dask arrays."""

    def __dask_graph__(self) -> object: ...


class CudaArray(Protocol):
    """An array in CUDA memory, to type checkers: CuPy arrays, Numba device arrays, PyTorch
    tensors (CPU ones declare it too). Results from GPU arrays are CuPy arrays."""

    @property
    def __cuda_array_interface__(self) -> object: ...


# The public functions' overloads tell GPU and Dask arrays from host ones: one among the
# operands gives a result typed Any (a CuPy or a lazy Dask array). Those overloads come
# first, as such arrays are ArrayLike too (they have __array__), and no NumPy array
# matches them: a catch-all `object` overload would, and mypy answers Any where an
# argument containing Any (NDArray[Any]) matches overloads that return different types.
GpuOrDask = DaskArray | CudaArray

REDUCTIONS = ("mean", "sum", "none")
_FLOAT64 = np.dtype(np.float64)
_ALL_AXES = [tuple(range(n)) for n in range(33)]
_FLOAT16, _FLOAT32 = np.dtype(np.float16), np.dtype(np.float32)


def _as_array(value: Any, name: str) -> np.ndarray:
    if type(value) is np.ndarray:
        array = value
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            msg = f"{name} could not be converted to an array: {error}"
            raise TypeError(msg) from error
    _require_real(array, name)
    return array


def _require_real(array: Any, name: str) -> None:
    """TypeError unless `array` holds bool, integers or floats."""
    if array.dtype.kind not in "biuf":
        msg = f"{name} has dtype {array.dtype}; fastmse takes real numbers (bool, integer, float)"
        raise TypeError(msg)


def is_dask(*values: Any) -> bool:
    """Whether any of `values` is a Dask array (checked without importing Dask)."""
    return any(type(v).__module__.startswith("dask.") and hasattr(v, "__dask_graph__") for v in values)


class DaskInputError(TypeError):
    """A Dask array reached a function that computes in memory. Raised by :func:`resolve`
    (off the NumPy fast path, so NumPy calls pay nothing for the check); ``mse``,
    ``mse_grad`` and ``mse_and_grad`` catch it and build the lazy Dask result instead."""


def _weak(value: Any, array: Any) -> Any:
    """What np.result_type should see: a Python int or float as itself (a "weak" scalar
    that takes the other argument's dtype, NEP 50), anything else as its array (a GPU
    array as its dtype)."""
    if type(value) in (int, float):
        return value
    return array if isinstance(array, np.ndarray) else array.dtype


def _result_dtype(predictions: np.ndarray, targets: np.ndarray, p_given: Any, t_given: Any) -> np.dtype:
    dtype = predictions.dtype
    if dtype != targets.dtype:
        dtype = np.result_type(_weak(p_given, predictions), _weak(t_given, targets))
    if dtype.kind in "biu":
        return _FLOAT64
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        msg = (
            f"predictions and targets give dtype {dtype}, which fastmse does not compute in; "
            "use float16, float32 or float64"
        )
        raise TypeError(msg)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def _compute_array(array: Any, dtype: np.dtype) -> Any:
    """`array` in the native `dtype`, aligned, with strides the kernels can count in
    elements (a copy only where one of these does not hold)."""
    if array.dtype != dtype:
        return array.astype(dtype)
    if not _aligned(array) or (not array.flags.c_contiguous and any(s % dtype.itemsize for s in array.strides)):
        # A copy, not ascontiguousarray: that returns a contiguous array as it is, aligned
        # or not (arrays unpickled on Dask workers often are not).
        return array.copy(order="C")
    return array


def _aligned(array: Any) -> bool:
    """Whether `array`'s first element sits at a multiple of its item size."""
    if isinstance(array, np.ndarray):
        return bool(array.flags.aligned)
    return _gpu.address(array) % array.itemsize == 0 and all(s % array.itemsize == 0 for s in array.strides)


def kept_as_one(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with the reduced `axes` kept as 1: the shape of a result with keepdims."""
    return tuple(1 if d in axes else n for d, n in enumerate(shape))


def as_integer(value: Any, message: str) -> int:
    """`value` as an int (anything with __index__ but bool), else TypeError(message)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(message)
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(message) from None


def normalize_axes(axis: Axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return _ALL_AXES[ndim] if ndim < len(_ALL_AXES) else tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    axes = []
    for item in items:
        index = as_integer(item, f"axis must be an int, a tuple of ints or None, not {axis!r}")
        if not -ndim <= index < ndim:
            raise np.exceptions.AxisError(index, ndim, "axis")
        axes.append(index % ndim)
    if len(set(axes)) != len(axes):
        msg = f"axis contains a repeated axis: {axis!r}"
        raise ValueError(msg)
    return tuple(sorted(axes))


def _broadcast_shape(p: np.ndarray, t: np.ndarray, w: np.ndarray | None) -> tuple[int, ...]:
    """NumPy's broadcasting rule, for any number of dimensions."""
    if p.shape == t.shape and (w is None or w.shape == p.shape):
        return p.shape
    shapes = [p.shape, t.shape] + ([w.shape] if w is not None else [])
    ndim = max(len(s) for s in shapes)
    result = [1] * ndim
    for shape in shapes:
        for d, n in enumerate(shape, ndim - len(shape)):
            if n != 1 and result[d] not in (1, n):
                names = "predictions, targets and weights" if w is not None else "predictions and targets"
                listed = ", ".join(str(s) for s in shapes)
                msg = f"{names} do not broadcast together: shapes {listed}"
                raise ValueError(msg)
            if n != 1:
                result[d] = n
    return tuple(result)


def _is_dense(flags: Any) -> bool:
    """C-contiguous and aligned (NumPy flags): the layout of a one-dimension flat plan."""
    return bool(flags.c_contiguous and flags.aligned)


def _dense(array: Any) -> bool:
    """:func:`_is_dense` for a host or GPU array."""
    if isinstance(array, np.ndarray):
        return _is_dense(array.flags)
    return bool(array.flags.c_contiguous) and _aligned(array)


@dataclass(slots=True)
class Call:
    """One call's resolved arguments."""

    predictions: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None
    dtype: np.dtype
    shape: tuple[int, ...]
    axes: tuple[int, ...]
    reduction: str
    kept_shape: tuple[int, ...]
    count: int  # positions summed into each result
    flat: bool  # all summed, one shape, C-contiguous, no weights: one dense dimension
    predictions_broadcast: bool  # targets or weights give predictions' values to several positions
    device: Any = None  # the CuPy Device holding the arrays; None for NumPy ones

    @property
    def xp(self) -> ModuleType:
        """The array module of the call's arrays: NumPy, or CuPy for GPU arrays."""
        return np if self.device is None else _gpu.cupy()

    def on_device(self) -> contextlib.AbstractContextManager[Any]:
        """Makes the call's GPU current (allocations and kernels go there); for host arrays
        it does nothing."""
        return _HOST if self.device is None else self.device

    def spread_axes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """predictions' shape padded to the call's dimensions, and the axes along which
        targets or weights broadcast it (the gradient is summed over those)."""
        padded = (1,) * (len(self.shape) - self.predictions.ndim) + self.predictions.shape
        return padded, tuple(d for d, n in enumerate(padded) if n == 1 and self.shape[d] != 1)


def resolve(
    predictions: object,
    targets: object,
    weights: object,
    axis: Axis,
    reduction: str,
    signed_weights: bool = False,
) -> Call:
    """Check every argument and bring the arrays to the dtype the kernels compute in.

    `signed_weights` lets negative weights through, for the compatibility modules whose
    originals accept them (scikit-learn, PyTorch)."""
    dtype = getattr(predictions, "dtype", None)
    if (
        (dtype is _FLOAT32 or dtype is _FLOAT64 or dtype is _FLOAT16)
        and axis is None
        and weights is None
        and type(predictions) is np.ndarray
        and type(targets) is np.ndarray
        and targets.dtype is dtype
        and predictions.shape == targets.shape
        and type(reduction) is str
        and reduction in REDUCTIONS
        and _is_dense(predictions.flags)
        and _is_dense(targets.flags)
    ):
        # The most common call, where Python overhead is most of the cost for small
        # arrays: the same Call as below, without the general checks it already passes.
        shape = predictions.shape
        axes = _ALL_AXES[len(shape)] if len(shape) < len(_ALL_AXES) else tuple(range(len(shape)))
        return Call(predictions, targets, None, dtype, shape, axes, reduction, (), predictions.size, True, False)
    if is_dask(predictions, targets, weights):  # never computed into memory silently
        named = (("predictions", predictions), ("targets", targets), ("weights", weights))
        which = ", ".join(name for name, value in named if is_dask(value))
        msg = f"{which}: Dask arrays are taken by fastmse.mse, mse_grad and mse_and_grad (lazily), not here"
        raise DaskInputError(msg)
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        msg = f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}"
        raise ValueError(msg)
    host = type(predictions) is np.ndarray and type(targets) is np.ndarray and type(weights) in (np.ndarray, type(None))
    if not host and any(_gpu.is_gpu_array(v) for v in (predictions, targets, weights)):
        operands: list[tuple[str, Any]] = [("predictions", predictions), ("targets", targets), ("weights", weights)]
        (gp, gt, gw), device = _gpu.device_arrays(operands)
        with device:
            return _resolve_arrays(gp, gt, gw, predictions, targets, axis, reduction, signed_weights, device)
    p = _as_array(predictions, "predictions")
    t = _as_array(targets, "targets")
    w = None if weights is None else _as_array(weights, "weights")
    return _resolve_arrays(p, t, w, predictions, targets, axis, reduction, signed_weights, None)


def _resolve_arrays(
    p: Any,
    t: Any,
    w: Any,
    predictions: Any,
    targets: Any,
    axis: Axis,
    reduction: str,
    signed_weights: bool,
    device: Any,
) -> Call:
    """resolve()'s general path, once the operands are arrays: NumPy ones, or CuPy ones on
    `device` (which is then current)."""
    if device is not None:  # host arrays were checked as _as_array made them
        for name, array in (("predictions", p), ("targets", t), ("weights", w)):
            if array is not None:
                _require_real(array, name)
    dtype = _result_dtype(p, t, predictions, targets)
    shape = _broadcast_shape(p, t, w)
    if reduction == "none" and axis is not None:
        msg = f"axis must be None with reduction='none', not {axis!r}"
        raise ValueError(msg)
    axes = normalize_axes(axis, len(shape))
    if w is not None:
        # Weights keep their precision: the kernels read them in the data's dtype or float64.
        w = _compute_array(w, dtype if w.dtype == dtype else _FLOAT64)
        if device is None:
            lowest = np.fmin.reduce(w, axis=None) if w.size else 0  # fmin: a NaN cannot hide a -1
        elif not signed_weights:  # one wait for the device: the error has to be raised now
            negative = w < 0
            lowest = float(w[negative].min()) if bool(negative.any()) else 0
        else:
            lowest = 0
        if lowest < 0 and not signed_weights:
            msg = f"weights must be non-negative; found {lowest}"
            raise ValueError(msg)
    if len(axes) == len(shape):
        kept_shape: tuple[int, ...] = ()
        count = math.prod(shape)
    else:
        kept_shape = tuple(n for d, n in enumerate(shape) if d not in axes)
        count = math.prod(shape[d] for d in axes)
    p, t = _compute_array(p, dtype), _compute_array(t, dtype)
    flat = not kept_shape and w is None and p.shape == t.shape and _dense(p) and _dense(t)
    broadcast = (1,) * (len(shape) - p.ndim) + p.shape != shape
    return Call(p, t, w, dtype, shape, axes, reduction, kept_shape, count, flat, broadcast, device)


_HOST = contextlib.nullcontext()


def _denominators(call: Call, warn: bool = True) -> Any:
    """What "mean" divides by: the count, or the weight sums per kept position; with
    `warn`, a RuntimeWarning where one is zero (the mean is nan there)."""
    if call.weights is None:
        denominator: np.ndarray | float = float(call.count)
        # Warn only where a nan is returned: not for a result with no elements at all.
        empty = call.count == 0 and 0 not in call.kept_shape
    else:
        xp = call.xp
        weights = xp.broadcast_to(call.weights, call.shape)
        denominator = xp.sum(weights, axis=call.axes, dtype=np.float64)
        empty = warn and bool(xp.any(denominator == 0))  # on a GPU, the one wait of a weighted mean
    if empty and warn:
        what = "zero elements" if call.weights is None else "weights that sum to zero"
        warnings.warn(f"mean over {what}: the result is nan", RuntimeWarning, stacklevel=4)
    return denominator


def _scale(denominator: Any, xp: ModuleType = np) -> Any:
    """The gradient factor 2 / denominator, one float64 per kept position (or one for all),
    as an `xp` array (the GPU kernels read it from device memory)."""
    if denominator is None or isinstance(denominator, float):
        value = 2.0 if denominator is None else 2.0 / denominator if denominator else math.inf
        return np.array(value) if xp is np else xp.full((), value)
    with np.errstate(divide="ignore", invalid="ignore"):
        return xp.asarray(xp.divide(2.0, denominator), dtype=np.float64)


def _finish(call: Call, sums: np.ndarray, denominator: np.ndarray | float | None, keepdims: bool) -> Any:
    """The loss from the float64 sums: divided for "mean", shaped, rounded once. A loss
    beyond the dtype's range is inf, silently, as in the kernels."""
    if type(denominator) is float and not keepdims and not call.kept_shape and call.device is None:
        total = float(sums) / denominator if denominator else math.nan
        if abs(total) < 6.0e4 or call.dtype is _FLOAT64:  # cannot overflow: skip errstate's cost
            return call.dtype.type(total)
        with np.errstate(over="ignore"):
            return call.dtype.type(total)
    if sums.ndim == 0 and not keepdims and denominator is None and call.device is None:
        with np.errstate(over="ignore"):
            return call.dtype.type(float(sums))
    xp = call.xp
    if denominator is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            sums = xp.divide(sums, denominator)
    if keepdims:
        sums = xp.reshape(sums, kept_as_one(call.shape, call.axes))
    with np.errstate(over="ignore"):
        result = xp.asarray(sums).astype(call.dtype)
    # NumPy gives a scalar for a full reduction, CuPy a 0-d array (never a host value).
    return result[()] if result.ndim == 0 and call.device is None else result


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
    if (
        not _aligned(out)
        or any(s % out.itemsize for s in out.strides)
        or any(s == 0 and n > 1 for s, n in zip(out.strides, out.shape, strict=True))
    ):
        return xp.empty(out.shape, out.dtype)
    for name in ("predictions", "targets", "weights"):
        source = getattr(call, name)
        if source is None or not xp.may_share_memory(out, source):
            continue
        if name != "weights" and _same_view(out, source) and source.shape == call.predictions.shape:
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
        _backend(call).reduce_difference(make_plan(call.shape, spread, [p, t, w, None, sums, None]))
        with np.errstate(invalid="ignore"):  # inf * 0 where weights sum to zero: nan, as termwise
            gradient = scale * sums.reshape(padded)  # scale has extent 1 along `spread`
    else:
        with np.errstate(all="ignore"):
            d = p.astype(np.float64) - t.astype(np.float64)
            full = xp.broadcast_to(scale * d if w is None else scale * w.astype(np.float64) * d, call.shape)
            gradient = xp.sum(full, axis=spread, keepdims=True)
    with np.errstate(over="ignore"):
        out[...] = gradient.reshape(call.predictions.shape)


def _elementwise_loss(call: Call) -> Any:
    loss = call.xp.empty(call.shape, call.dtype)
    plan = make_plan(call.shape, call.axes, [call.predictions, call.targets, call.weights, loss, None, None])
    _backend(call).squared_error(plan)
    return loss[()] if loss.ndim == 0 and call.device is None else loss


def _sums(call: Call) -> Any:
    """sum(w * (p - t) ** 2) over the call's axes, in float64, shaped `kept_shape`."""
    sums = call.xp.empty(call.kept_shape, _FLOAT64)
    p, t = call.predictions, call.targets
    if call.flat:
        plan = contiguous_plan([p, t, None, None, sums, None])
    else:
        plan = make_plan(call.shape, call.axes, [p, t, call.weights, None, sums, None])
    _backend(call).reduce(plan)
    return sums


def _backend(call: Call) -> _backends.Kernels:
    """The backend that runs `call`: the current CPU one, or the GPU one."""
    return _backends.current() if call.device is None else _backends.gpu()


def _loss(call: Call, keepdims: bool) -> Any:
    if call.flat and call.reduction == "mean" and not keepdims and call.count and call.device is None:
        # The common small call, inlined: here Python overhead is most of the cost.
        sums = np.empty((), _FLOAT64)
        _backends.current().reduce(contiguous_plan([call.predictions, call.targets, None, None, sums, None]))
        return _finish(call, sums, float(call.count), keepdims)
    with call.on_device():
        if call.reduction == "none":
            return _elementwise_loss(call)
        denominator = _denominators(call) if call.reduction == "mean" else None
        return _finish(call, _sums(call), denominator, keepdims)


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
            weight_sums = call.xp.asarray(_denominators(call, warn=False), dtype=_FLOAT64)
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


def _gradient_into(call: Call, target: np.ndarray, scale: np.ndarray, sums: np.ndarray | None) -> None:
    """Writes the gradient into `target`, and the loss sums into `sums` in the same pass."""
    if call.predictions_broadcast:
        if sums is not None:  # first: the gradient may overwrite an input (out=predictions)
            plan = make_plan(call.shape, call.axes, [call.predictions, call.targets, call.weights, None, sums, None])
            _backend(call).reduce(plan)
        _broadcast_gradient(call, scale, target)
        return
    arrays = [call.predictions, call.targets, call.weights, target, sums, scale]
    if call.flat and _dense(target) and scale.ndim == 0:
        plan = contiguous_plan(arrays)
    else:
        plan = make_plan(call.shape, call.axes, arrays)
    backend = _backend(call)
    (backend.grad if sums is None else backend.reduce_and_grad)(plan)


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


def _gradient(call: Call, out: Any, keepdims: bool, with_loss: bool) -> tuple[Any, Any]:
    with call.on_device():
        return _gradient_here(call, out, keepdims, with_loss)


def _gradient_here(call: Call, out: Any, keepdims: bool, with_loss: bool) -> tuple[Any, Any]:
    if out is None:
        out = view = target = _empty_like(call)
    else:
        view = _check_out(out, call)  # `out` itself, or a CuPy view of a GPU array of another kind
        target = _writable_target(view, call)
    loss = None
    if call.reduction == "none":
        if with_loss:  # first: the gradient may overwrite an input (out=predictions)
            loss = _elementwise_loss(call)
        _gradient_into(call, target, _scale(None, call.xp), None)
    else:
        # Without the loss, a zero denominator gives nan only where weights sum to zero.
        warn = with_loss or (call.weights is not None and call.predictions.size > 0)
        denominator = _denominators(call, warn) if call.reduction == "mean" else None
        sums = call.xp.empty(call.kept_shape, _FLOAT64) if with_loss else None
        _gradient_into(call, target, _scale(denominator, call.xp), sums)
        if sums is not None:
            loss = _finish(call, sums, denominator, keepdims)
    if target is not view:
        view[...] = target
    return loss, out


def _refuse_lazy_out(out: Any) -> None:
    if out is not None:
        msg = "out cannot be used with Dask inputs: the result is lazy; store it with dask.array.store"
        raise TypeError(msg)


# GPU or Dask arrays (predictions, targets or weights): a CuPy or a lazy Dask result.
@overload
def mse(
    predictions: GpuOrDask,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
) -> Any: ...
@overload
def mse(
    predictions: object,
    targets: GpuOrDask,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
) -> Any: ...
@overload
def mse(
    predictions: object,
    targets: object,
    *,
    weights: GpuOrDask,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
) -> Any: ...
# NumPy (host) inputs reduced over every axis: a NumPy scalar.
@overload
def mse(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: None = None,
    reduction: Literal["mean", "sum"] = "mean",
    keepdims: Literal[False] = False,
) -> Scalar: ...
# Otherwise an array; a scalar where no axis is left (axis=0 of 1-D arrays, 0-d arrays).
@overload
def mse(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
) -> FloatArray | Scalar: ...
def mse(
    predictions: object,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
) -> Any:
    """Mean squared error, ``mean((predictions - targets) ** 2)``, summed in float64.

    Parameters
    ----------
    predictions, targets : array_like
        Real-valued arrays that broadcast together (NumPy's rules) to a shape ``S``.
    weights : array_like, optional
        Non-negative weights broadcasting to ``S``. With ``reduction="mean"`` the
        result is ``sum(w * e) / sum(w)`` over the reduced axes.
    axis : None, int or tuple of ints, optional
        Axes of ``S`` to reduce over; None (default) reduces over all of them.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` (default), ``"sum"`` of the weighted squared errors, or ``"none"``
        for the elementwise ``w * (p - t) ** 2`` of shape ``S`` (``axis`` must be None).
    keepdims : bool, optional
        Keep the reduced axes with length one, as NumPy does.

    Returns
    -------
    numpy scalar or ndarray
        In dtype ``np.result_type(predictions, targets)``, with bool and integers
        giving float64. A NumPy scalar when everything is reduced (like ``np.mean``).

    Raises
    ------
    ValueError
        Shapes that do not broadcast, a bad `reduction`, `axis` with ``"none"``,
        negative weights, a repeated axis.
    numpy.exceptions.AxisError
        An axis out of range.
    TypeError
        Complex, object, string or datetime inputs; a non-integer `axis`.

    Warns
    -----
    RuntimeWarning
        A mean over zero elements, or over weights that sum to zero (the result is nan).

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse import mse
    >>> mse(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    np.float64(1.3333333333333333)
    >>> mse(np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32), axis=-1)
    array([1., 1.], dtype=float32)
    """
    try:
        call = resolve(predictions, targets, weights, axis, reduction)
    except DaskInputError:
        from . import _dask

        return _dask.mse(predictions, targets, weights, axis, reduction, keepdims)
    return _loss(call, keepdims)


# GPU or Dask arrays: a CuPy array (`out` itself where given) or a lazy Dask array.
@overload
def mse_grad(
    predictions: GpuOrDask,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: object = None,
) -> Any: ...
@overload
def mse_grad(
    predictions: object,
    targets: GpuOrDask,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: object = None,
) -> Any: ...
@overload
def mse_grad(
    predictions: object,
    targets: object,
    *,
    weights: GpuOrDask,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: object = None,
) -> Any: ...
# NumPy (host) inputs: a NumPy array (`out` itself where given).
@overload
def mse_grad(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: NDArray[Any] | None = None,
) -> FloatArray: ...
def mse_grad(
    predictions: object,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: object = None,
) -> Any:
    """Gradient of ``sum(mse(...))`` with respect to `predictions`.

    ``2 * w * (p - t) / sum(w)`` over the reduced axes for ``"mean"`` (so
    ``2 * (p - t) / k`` for a mean over the last axis of an ``(N, k)`` batch), and
    ``2 * w * (p - t)`` for ``"sum"`` and ``"none"``. Computed in float64 and rounded
    once to the result dtype.

    Parameters
    ----------
    predictions, targets, weights, axis, reduction
        As in :func:`mse`.
    out : ndarray, optional
        Where to write the gradient: the shape of `predictions` and the result dtype,
        writable. May be `predictions` or `targets` itself. Nothing is written to it
        if any argument is wrong.

    Returns
    -------
    ndarray
        The gradient, shaped like `predictions`. Where targets or weights broadcast
        predictions to a larger shape, it is summed over those axes, as autograd does.

    Raises
    ------
    ValueError, TypeError
        As :func:`mse`, and for an `out` of the wrong shape, dtype or that is read-only.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse import mse_grad
    >>> mse_grad(np.array([[1.0, 3.0]]), np.array([[0.0, 0.0]]), axis=-1)
    array([[1., 3.]])
    """
    try:
        call = resolve(predictions, targets, weights, axis, reduction)
    except DaskInputError:
        from . import _dask

        _refuse_lazy_out(out)
        return _dask.mse_grad(predictions, targets, weights, axis, reduction)
    return _gradient(call, out, False, with_loss=False)[1]


# The loss as mse returns it, the gradient as mse_grad does.
@overload
def mse_and_grad(
    predictions: GpuOrDask,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    out: object = None,
) -> tuple[Any, Any]: ...
@overload
def mse_and_grad(
    predictions: object,
    targets: GpuOrDask,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    out: object = None,
) -> tuple[Any, Any]: ...
@overload
def mse_and_grad(
    predictions: object,
    targets: object,
    *,
    weights: GpuOrDask,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    out: object = None,
) -> tuple[Any, Any]: ...
@overload
def mse_and_grad(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: None = None,
    reduction: Literal["mean", "sum"] = "mean",
    keepdims: Literal[False] = False,
    out: NDArray[Any] | None = None,
) -> tuple[Scalar, FloatArray]: ...
@overload
def mse_and_grad(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    out: NDArray[Any] | None = None,
) -> tuple[FloatArray | Scalar, FloatArray]: ...
def mse_and_grad(
    predictions: object,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    out: object = None,
) -> tuple[Any, Any]:
    """Loss and gradient in one pass over memory.

    Returns exactly (bitwise) what ``mse(...)`` and ``mse_grad(...)`` return for the
    same arguments; see those functions for the parameters.

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`mse`.
    grad : ndarray
        As :func:`mse_grad`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse import mse_and_grad
    >>> loss, grad = mse_and_grad(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    >>> float(loss), grad
    (5.0, array([1., 3.]))
    """
    try:
        call = resolve(predictions, targets, weights, axis, reduction)
    except DaskInputError:
        from . import _dask

        _refuse_lazy_out(out)
        return _dask.mse_and_grad(predictions, targets, weights, axis, reduction, keepdims)
    loss, grad = _gradient(call, out, keepdims, with_loss=True)
    return loss, grad
