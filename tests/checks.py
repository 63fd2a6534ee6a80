"""Comparisons with the oracle, with the tolerance docs/semantics.rst (Types and precision)
promises per dtype."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pytest
from fastmse import _backends, mse_grad


def assert_matches(actual, expected, dtype, magnitude=None, overflowed=None) -> None:
    """`actual` is `expected` (float64) rounded to `dtype`: within one unit in the last
    place for float16/float32, 1e-13 relative for float64. `magnitude` bounds the terms
    behind each value, for sums that may cancel (absolute slack of 1e-13 of it). Where
    `overflowed` (reference.grad's), any value passes: the reference scales each
    difference before summing, fastmse sums them first, and the order decides."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.dtype == dtype, (actual.dtype, dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    a = actual.astype(np.float64)
    if overflowed is not None:
        checked = ~np.broadcast_to(overflowed, expected.shape)
        a, expected = a[checked], expected[checked]
        if magnitude is not None:
            magnitude = np.broadcast_to(np.asarray(magnitude, np.float64), checked.shape)[checked]
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(a), nan), (actual, expected)
    a, e = a[~nan], expected[~nan]
    slack = (
        0.0 if magnitude is None else 1e-13 * np.broadcast_to(np.asarray(magnitude, np.float64), expected.shape)[~nan]
    )
    if dtype == np.float64:
        limit = 1e-13 * np.abs(e) + slack
    else:
        limit = np.spacing(np.abs(e).astype(dtype)).astype(np.float64) + slack
    infinite = np.isinf(e)
    assert np.array_equal(a[infinite], e[infinite])
    bad = np.abs(a - e) > limit
    assert not np.any(bad), f"{a[bad][:5]} != {e[bad][:5]} (limit {limit[bad][:5]})"


def assert_same(first, second) -> None:
    """Bitwise the same results (NaN equal to NaN), of the same type and dtype."""
    assert type(first) is type(second), (type(first), type(second))
    assert np.asarray(first).dtype == np.asarray(second).dtype
    np.testing.assert_array_equal(first, second, strict=True)


def empty_mean(predictions, targets, kwargs) -> bool:
    """Whether the 'mean over nothing' warning of docs/semantics.rst (Types and precision)
    is due for this call."""
    if kwargs["reduction"] != "mean":
        return False
    shape = np.broadcast_shapes(np.shape(predictions), np.shape(targets))
    weights = kwargs.get("weights")
    w = np.ones(shape) if weights is None else np.broadcast_to(np.asarray(weights), shape)
    return bool(np.any(np.sum(w, axis=kwargs.get("axis")) == 0))


