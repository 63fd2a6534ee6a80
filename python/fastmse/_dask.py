"""Dask arrays in, lazy Dask results out: fastmse's kernels per chunk, then Dask's tree
reduction of the float64 partial sums (the same sums :class:`MSEAccumulator` adds).

Imported only when a Dask array is passed, so Dask stays an optional extra.
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Any

import numpy as np

from ._compute import finish_mean, gradient_with_denominator, loss, partial_sums
from ._gpu import current_device_of, is_gpu_array
from ._resolve import Call, kept_as_one, refuse_on_gpu, resolve
from ._types import Axis

if TYPE_CHECKING:  # dask.array's functions are not annotated, and Dask is optional
    da: Any
    meta_from_array: Any
else:
    import dask.array as da
    from dask.array.utils import meta_from_array

_FLOAT64 = np.dtype(np.float64)


def _prepare(
    predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str, dtype: Any = None
) -> tuple[list[Any], Call]:
    """Every check of the in-memory call, made on zero-stride stand-ins of the real shapes
    (no data is read), then the inputs broadcast to one shape with aligned chunks."""
    arrays = [da.asarray(predictions), da.asarray(targets)] + ([] if weights is None else [da.asarray(weights)])
    stand_ins = [np.broadcast_to(np.zeros((), a.dtype), a.shape) for a in arrays]
    call = resolve(
        stand_ins[0], stand_ins[1], stand_ins[2] if weights is not None else None, axis, reduction, dtype=dtype
    )
    if call.loss_dtype is not None and any(is_gpu_array(a._meta) for a in arrays):  # the stand-ins are host arrays
        refuse_on_gpu(call.loss_dtype)
    return da.broadcast_arrays(*arrays), call


def _meta(like: Any, ndim: int, dtype: np.dtype) -> Any:
    """An empty array of the chunks' kind (NumPy, or CuPy for CuPy chunks), for Dask."""
    return meta_from_array(like, ndim=ndim, dtype=dtype)


def _block(result: Any) -> Any:
    """A kernel's result as a chunk: NumPy scalars become 0-d arrays."""
    return np.asarray(result) if isinstance(result, np.generic) else result


