"""Argument checking: a call's arguments -> a :class:`Call` (arrays in the dtype the
kernels compute in, the broadcast shape, the reduced axes).

Everything a user can get wrong is checked here, before any kernel runs and before
anything is written to ``out``. Next hop: :mod:`fastmse._compute` runs the resolved call.
"""

from __future__ import annotations

import contextlib
import math
import operator
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from . import _gpu
from ._plan import Operands
from ._types import REDUCTIONS, Axis

_FLOAT64 = np.dtype(np.float64)
_FLOAT16, _FLOAT32 = np.dtype(np.float16), np.dtype(np.float32)
_ALL_AXES = [tuple(range(n)) for n in range(33)]
_HOST = contextlib.nullcontext()


def _as_array(value: Any, name: str) -> np.ndarray:
    if type(value) is np.ndarray:
        array = value
    elif isinstance(value, np.ndarray) and type(value).__array_ufunc__ is not np.ndarray.__array_ufunc__:
        # A subclass whose arithmetic means something else (units, masks): its data alone
        # would be a different computation. Plain containers (np.memmap) are read.
        msg = f"{name} is a {type(value).__module__}.{type(value).__name__}, which fastmse cannot read as plain numbers"
        raise TypeError(msg)
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            msg = f"{name} could not be converted to an array: {error}"
            raise TypeError(msg) from error
    _require_real(array, name)
    return array


def is_bfloat16(dtype: np.dtype) -> bool:
    """Whether `dtype` is ml_dtypes' bfloat16 (checked without importing ml_dtypes: an
    array of it can only exist once ml_dtypes is imported)."""
    if dtype.kind != "V" or dtype.itemsize != 2:
        return False
    ml_dtypes = sys.modules.get("ml_dtypes")
    return ml_dtypes is not None and dtype == ml_dtypes.bfloat16


def loss_dtype(dtype: object) -> np.dtype:
    """The `dtype` argument of mse and mse_and_grad as a NumPy dtype: float16, bfloat16
    (the name needs ml_dtypes installed), float32 or float64; TypeError otherwise."""
    allowed = "float16, bfloat16, float32 or float64"
    if isinstance(dtype, str) and dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as error:
            msg = "dtype='bfloat16' needs the ml_dtypes package (pip install 'fastmse[bfloat16]')"
            raise TypeError(msg) from error
        dtype = ml_dtypes.bfloat16
    try:
        resolved: np.dtype = np.dtype(dtype)  # type: ignore[call-overload]
    except (TypeError, ValueError) as error:
        msg = f"dtype must be {allowed}, not {dtype!r}"
        raise TypeError(msg) from error
    if resolved.kind == "f":
        resolved = resolved.newbyteorder("=")  # the loss is a new array: in native order
    if resolved not in (_FLOAT16, _FLOAT32, _FLOAT64) and not is_bfloat16(resolved):
        msg = f"dtype must be {allowed}, not {resolved}"
        raise TypeError(msg)
    return resolved


def _require_real(array: Any, name: str) -> None:
    """TypeError unless `array` holds bool, integers or floats."""
    if array.dtype.kind not in "biuf" and not is_bfloat16(array.dtype):
        msg = f"{name} has dtype {array.dtype}; fastmse takes real numbers (bool, integer, float)"
        raise TypeError(msg)


def is_dask(*values: Any) -> bool:
    """Whether any of `values` is a Dask array (checked without importing Dask)."""
    return any(type(v).__module__.startswith("dask.") and hasattr(v, "__dask_graph__") for v in values)


class DaskInputError(TypeError):
    """A Dask array reached a function that computes in memory. Raised by :func:`resolve`
    (off the NumPy fast path, so NumPy calls pay nothing for the check); ``mse``,
    ``mse_grad`` and ``mse_and_grad`` catch it and build the lazy Dask result instead."""


