"""Hypothesis strategies for fastmse calls: shapes that broadcast, any memory layout."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def broadcast_shapes(draw, full):
    """A shape that broadcasts to `full`: leading dimensions dropped, others set to 1."""
    drop = draw(st.integers(0, len(full)))
    return tuple(1 if draw(st.booleans()) and draw(st.booleans()) else n for n in full[drop:])


@st.composite
def laid_out(draw, shape, dtype, rng):
    """Random values of `shape` in a random layout: C, Fortran, strided, reversed."""
    layout = draw(st.sampled_from(["c", "f", "step", "reversed"]))
    if layout == "step" and shape:
        axis = draw(st.integers(0, len(shape) - 1))
        big = list(shape)
        big[axis] *= 2
        base = rng.standard_normal(big).astype(dtype)
        return base[tuple(slice(None, None, 2) if d == axis else slice(None) for d in range(len(shape)))]
    values = rng.standard_normal(shape).astype(dtype)
    if layout == "f":
        return np.asfortranarray(values)
    if layout == "reversed":
        return values[(slice(None, None, -1),) * len(shape)].copy()[(slice(None, None, -1),) * len(shape)]
    return values


@st.composite
def calls(draw, dtypes=(np.float32, np.float64), max_side=5, allow_empty=True):
    """(predictions, targets, kwargs) for mse / mse_grad / mse_and_grad."""
    low = 0 if allow_empty else 1
    full = tuple(draw(st.lists(st.integers(low, max_side), min_size=0, max_size=4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from(dtypes))
    predictions_shape = draw(broadcast_shapes(full)) if draw(st.booleans()) and draw(st.booleans()) else full
    targets_shape = draw(broadcast_shapes(full))
    predictions = draw(laid_out(predictions_shape, dtype, rng))
    targets = draw(laid_out(targets_shape, draw(st.sampled_from(dtypes)), rng))
    shape = np.broadcast_shapes(predictions_shape, targets_shape)
    kwargs = {}
    if draw(st.booleans()):
        weights_shape = draw(broadcast_shapes(shape))
        kwargs["weights"] = rng.uniform(0.1, 2.0, weights_shape).astype(draw(st.sampled_from(dtypes)))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    kwargs["reduction"] = reduction
    if reduction != "none" and shape and draw(st.booleans()):
        axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True))
        signed = tuple(a - len(shape) if draw(st.booleans()) else a for a in axes)
        kwargs["axis"] = signed[0] if len(signed) == 1 and draw(st.booleans()) else signed
    return predictions, targets, kwargs