def _reduced_chunks(chunks: tuple[tuple[int, ...], ...], axes: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The chunks of per-chunk sums: one element per chunk along the reduced axes."""
    return tuple((1,) * len(c) if d in axes else c for d, c in enumerate(chunks))


def _chunk_sums(p: Any, t: Any, *rest: Any, axes: tuple[int, ...], weights: bool) -> Any:
    part = partial_sums(p, t, rest[0] if weights else None, axes)
    keep = kept_as_one(part.shape, axes)
    if weights:  # the weight sums ride along, stacked on a new leading axis
        with current_device_of(part.sums):  # np.stack gives CuPy's for CuPy sums, on the current GPU
            return np.stack([part.sums.reshape(keep), part.weight_sums.reshape(keep)])
    return part.sums.reshape(keep)


def _sums(arrays: list[Any], axes: tuple[int, ...]) -> tuple[Any, Any]:
    """Lazy float64 sums of w * e and of w, shaped with the reduced axes kept as 1."""
    weighted = len(arrays) == 3
    chunks = _reduced_chunks(arrays[0].chunks, axes)
    if weighted:
        chunks = ((2,), *chunks)
    partials = da.map_blocks(
        _chunk_sums,
        *arrays,
        token="fastmse-sums",
        axes=axes,
        weights=weighted,
        chunks=chunks,
        dtype=_FLOAT64,
        new_axis=[0] if weighted else None,
        meta=_meta(arrays[0], len(chunks), _FLOAT64),
    )
    if weighted:
        summed = partials.sum(axis=tuple(d + 1 for d in axes), keepdims=True)
        return summed[0], summed[1]
    count = float(math.prod(arrays[0].shape[d] for d in axes))
    return partials.sum(axis=axes, keepdims=True), count


def _finish_block(sums: Any, weight_sums: Any, result_dtype: np.dtype, reduction: str) -> Any:
    return _block(finish_mean(sums, weight_sums, result_dtype, reduction))


def _loss(sums: Any, weight_sums: Any, call: Call, keepdims: bool) -> Any:
    """The lazy loss from the lazy sums (shaped with the reduced axes kept as 1)."""
    loss = da.map_blocks(
        _finish_block,
        sums,
        weight_sums,
        token="fastmse-loss",
        result_dtype=call.result_dtype,
        reduction=call.reduction,
        dtype=call.result_dtype,
        meta=_meta(sums, sums.ndim, call.result_dtype),
    )
    return loss if keepdims else loss.squeeze(axis=call.axes)


def mse(
    predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str, keepdims: bool, dtype: Any = None
) -> Any:
    return _mse(*_prepare(predictions, targets, weights, axis, reduction, dtype), keepdims)


def _mse(arrays: list[Any], call: Call, keepdims: bool) -> Any:
    if call.reduction == "none":
        dtype = call.result_dtype
        return da.map_blocks(
            _elementwise,
            *arrays,
            dtype=dtype,
            meta=_meta(arrays[0], len(call.shape), dtype),
            result_dtype=call.loss_dtype,
        )
    return _loss(*_sums(arrays, call.axes), call, keepdims)


def _elementwise(p: Any, t: Any, w: Any = None, *, result_dtype: np.dtype | None) -> Any:
    return _block(loss(resolve(p, t, w, None, "none", dtype=result_dtype), keepdims=False))


def _denominator(arrays: list[Any], call: Call) -> tuple[Any, list[Any]]:
    """What the gradient divides by, and the Dask arrays it needs as extra operands:
    nothing for "sum", the count for an unweighted mean, the lazy float64 weight sums of
    the whole (reduced axes kept as 1) for a weighted one."""
    if call.reduction != "mean":
        return None, []
    if len(arrays) == 2:
        return float(math.prod(call.shape[d] for d in call.axes)), []
    weight_sums = arrays[2].sum(axis=call.axes, keepdims=True, dtype=_FLOAT64)
    return weight_sums, [weight_sums]


def _chunk_gradient(
    p: Any,
    t: Any,
    *rest: Any,
    axes: tuple[int, ...],
    reduction: str,
    weights: bool,
    exact: bool = False,
    with_sums: bool = False,
    denominator: Any = None,
) -> Any:
    """The gradient of one chunk; with `with_sums`, ``(gradient, loss sums)`` from one pass."""
    w = rest[0] if weights else None
    if len(rest) > int(weights):  # the weight sums of the whole, one block per chunk row
        denominator = rest[-1]
    if exact:  # partial gradients that Dask sums later: kept in float64, rounded once at the end
        p, t = p.astype(_FLOAT64), t.astype(_FLOAT64)
        w = None if w is None else w.astype(_FLOAT64)
    axis = None if reduction == "none" else axes
    result = gradient_with_denominator(p, t, w, axis, reduction, denominator, with_sums=with_sums)
    if not with_sums:
        return result
    gradient, sums = result
    return gradient, sums.reshape(kept_as_one(gradient.shape, axes))


def _gradient_blocks(arrays: list[Any], call: Call, denominator: Any, extra: list[Any], with_sums: bool) -> Any:
    """The lazy gradient, chunked like the inputs (float64 where predictions is broadcast);
    with `with_sums`, each block is a (gradient, loss sums) pair instead."""
    spread = call.predictions_broadcast
    chunk_dtype = _FLOAT64 if spread else call.dtype
    return da.map_blocks(
        _chunk_gradient,
        *arrays,
        *extra,
        token="fastmse-gradient-and-sums" if with_sums else "fastmse-gradient",
        axes=call.axes,
        reduction=call.reduction,
        weights=len(arrays) == 3,
        exact=spread,
        with_sums=with_sums,
        dtype=chunk_dtype,
        meta=_meta(arrays[0], len(call.shape), chunk_dtype),
        denominator=None if extra else denominator,
    )


def mse_grad(predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str) -> Any:
    return _mse_grad(*_prepare(predictions, targets, weights, axis, reduction))


def _mse_grad(arrays: list[Any], call: Call) -> Any:
    gradient = _gradient_blocks(arrays, call, *_denominator(arrays, call), with_sums=False)
    if not call.predictions_broadcast:
        return gradient
    # predictions was broadcast: the gradient is summed over the axes it was spread along
    along = call.spread_axes()[1]
    return gradient.sum(axis=along, keepdims=True).reshape(call.predictions.shape).astype(call.dtype)


def mse_and_grad(
    predictions: Any, targets: Any, weights: Any, axis: Axis, reduction: str, keepdims: bool, dtype: Any = None
) -> tuple[Any, Any]:
    """Lazy loss and gradient whose chunk tasks are shared: computed together
    (``dask.compute(loss, grad)``), each chunk of the inputs is read once, by one kernel
    pass that writes the gradient and sums the loss. (Computed apart, each runs that
    pass: use :func:`mse` or :func:`mse_grad` for one of them alone.)"""
    arrays, call = _prepare(predictions, targets, weights, axis, reduction, dtype)
    if reduction == "none" or call.predictions_broadcast:
        # An elementwise loss, or a gradient summed over broadcast axes: two graphs.
        return _mse(arrays, call, keepdims), _mse_grad(arrays, call)
    denominator, extra = _denominator(arrays, call)
    # Each block of `both` is a (gradient, sums) pair; only the two arrays below read it.
    both = _gradient_blocks(arrays, call, denominator, extra, with_sums=True)
    gradient = both.map_blocks(operator.itemgetter(0), token="fastmse-gradient", dtype=call.dtype, meta=both._meta)
    partials = both.map_blocks(
        operator.itemgetter(1),
        token="fastmse-sums",
        chunks=_reduced_chunks(both.chunks, call.axes),
        dtype=_FLOAT64,
        meta=_meta(both, both.ndim, _FLOAT64),
    )
    return _loss(partials.sum(axis=call.axes, keepdims=True), denominator, call, keepdims), gradient