class MaskedInputError(TypeError):
    """A NumPy masked array reached :func:`resolve`, which would read its masked positions
    as data. ``mse``, ``mse_grad`` and ``mse_and_grad`` catch it and compute with the mask
    (fastmse._masked)."""


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
    if is_bfloat16(dtype):
        return dtype
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        msg = (
            f"predictions and targets give dtype {dtype}, which fastmse does not compute in; "
            "use float16, bfloat16, float32 or float64"
        )
        raise TypeError(msg)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def _compute_array(array: Any, dtype: np.dtype) -> Any:
    """`array` in the native `dtype`, with strides the kernels can count in elements, and
    aligned to its element size on a GPU (a copy only where one of these does not hold).
    The CPU backends read host arrays where they are, aligned or not: arrays unpickled on
    Dask workers often are not."""
    if array.dtype != dtype:
        return array.astype(dtype)
    odd_strides = not array.flags.c_contiguous and any(s % dtype.itemsize for s in array.strides)
    if odd_strides or (not isinstance(array, np.ndarray) and not aligned(array)):
        return array.copy(order="C")
    return array


def aligned(array: Any) -> bool:
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


def is_dense(flags: Any) -> bool:
    """C-contiguous and aligned (NumPy flags): the layout of a one-dimension flat plan."""
    return bool(flags.c_contiguous and flags.aligned)


def dense(array: Any) -> bool:
    """:func:`is_dense` for a host or GPU array."""
    if isinstance(array, np.ndarray):
        return is_dense(array.flags)
    return bool(array.flags.c_contiguous) and aligned(array)


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
    stream: Any = None  # the producer's CuPy stream, where known: the kernels queue there
    loss_dtype: np.dtype | None = None  # the loss's dtype where the caller gave one (dtype=)

    @property
    def result_dtype(self) -> np.dtype:
        """The dtype of the loss: the caller's, or the inputs' result dtype."""
        return self.dtype if self.loss_dtype is None else self.loss_dtype

    @property
    def xp(self) -> ModuleType:
        """The array module of the call's arrays: NumPy, or CuPy for GPU arrays."""
        return np if self.device is None else _gpu.cupy()

    def on_device(self) -> contextlib.AbstractContextManager[Any]:
        """Makes the call's GPU and its producer's stream current (allocations and kernels
        go there); for host arrays it does nothing."""
        return _HOST if self.device is None else _gpu.placed(self.device, self.stream)

    def operands(self, out: Any = None, loss: Any = None, scale: Any = None) -> Operands:
        """The call's inputs with the given outputs, as a pass takes them."""
        return Operands(self.predictions, self.targets, self.weights, out, loss, scale)

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
    dtype: object = None,
) -> Call:
    """Check every argument and bring the arrays to the dtype the kernels compute in.

    `signed_weights` lets negative weights through, for the compatibility modules whose
    originals accept them (scikit-learn, PyTorch). `dtype`: the loss's, where the caller
    chose one (see :func:`loss_dtype`)."""
    call = _resolve_call(predictions, targets, weights, axis, reduction, signed_weights)
    if dtype is not None:
        call.loss_dtype = loss_dtype(dtype)
        if call.device is not None:
            refuse_on_gpu(call.loss_dtype)
    return call


def refuse_on_gpu(dtype: np.dtype) -> None:
    """TypeError for a loss dtype that GPU arrays cannot hold (CuPy has no bfloat16)."""
    if is_bfloat16(dtype):
        msg = "dtype=bfloat16 is not available for GPU arrays (CuPy has no bfloat16)"
        raise TypeError(msg)


def _resolve_call(
    predictions: object,
    targets: object,
    weights: object,
    axis: Axis,
    reduction: str,
    signed_weights: bool,
) -> Call:
    """resolve() without `dtype`."""
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
        and is_dense(predictions.flags)
        and is_dense(targets.flags)
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
        (gp, gt, gw), device, stream = _gpu.device_arrays(operands)
        with _gpu.placed(device, stream):
            call = _resolve_arrays(gp, gt, gw, predictions, targets, axis, reduction, signed_weights, device)
        call.stream = stream
        return call
    if not host:
        named = (("predictions", predictions), ("targets", targets), ("weights", weights))
        masked = [name for name, value in named if isinstance(value, np.ma.MaskedArray)]
        if masked:
            msg = f"{', '.join(masked)}: masked arrays are taken by fastmse.mse, mse_grad and mse_and_grad"
            raise MaskedInputError(msg)
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
    flat = not kept_shape and w is None and p.shape == t.shape and dense(p) and dense(t)
    broadcast = (1,) * (len(shape) - p.ndim) + p.shape != shape
    return Call(p, t, w, dtype, shape, axes, reduction, kept_shape, count, flat, broadcast, device)
