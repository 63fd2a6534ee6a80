"""NumPy masked arrays: ``mse(p, t, ...)`` follows ``np.ma.mean((p - t) ** 2, axis)``.

A position masked in predictions, targets or weights takes no part: it weighs 0 in the
weighted sums the kernels compute (its data is never read into a result). An output
whose positions are all masked is masked (``np.ma.masked`` where everything is reduced);
``reduction="none"`` gives a masked array with the combined mask. The gradient is an
ndarray, zero at masked positions.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import _compute
from ._resolve import Call, normalize_axes, resolve
from ._types import Axis


def _unmasked(predictions: Any, targets: Any, weights: Any) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The operands' data with 0 at masked positions (what is masked is often not a
    number, and 0 times it would still be one), the weights with 0 there too (float64 or
    the weights' float dtype, over the broadcast shape) and the combined mask."""
    values = [v for v in (predictions, targets, weights) if v is not None]
    shape = np.broadcast_shapes(*(np.shape(v) for v in values))
    mask = np.zeros(shape, bool)
    for value in values:
        if isinstance(value, np.ma.MaskedArray):
            mask |= np.broadcast_to(np.ma.getmaskarray(value), shape)
    p: Any = np.ma.getdata(predictions)
    t: Any = np.ma.getdata(targets)
    w: Any = None if weights is None else np.ma.getdata(weights)
    if np.shape(predictions) == shape:  # p - t is 0 wherever anything is masked
        p = np.where(mask, 0, p)
        t = np.where(mask, 0, np.broadcast_to(t, shape))
    else:  # predictions broadcast: each value serves unmasked positions too; fill its own
        p = np.ma.filled(predictions, 0) if isinstance(predictions, np.ma.MaskedArray) else p
        t = np.ma.filled(targets, 0) if isinstance(targets, np.ma.MaskedArray) else t
    dtype = w.dtype if w is not None and w.dtype.kind == "f" else np.dtype(np.float64)
    present = np.logical_not(mask).astype(dtype)
    weighted = present if w is None else np.where(mask, 0, np.broadcast_to(w, shape)).astype(dtype)
    return p, t, weighted, mask


def _masked_call(
    predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str, dtype: Any = None
) -> tuple[Call, np.ndarray]:
    """The call on the unmasked data, and the combined mask. The caller's arguments are
    checked first, as given (errors name them and their values; negative weights are
    refused even where masked)."""
    resolve(
        np.ma.getdata(predictions),
        np.ma.getdata(targets),
        None if weights is None else np.ma.getdata(weights),
        axis,
        reduction,
        dtype=dtype,
    )
    p, t, w, mask = _unmasked(predictions, targets, weights)
    return resolve(p, t, w, axis, reduction, dtype=dtype), mask


def _masked_result(value: Any, mask: np.ndarray, axis: Axis, reduction: str, keepdims: bool) -> Any:
    """The loss with np.ma's mask: the combined one for "none"; otherwise masked where an
    output has no unmasked position (np.ma.masked where everything is reduced)."""
    if reduction == "none":
        return np.ma.masked_array(value, mask=mask)
    empty = np.sum(~mask, axis=normalize_axes(axis, mask.ndim), keepdims=keepdims) == 0
    if np.ndim(value) == 0:
        return np.ma.masked if bool(empty) else value
    return np.ma.masked_array(value, mask=np.asarray(empty))


def mse(
    predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str, keepdims: bool, dtype: Any = None
) -> Any:
    """fastmse.mse on masked operands."""
    call, mask = _masked_call(predictions, targets, weights, axis, reduction, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-masked mean: masked, not nan
        value = _compute.loss(call, keepdims)
    return _masked_result(value, mask, axis, reduction, keepdims)


def mse_grad(predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str, out: Any) -> Any:
    """fastmse.mse_grad on masked operands: zero at masked positions."""
    return mse_and_grad(predictions, targets, weights, axis, reduction, False, out)[1]


def mse_and_grad(
    predictions: Any,
    targets: Any,
    weights: Any,
    axis: Axis,
    reduction: str,
    keepdims: bool,
    out: Any,
    dtype: Any = None,
) -> tuple[Any, Any]:
    """fastmse.mse_and_grad on masked operands."""
    call, mask = _masked_call(predictions, targets, weights, axis, reduction, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value, grad = _compute.gradient(call, out, keepdims, with_loss=True)
    if np.shape(grad) == mask.shape:
        grad[mask] = 0  # all-masked outputs: 0, not 0/0
    else:  # predictions broadcast: a value with no unmasked position left is 0/0 there
        grad[np.isnan(grad)] = 0
    return _masked_result(value, mask, axis, reduction, keepdims), grad
