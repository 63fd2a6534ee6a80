"""The oracle every backend is tested against: the formulas of docs/semantics.rst
(Reductions) in float64 NumPy, written for clarity, plus exactly rounded sums with
math.fsum."""

from __future__ import annotations

import math

import numpy as np


def result_dtype(predictions: np.ndarray, targets: np.ndarray) -> np.dtype:
    dtype = np.result_type(predictions, targets)
    return np.dtype(np.float64) if dtype.kind in "biu" else dtype.newbyteorder("=")


def _parts(predictions, targets, weights):
    p = np.asarray(predictions, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    shape = np.broadcast_shapes(p.shape, t.shape, *([np.shape(weights)] if weights is not None else []))
    w = np.ones(shape) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), shape)
    return np.broadcast_to(p, shape), np.broadcast_to(t, shape), w


def _cancelling(weights, shape, axis) -> bool:
    """Whether `weights` cancel from a mean over `axis` (docs/semantics.rst, Weights): each
    is one for all positions it is summed over, and all are positive and finite. The mean
    is then the unweighted one, which tiny weights cannot underflow."""
    if weights is None:
        return False
    w = np.asarray(weights, np.float64)
    own = (1,) * (len(shape) - w.ndim) + w.shape
    axes = range(len(shape)) if axis is None or not shape else np.atleast_1d(axis) % len(shape)
    return all(own[a] == 1 for a in axes) and bool(np.all(np.isfinite(w)) and np.all(w > 0))


def loss(predictions, targets, weights=None, axis=None, reduction="mean", keepdims=False):
    """float64 loss (not rounded to the result dtype)."""
    p, t, w = _parts(predictions, targets, weights)
    if reduction == "mean" and _cancelling(weights, p.shape, axis):
        w = np.ones(p.shape)
    d = p - t
    e = (w * d) * d  # as docs/semantics.rst (Weights) has it: a zero weight drops even a d**2 that overflows
    if reduction == "none":
        return e
    total = np.sum(e, axis=axis, keepdims=keepdims)
    if reduction == "sum":
        return total
    with np.errstate(divide="ignore", invalid="ignore"):
        return total / np.sum(w, axis=axis, keepdims=keepdims)


def grad(predictions, targets, weights=None, axis=None, reduction="mean", absolute=False, overflowed=False):
    """float64 gradient of sum(loss) with respect to predictions, summed over the axes
    along which predictions is broadcast (with `absolute`, the sum of the terms'
    magnitudes instead: the scale of the rounding error such a sum may carry; with
    `overflowed`, where that sum overflows from finite operands and factor, and the
    order of the sum then decides between inf, -inf, NaN and a finite value)."""
    p, t, w = _parts(predictions, targets, weights)
    if reduction == "mean" and _cancelling(weights, p.shape, axis):
        w = np.ones(p.shape)
    factor = 2.0
    if reduction == "mean":
        with np.errstate(divide="ignore"):
            factor = 2.0 / np.sum(w, axis=axis, keepdims=True)
    full = factor * w * (p - t)
    if absolute or overflowed:
        full = np.abs(full)
    shape = np.shape(predictions)
    lead = full.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + d for d, n in enumerate(shape) if n == 1 and full.shape[lead + d] != 1)
    total = np.sum(full, axis=axes, keepdims=True).reshape(shape)
    if not overflowed:
        return total
    finite = np.isfinite(p) & np.isfinite(t) & np.isfinite(w) & np.isfinite(factor)
    # Along the axes predictions is broadcast along, fastmse sums w * (p - t) and scales
    # the sum after where the factor is the same along them (_compute._broadcast_gradient,
    # docs/semantics.rst): that sum may overflow where the scaled terms' does not.
    unscaled = np.sum(np.abs(w * (p - t)), axis=axes, keepdims=True).reshape(shape) if axes else np.zeros(shape)
    return (np.isinf(total) | np.isinf(unscaled)) & np.all(finite, axis=axes, keepdims=True).reshape(shape)


def exact_mean_squared_error(predictions, targets) -> float:
    """mean((p - t)^2) of flat float32/float64 data, correctly rounded to float64 (for
    inputs whose differences square exactly in float64, as float32 data of like
    magnitude do) -- the 'exact value' of the 1-ulp promise."""
    d = np.asarray(predictions, np.float64).ravel() - np.asarray(targets, np.float64).ravel()
    return math.fsum((d * d).tolist()) / d.size


def ulps(value, exact, dtype) -> float:
    """Distance of `value` from `exact` in units of `dtype`'s last place at `exact`."""
    spacing = float(np.spacing(np.abs(np.asarray(exact, dtype=dtype))))
    return abs(float(value) - float(exact)) / spacing