def call(function, predictions, targets, kwargs, host=None):
    """function(predictions, targets, **kwargs), expecting the 'mean over' warning exactly
    where it is due and no other warning. `host`: the (predictions, targets, kwargs) of NumPy
    arrays that GPU arrays copy, to decide that from."""
    p, t, k = (predictions, targets, kwargs) if host is None else host
    nan_expected = empty_mean(p, t, k) and (function is not mse_grad or ("weights" in k and np.size(p) > 0))
    if nan_expected:
        with pytest.warns(RuntimeWarning, match="mean over"):
            return function(predictions, targets, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function(predictions, targets, **kwargs)


# Layouts each walk of the kernels takes, for assert_finishes_loss: (shape, summed axes).
FINISHED_LOSS_LAYOUTS = (
    ((5, 3), (1,)),  # short rows, fewer than a group of four
    ((37, 10), (1,)),  # short rows in groups of four, and a tail
    ((6, 2100), (1,)),  # rows longer than a block
    ((3, 70000), (1,)),  # rows of several tasks (CPU) or tiles (GPU): sums finished after combining
    ((300, 7), (0,)),  # columns: summed across outputs
    ((4, 6, 5), (0, 2)),  # several summed axes
    ((4, 0), (1,)),  # empty sums
)


def _reducing_pass(backend, name, p, t, axes, loss, divisor):
    """Runs pass `name` of `backend` over p and t summed over `axes` into `loss`."""
    from fastmse._plan import Operands, make_plan

    out = np.empty_like(p) if name == "reduce_and_grad" else None
    scale = None if out is None else np.array(2.0)
    getattr(backend, name)(make_plan(p.shape, axes, Operands(p, t, out=out, loss=loss, scale=scale), divisor))
    return loss


def _every_other(kept, dtype, fill):
    """An array of shape `kept` whose last dimension skips every other element."""
    return np.full((*kept[:-1], 2 * kept[-1]), fill, dtype)[..., ::2]


def assert_finishes_loss(backend, dtype) -> None:
    """A backend's reducing passes store each output's float64 sum divided by the plan's
    loss_divisor (one for all, or one per output laid out as the loss, here strided) and
    rounded once to the loss array's dtype (float64 or the data's): bit for bit the sums
    the same backend gives with a divisor of 1, divided in float64 and cast by NumPy."""
    rng = np.random.default_rng(11)
    for shape, axes in FINISHED_LOSS_LAYOUTS:
        p = rng.standard_normal(shape).astype(dtype)
        t = rng.standard_normal(shape).astype(dtype)
        kept = tuple(n for d, n in enumerate(shape) if d not in axes)
        per_output = _every_other(kept, np.float64, 0.0)
        per_output[...] = rng.choice([0.0, 1.0, 3.0, -2.5, 1e-300, np.inf], kept) * rng.uniform(0.5, 2, kept)
        for name in ("reduce", "reduce_and_grad", "reduce_difference"):
            sums = _reducing_pass(backend, name, p, t, axes, np.empty(kept, np.float64), 1.0)
            for divisor in (3.0, 1.0, 0.0, per_output):
                for loss_dtype in (np.dtype(np.float64), np.dtype(dtype)):
                    with np.errstate(all="ignore"):
                        expected = (sums / divisor).astype(loss_dtype)
                    # Per output: the loss strided as the divisors are.
                    loss = (
                        np.full(kept, 7, loss_dtype)
                        if isinstance(divisor, float)
                        else _every_other(kept, loss_dtype, 7)
                    )
                    loss = _reducing_pass(backend, name, p, t, axes, loss, divisor)
                    assert loss.tobytes() == expected.tobytes(), (
                        shape,
                        axes,
                        name,
                        divisor,
                        loss_dtype,
                        loss,
                        expected,
                    )


# The small paths (a backend's small_call) against the general path.
class Raised(NamedTuple):
    kind: type
    message: str


def on_general_path(function, *args, **kwargs):
    """`function` on the general path (Python's resolve, plan and finish)."""
    previous, _backends.small_call = _backends.small_call, None
    try:
        return function(*args, **kwargs)
    finally:
        _backends.small_call = previous


def directly(function, *args, **kwargs):
    return function(*args, **kwargs)


def warned(path, function, *args, **kwargs):
    """(path(function, ...) or the error it raised, the warnings it gave): both paths must
    give the same. Numba's own warnings are left out: they come from compiling or caching
    a kernel (in the first call that needs it, which another test's path may have made)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = path(function, *args, **kwargs)
        except (TypeError, ValueError) as error:
            result = Raised(type(error), str(error))
    return result, [str(w.message) for w in caught if not w.category.__module__.startswith("numba")]


def assert_same_results(first, second) -> None:
    """The same error, or the same results to the bit (the sign of a zero, a nan's payload)."""
    if isinstance(first, Raised) or isinstance(second, Raised):
        assert first == second
        return
    pairs = zip(first, second, strict=True) if isinstance(first, tuple) else [(first, second)]
    assert isinstance(second, tuple) == isinstance(first, tuple)
    for a, b in pairs:
        assert_same(a, b)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
        if isinstance(a, np.ndarray):  # laid out alike (C or Fortran order)
            assert (a.flags.c_contiguous, a.flags.f_contiguous) == (b.flags.c_contiguous, b.flags.f_contiguous)
