"""The compiled module's small_call: the common call (NumPy arrays of one float dtype and
shape, C-contiguous, no weights, summed over everything or over a leading or trailing run
of axes) taken whole in C++. It must give bitwise what the general path gives, take
exactly the calls it is meant for, and hand everything else, errors included, back."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pytest
from checks import assert_same
from fastmse import _backends, get_num_threads, mse, mse_and_grad, mse_grad, set_num_threads
from hypothesis import given, settings
from hypothesis import strategies as st

core = pytest.importorskip("fastmse._core", reason="small_call is the compiled module's")
pytestmark = pytest.mark.usefixtures("compiled")

MSE, MSE_GRAD, MSE_AND_GRAD = range(3)
FLOATS = (np.float16, np.float32, np.float64)


@pytest.fixture
def compiled():
    with _backends.use("cpp"):
        yield


class Raised(NamedTuple):
    kind: type
    message: str


def _general(function, *args, **kwargs):
    """`function` on the general path (Python's resolve, plan and finish)."""
    previous, _backends.small_call = _backends.small_call, None
    try:
        return function(*args, **kwargs)
    finally:
        _backends.small_call = previous


def _direct(function, *args, **kwargs):
    return function(*args, **kwargs)


def _warned(path, function, *args, **kwargs):
    """(path(function, ...) or the error it raised, the warnings it gave): both paths must
    give the same."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = path(function, *args, **kwargs)
        except (TypeError, ValueError) as error:
            result = Raised(type(error), str(error))
    return result, [str(w.message) for w in caught]


def _same(first, second) -> None:
    if isinstance(first, Raised) or isinstance(second, Raised):
        assert first == second
    elif isinstance(first, tuple):
        assert isinstance(second, tuple)
        for a, b in zip(first, second, strict=True):
            assert_same(a, b)
    else:
        assert_same(first, second)


@st.composite
def common_calls(draw):
    """Calls near and inside the common case: C-contiguous or not, axes that are runs or
    not, extents of 0 and 1, every reduction and keepdims, out fresh, aliased or absent."""
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=1, max_size=4)))
    dtype = draw(st.sampled_from(FLOATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(draw(st.sampled_from((dtype, dtype, np.float64))))
    if draw(st.booleans()) and len(shape) > 1:
        p, t = p.T, t.T  # Fortran order: the general path
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    kwargs = {"reduction": reduction}
    if reduction != "none" and draw(st.booleans()):
        ndim = p.ndim
        kind = draw(st.sampled_from(["leading", "trailing", "any", "int"]))
        if kind == "int":
            kwargs["axis"] = draw(st.integers(-ndim, ndim - 1))
        else:
            n = draw(st.integers(0, ndim))
            axes = {"leading": tuple(range(n)), "trailing": tuple(range(ndim - n, ndim))}.get(kind)
            if axes is None:
                axes = tuple(draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim)))
            kwargs["axis"] = tuple(a - ndim if draw(st.booleans()) else a for a in axes)
    out = draw(st.sampled_from(["none", "fresh", "predictions", "targets"]))
    return p, t, kwargs, out, draw(st.booleans())


def _out(kind: str, p: np.ndarray, t: np.ndarray):
    return {"none": None, "fresh": np.full_like(p, 7), "predictions": p, "targets": t}[kind]


@settings(max_examples=400)  # each example is a few small calls
@given(case=common_calls())
def test_results_are_bitwise_those_of_the_general_path(case):
    p, t, kwargs, out_kind, keepdims = case
    expected, got = (
        _warned(_general, mse, p, t, keepdims=keepdims, **kwargs),
        _warned(_direct, mse, p, t, keepdims=keepdims, **kwargs),
    )
    assert expected[1] == got[1]
    _same(expected[0], got[0])
    aliased = out_kind in ("predictions", "targets")
    if aliased and (t.dtype != p.dtype or kwargs["reduction"] == "none"):
        return  # out of the other dtype, or an elementwise mse_and_grad over its own input
    for function, extra in ((mse_grad, {}), (mse_and_grad, {"keepdims": keepdims})):
        results = []
        for path in (_general, _direct):
            a, b = p.copy(), t.copy()
            out = _out(out_kind, a, b)
            result, caught = _warned(path, function, a, b, out=out, **extra, **kwargs)
            if out is not None and not isinstance(result, Raised):  # the gradient is written into `out` itself
                assert (result[1] if isinstance(result, tuple) else result) is out
            results.append((result, caught))
        assert results[0][1] == results[1][1]
        _same(results[0][0], results[1][0])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((1000,), None), ((256, 10), None), ((256, 10), -1), ((256, 10), 1), ((256, 10), 0), ((4, 5, 6), (1, 2))],
)
def test_the_common_calls_take_the_small_path(dtype, shape, axis):
    # Each of these must be taken whole in C++ (NotImplemented would send it back).
    rng = np.random.default_rng(1)
    p, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    out = np.empty_like(p)
    for reduction in ("mean", "sum"):
        for job, result_out in ((MSE, None), (MSE_GRAD, out), (MSE_GRAD, None), (MSE_AND_GRAD, out)):
            assert core.small_call(job, p, t, axis, reduction, False, result_out) is not NotImplemented
    assert core.small_call(MSE, p, t, None, "none", False, None) is not NotImplemented


def test_other_calls_are_handed_back():
    p = np.ones((6, 4), np.float32)
    handed_back = [
        (p, p.astype(np.float64), None, "mean", False, None),  # two dtypes
        (p.T, p.T, None, "mean", False, None),  # not C-contiguous
        (p[::2], p[::2], None, "mean", False, None),
        (p, p[:1], None, "mean", False, None),  # broadcast
        (p, p, (0, 2), "mean", False, None),  # an axis out of range: AxisError from the general path
        (p, p, (0, 0), "mean", False, None),
        (p, p, True, "mean", False, None),
        (p, p, 1.0, "mean", False, None),
        (p, p, None, "max", False, None),
        (p, p, -1, "none", False, None),
        (p, p, None, "mean", 1, None),  # keepdims must be a bool
        (p.astype(np.int64), p.astype(np.int64), None, "mean", False, None),
        (p.astype(">f4"), p.astype(">f4"), None, "mean", False, None),
        (np.ma.masked_array(p), p, None, "mean", False, None),
        (np.ones((0, 4), np.float32), np.ones((0, 4), np.float32), None, "mean", False, None),  # the mean warns
        (np.float32(1.0), np.float32(1.0), None, "mean", False, None),
        (np.ones(()), np.ones(()), None, "mean", False, None),
        ([1.0], [1.0], None, "mean", False, None),
    ]
    for args in handed_back:
        assert core.small_call(MSE, *args) is NotImplemented, args
    overlapping = np.ones(10, np.float32)
    for out in (overlapping[1:9], np.ones((6, 4), np.float64), np.ones((4, 6), np.float32), np.ones((6, 4)).T):
        a, b = (overlapping[:8], overlapping[2:]) if out.base is overlapping else (p, p)
        assert core.small_call(MSE_GRAD, a, b, None, "mean", False, out) is NotImplemented
    read_only = np.ones((6, 4), np.float32)
    read_only.flags.writeable = False
    assert core.small_call(MSE_GRAD, p, p, None, "mean", False, read_only) is NotImplemented
    # One position per output: the general path's squared errors.
    assert core.small_call(MSE, p, p, (), "mean", False, None) is NotImplemented
    assert core.small_call(MSE_AND_GRAD, p, p, None, "none", False, None) is NotImplemented


def test_errors_come_from_the_general_path():
    p = np.ones((6, 4), np.float32)
    with pytest.raises(np.exceptions.AxisError):
        mse(p, p, axis=2)
    with pytest.raises(ValueError, match="reduction must be"):
        mse_grad(p, p, reduction="max")
    read_only = np.zeros_like(p)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        mse_grad(p, p, out=read_only)
    with pytest.raises(TypeError, match="small_call"):
        core.small_call(MSE, p, p)
    with pytest.raises(ValueError, match="job is 0"):
        core.small_call(3, p, p, None, "mean", False, None)


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(3)
    p, t = rng.standard_normal((3, 70_000)).astype(np.float32), rng.standard_normal((3, 70_000)).astype(np.float32)
    results, previous = [], get_num_threads()
    try:
        for threads in (1, 2, 3):
            set_num_threads(threads)
            results.append((mse(p, t), mse(p, t, axis=-1), mse_and_grad(p, t, axis=0)))
    finally:
        set_num_threads(previous)
    for other in results[1:]:
        for a, b in zip(results[0][:2], other[:2], strict=True):
            assert_same(a, b)
        _same(results[0][2], other[2])
