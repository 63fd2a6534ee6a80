"""Dask arrays in, lazy Dask results out: fastmse's kernels per chunk, then Dask's tree
reduction of the float64 partial sums (the same sums :class:`MSEAccumulator` adds).

Imported only when a Dask array is passed, so Dask stays an optional extra.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ._api import (
    Axis,
    Call,
    finish_mean,
    gradient_with_denominator,
    partial_sums,
    resolve,
)
from ._api import mse as in_memory_mse

if TYPE_CHECKING:  # dask.array's functions are not annotated, and Dask is optional
    da: Any
else:
    import dask.array as da

_FLOAT64 = np.dtype(np.float64)


def _prepare(predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str) -> tuple[list[Any], Call]:
    """Every check of the in-memory call, made on zero-stride stand-ins of the real shapes
    (no data is read), then the inputs broadcast to one shape with aligned chunks."""
    arrays = [da.asarray(predictions), da.asarray(targets)] + ([] if weights is None else [da.asarray(weights)])
    stand_ins = [np.broadcast_to(np.zeros((), a.dtype), a.shape) for a in arrays]
    call = resolve(stand_ins[0], stand_ins[1], stand_ins[2] if weights is not None else None, axis, reduction)
    return da.broadcast_arrays(*arrays), call


def _chunk_sums(p: np.ndarray, t: np.ndarray, *rest: np.ndarray, axes: tuple[int, ...], weights: bool) -> np.ndarray:
    part = partial_sums(p, t, rest[0] if weights else None, axes)
    keep = tuple(1 if d in axes else n for d, n in enumerate(part.shape))
    if weights:  # the weight sums ride along, stacked on a new leading axis
        return np.stack([part.sums.reshape(keep), part.weight_sums.reshape(keep)])
    return part.sums.reshape(keep)


def _sums(arrays: list[Any], axes: tuple[int, ...]) -> tuple[Any, Any]:
    """Lazy float64 sums of w * e and of w, shaped with the reduced axes kept as 1."""
    weighted = len(arrays) == 3
    chunks = tuple((1,) * len(c) if d in axes else c for d, c in enumerate(arrays[0].chunks))
    if weighted:
        chunks = ((2,), *chunks)
    partials = da.map_blocks(
        _chunk_sums,
        *arrays,
        axes=axes,
        weights=weighted,
        chunks=chunks,
        dtype=_FLOAT64,
        new_axis=[0] if weighted else None,
        meta=np.empty((0,) * len(chunks), _FLOAT64),
    )
    if weighted:
        summed = partials.sum(axis=tuple(d + 1 for d in axes), keepdims=True)
        return summed[0], summed[1]
    count = float(math.prod(arrays[0].shape[d] for d in axes))
    return partials.sum(axis=axes, keepdims=True), count


def _finish_block(sums: np.ndarray, weight_sums: Any, result_dtype: np.dtype, reduction: str) -> np.ndarray:
    return np.asarray(finish_mean(sums, weight_sums, result_dtype, reduction))


def mse(predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str, keepdims: bool) -> Any:
    arrays, call = _prepare(predictions, targets, weights, axis, reduction)
    dtype, axes = call.dtype, call.axes
    meta = np.empty((0,) * len(call.shape), dtype)
    if reduction == "none":
        return da.map_blocks(_elementwise, *arrays, dtype=dtype, meta=meta)
    sums, weight_sums = _sums(arrays, axes)
    loss = da.map_blocks(
        _finish_block, sums, weight_sums, result_dtype=dtype, reduction=reduction, dtype=dtype, meta=meta
    )
    return loss if keepdims else loss.squeeze(axis=axes)


def _elementwise(p: np.ndarray, t: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    return np.asarray(in_memory_mse(p, t, weights=w, reduction="none"))


def _chunk_gradient(
    p: np.ndarray,
    t: np.ndarray,
    *rest: Any,
    axes: tuple[int, ...],
    reduction: str,
    weights: bool,
    exact: bool,
    denominator: Any = None,
) -> np.ndarray:
    w = rest[0] if weights else None
    if len(rest) > int(weights):  # the weight sums of the whole, one block per chunk row
        denominator = rest[-1]
    if exact:  # partial gradients that Dask sums later: kept in float64, rounded once at the end
        p, t = p.astype(_FLOAT64), t.astype(_FLOAT64)
        w = None if w is None else w.astype(_FLOAT64)
    axis = None if reduction == "none" else axes
    gradient: np.ndarray = gradient_with_denominator(p, t, w, axis, reduction, denominator)  # NumPy chunks in
    return gradient


def mse_grad(predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str) -> Any:
    arrays, call = _prepare(predictions, targets, weights, axis, reduction)
    shape, axes, dtype, spread = call.shape, call.axes, call.dtype, call.predictions_broadcast
    extra: list[Any] = []
    if reduction == "mean":
        if weights is None:
            denominator: Any = float(math.prod(shape[d] for d in axes))
        else:
            denominator = arrays[2].sum(axis=axes, keepdims=True, dtype=_FLOAT64)
            extra = [denominator]
    gradient = da.map_blocks(
        _chunk_gradient,
        *arrays,
        *extra,
        axes=axes,
        reduction=reduction,
        weights=weights is not None,
        exact=spread,
        dtype=_FLOAT64 if spread else dtype,
        meta=np.empty((0,) * len(shape), _FLOAT64 if spread else dtype),
        denominator=None if extra or reduction != "mean" else denominator,
    )
    if not spread:
        return gradient
    # predictions was broadcast: the gradient is summed over the axes it was spread along
    along = call.spread_axes()[1]
    return gradient.sum(axis=along, keepdims=True).reshape(call.predictions.shape).astype(dtype)


def mse_and_grad(
    predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str, keepdims: bool
) -> tuple[Any, Any]:
    # Lazy results: computed together (dask.compute(loss, grad)) the inputs are read per
    # chunk by both tasks; a fused chunk task returning both is left for later.
    return (
        mse(predictions, targets, weights, axis, reduction, keepdims),
        mse_grad(predictions, targets, weights, axis, reduction),
    )
