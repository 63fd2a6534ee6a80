"""The Numba backend's small_call: the commonest calls (NumPy arrays of one float dtype,
all contiguous in C order or all in Fortran order, aligned, on one thread below
PARALLEL_MIN positions and on the workers from it; targets of the predictions' shape,
or per column or per sample of (N, k) predictions in C order; the loss over everything
or (C order) over the first or the last axis, the squared errors, the gradient over
everything or one axis; weights per position or per sample in C order) in one step. It
must give bitwise what the general path gives, and hand every other call back."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from checks import assert_same_results, directly, on_general_path, warned
from fastmse import _backends, mse, mse_and_grad, mse_grad
from hypothesis import given, settings
from hypothesis import strategies as st

_numba = pytest.importorskip("fastmse._numba", reason="Numba is optional")
PARALLEL_MIN, CHUNK, BLOCK = _numba.PARALLEL_MIN, _numba.CHUNK, _numba.BLOCK

MSE, MSE_GRAD, MSE_AND_GRAD = range(3)
FLOATS = (np.float16, np.float32, np.float64)


def kernel_calls(monkeypatch, name):
    """The calls of the Numba kernel `name` that a range of tasks runs (handed, begin,
    end, ...) from now on: for each, the number of workers it lets in and its range."""
    calls = []
    kernel = getattr(_numba, name)

    def spy(*arguments):
        calls.append((arguments[0].size, arguments[1], arguments[2]))
        kernel(*arguments)

    monkeypatch.setattr(_numba, name, spy)
    return calls


@pytest.fixture(autouse=True)
def backend():
    with _backends.use("numba") as numba:
        yield numba


@st.composite
def calls(draw):
    """Calls in and near the commonest case: shapes of 1 to 3 dimensions, some beyond
    PARALLEL_MIN positions, extents of 0; targets of another dtype or broadcast; Fortran
    order, weights; every reduction, axis and keepdims; out fresh, aliased or absent."""
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=1, max_size=3)))
    if draw(st.integers(0, 9)) == 0:
        shape = (PARALLEL_MIN // 4 + draw(st.integers(-1, 1)), 4)
    dtype = draw(st.sampled_from(FLOATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    other = draw(st.sampled_from(["", "", "", "", "float64", "per sample", "per column", "fortran", "weights"]))
    kwargs = {"reduction": draw(st.sampled_from(["mean", "mean", "sum", "none"]))}
    if other == "float64":
        t = t.astype(np.float64)
    elif other == "per sample":
        t = t[..., :1].copy()
    elif other == "per column":
        t = t[:1].copy() if len(shape) < 2 or not shape[0] or draw(st.booleans()) else t[0].copy()
    elif other == "fortran" and len(shape) > 1:
        p, t = np.asfortranarray(p), np.asfortranarray(t)
    elif other == "weights":
        w = rng.uniform(0.5, 2.0, shape).astype(dtype)
        along = draw(st.sampled_from(["position", "sample", "zero rows", "negative"]))
        if along == "sample" and len(shape) == 2:
            w = w[:, :1].copy()
        elif along == "zero rows":  # a weight sum of 0 where the rows are few
            w.reshape(-1)[: w.size // 2] = 0
        elif along == "negative" and w.size:
            w.reshape(-1)[-1] = -1
        kwargs["weights"] = w
    if draw(st.booleans()):
        kwargs["axis"] = draw(st.sampled_from([-1, 0, len(shape) - 1, (0,), tuple(range(len(shape)))]))
    out = draw(st.sampled_from(["none", "fresh", "predictions", "targets"]))
    return p, t, kwargs, out, draw(st.booleans())


@settings(max_examples=200)
@given(case=calls())
def test_results_are_bitwise_those_of_the_general_path(case):
    p, t, kwargs, out_kind, keepdims = case
    expected = warned(on_general_path, mse, p, t, keepdims=keepdims, **kwargs)
    got = warned(directly, mse, p, t, keepdims=keepdims, **kwargs)
    assert expected[1] == got[1]
    assert_same_results(expected[0], got[0])
    if out_kind == "targets" and t.dtype != p.dtype:
        return
    for function, extra in ((mse_grad, {}), (mse_and_grad, {"keepdims": keepdims})):
        results = []
        for path in (on_general_path, directly):
            a, b = p.copy(order="K"), t.copy(order="K")
            out = {"none": None, "fresh": np.full_like(a, 7), "predictions": a, "targets": b}[out_kind]
            result, caught = warned(path, function, a, b, out=out, **extra, **kwargs)
            results.append((result, caught, out))
        assert results[0][1] == results[1][1]
        assert_same_results(results[0][0], results[1][0])
        if results[0][2] is not None:
            assert_same_results(results[0][2], results[1][2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 9, 1000, CHUNK, CHUNK + 1])
def test_flat_squared_errors_and_gradients_are_bitwise_those_of_the_general_path(dtype, size):
    """small_flat writes the squared errors and the gradient of up to CHUNK positions in a
    loop of its own, and beyond that in a run's pass, as the general path does: the same
    bits, nans, infinities, signed zeros, float32 overflow and subnormals among them."""
    rng = np.random.default_rng(size)
    finfo = np.finfo(dtype)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, finfo.max, -finfo.max, finfo.smallest_subnormal])
    p, t = (rng.standard_normal(size) * 10.0 ** rng.integers(-40, 40, size) for _ in range(2))
    for a in (p, t):
        at = rng.integers(0, size, size // 3 + 1)
        a[at] = rng.choice(specials, at.size)
    with np.errstate(over="ignore"):  # float32 infinities from large doubles
        p, t = p.astype(dtype), t.astype(dtype)
    calls = [
        lambda a, b, path: path(mse, a, b, reduction="none"),
        *(lambda a, b, path, r=r: path(mse_grad, a, b, reduction=r) for r in ("mean", "sum")),
        lambda a, b, path: path(mse_grad, a, b, out=a),
        lambda a, b, path: path(mse_grad, a, b, out=b),
    ]
    with np.errstate(all="ignore"):
        for call in calls:
            expected = call(p.copy(), t.copy(), on_general_path)
            assert_same_results(expected, call(p.copy(), t.copy(), directly))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("shape", "axis"), [((37, 1), -1), ((1, 37), 0), ((3, 1, 5), 1), ((PARALLEL_MIN + 5, 1), -1), ((1,), 0), ((1,), -1)]
)
@pytest.mark.parametrize("out_kind", ["fresh", "none", "predictions", "targets", "fortran"])
def test_loss_per_position_and_gradient_are_bitwise_those_of_the_general_path(backend, dtype, shape, axis, out_kind):
    """mse_and_grad of one position an output (_loss_per_position: the loss and the
    gradient in one pass, on the workers too beyond PARALLEL_MIN) gives the general path's
    two passes' bits, nans, infinities, signed zeros and float32 overflow among them; in
    place, float16, other orders and a loss over everything (a scalar) are the general
    path's own."""
    rng = np.random.default_rng(len(shape) + shape[0])
    finfo = np.finfo(dtype)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, finfo.max, -finfo.max, finfo.smallest_subnormal])
    p, t = (rng.standard_normal(shape) * 10.0 ** rng.integers(-40, 40, shape) for _ in range(2))
    for a in (p, t):
        at = rng.integers(0, a.size, a.size // 3 + 1)
        a.flat[at] = rng.choice(specials, at.size)
    with np.errstate(over="ignore"):  # float32 infinities from large doubles
        p, t = p.astype(dtype), t.astype(dtype)

    def out_of(a, b):
        fresh = np.empty_like(a)
        return {"fresh": fresh, "none": None, "predictions": a, "targets": b, "fortran": np.asfortranarray(fresh)}[
            out_kind
        ]

    results = []
    previous = backend.get_num_threads()
    backend.set_num_threads(2)
    try:
        with np.errstate(all="ignore"):
            for path in (on_general_path, directly):
                a, b = p.copy(), t.copy()
                results.append(path(mse_and_grad, a, b, axis=axis, out=out_of(a, b)))
    finally:
        backend.set_num_threads(previous)
    assert_same_results(results[0][0], results[1][0])
    assert_same_results(results[0][1], results[1][1])
    if p.ndim == 1:
        return
    out = out_of(p, t)
    taken = backend._loss_per_position(p, t, out, np.empty(p.size, dtype))
    # (N, 1) in Fortran order is in C order too.
    in_c_order = out is None or out.flags.c_contiguous
    assert (taken is not None) == (dtype != np.float16 and out_kind not in ("predictions", "targets") and in_c_order)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    "shape", [(1,), (1000,), (256, 10), (4, 5, 6), (PARALLEL_MIN - 1,), (PARALLEL_MIN // 4 + 1, 4)]
)
@pytest.mark.parametrize("order", ["C", "F"])
def test_the_commonest_calls_take_the_small_path(backend, dtype, shape, order):
    rng = np.random.default_rng(2)
    p, t = (rng.standard_normal(shape).astype(dtype, order=order) for _ in range(2))
    p.flags.writeable = False  # read-only inputs too (a memory map's)
    out = np.empty_like(p)
    calls = [
        (MSE, None, None),
        (MSE_GRAD, None, None),
        (MSE_GRAD, None, out),
        (MSE_GRAD, -1, out),
        (MSE_GRAD, 0, None),
        (MSE_AND_GRAD, None, out),
        (MSE_AND_GRAD, None, None),
    ]
    if len(shape) > 1 and order == "C":  # a loss per row, per column
        calls += [(MSE, -1, None), (MSE, len(shape) - 1, None), (MSE_AND_GRAD, -1, out), (MSE_AND_GRAD, -1, None)]
        calls += [(MSE, 0, None), (MSE_AND_GRAD, 0, out)]
    _take_the_small_path(backend, p, t, out, calls)
    result = backend.small_call(MSE, p, t, None, None, "none", False, None)
    assert_same_results(on_general_path(mse, p, t, reduction="none"), result)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("targets", ["per column", "per column (1, k)", "per sample"])
@pytest.mark.parametrize("rows", [256, PARALLEL_MIN // 10 + 1])  # one thread, the workers too
def test_targets_per_column_or_sample_take_the_small_path(backend, dtype, targets, rows):
    rng = np.random.default_rng(3)
    p = rng.standard_normal((rows, 10)).astype(dtype)
    t = {"per column": p[0], "per column (1, k)": p[:1], "per sample": p[:, :1]}[targets].copy()
    t += 1
    out = np.empty_like(p)
    calls = [(job, axis, result_out) for job in (MSE, MSE_AND_GRAD) for axis in (0, -1) for result_out in (None, out)]
    calls += [(MSE_GRAD, axis, result_out) for axis in (None, 0, -1) for result_out in (None, out)]
    if targets != "per sample":  # per sample over everything: rows summed first, the general path
        calls += [(MSE, None, None), (MSE_AND_GRAD, None, out)]
    _take_the_small_path(backend, p, t, out, calls)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("weights", ["per position", "per sample"])
@pytest.mark.parametrize("rows", [256, PARALLEL_MIN // 10 + 1])
def test_weighted_calls_take_the_small_path(backend, dtype, weights, rows):
    rng = np.random.default_rng(4)
    p, t = (rng.standard_normal((rows, 10)).astype(dtype) for _ in range(2))
    w = rng.uniform(0.5, 2.0, (rows, 10) if weights == "per position" else (rows, 1)).astype(dtype)
    out = np.empty_like(p)
    calls = [(job, None, result_out) for job in (MSE, MSE_GRAD, MSE_AND_GRAD) for result_out in (None, out)]
    calls += [(job, -1, result_out) for job in (MSE, MSE_GRAD, MSE_AND_GRAD) for result_out in (None, out)]
    if weights == "per sample":  # with a loss per sample, weights that cancel from the mean alone
        cancelling = [call for call in calls if call[1] is not None]
        calls = [call for call in calls if call[1] is None]
        _take_the_small_path(backend, p, t, out, cancelling, w, ("mean",))
    _take_the_small_path(backend, p, t, out, calls, w)


@pytest.mark.parametrize("dtype", FLOATS)
def test_weighted_calls_at_the_edges_are_bitwise_those_of_the_general_path(dtype):
    # One position, whose weights cancel from a mean; weights per sample over rows longer
    # than a block (2048), which the general path sums in one stage, not rows first.
    rng = np.random.default_rng(5)
    cases = [
        (rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype), w.astype(dtype))
        for shape, w in (
            ((1,), np.array([0.1])),
            ((1, 1), np.array([[1.7]])),
            ((3, 2049), rng.uniform(0.5, 2.0, (3, 1))),
            ((2, 2048), rng.uniform(0.5, 2.0, (2, 1))),
        )
    ]
    for p, t, w in cases:
        for reduction in ("mean", "sum"):
            for function in (mse, mse_grad, mse_and_grad):
                results = [
                    warned(path, function, p, t, weights=w, reduction=reduction) for path in (on_general_path, directly)
                ]
                assert results[0][1] == results[1][1]
                assert_same_results(results[0][0], results[1][0])


@st.composite
def weighted_calls(draw):
    """Weighted calls in and near those that small_weighted takes: vectors and batches
    (rows longer than a block too), weights per position or per sample with zeros, signed
    zeros, nans, infinities or a negative among them, or all nan; every job, reduction
    and axis; out fresh, aliased or over the weights."""
    rows = draw(st.integers(1, 40))
    row = draw(st.sampled_from([1, 2, 3, 8, 10, 17, 2049]))
    shape = draw(st.sampled_from([(rows * row,), (rows, row)]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    w = rng.uniform(0.0, 2.0, shape if len(shape) == 1 or draw(st.booleans()) else (rows, 1)).astype(dtype)
    special = draw(st.sampled_from(["", "", "zero", "-0.0", "nan", "inf", "negative", "all nan", "all zero"]))
    at = draw(st.integers(0, w.size - 1))
    if special.startswith("all"):
        w[...] = np.nan if special == "all nan" else 0.0
    elif special:
        w.reshape(-1)[at] = {"zero": 0.0, "-0.0": -0.0, "nan": np.nan, "inf": np.inf, "negative": -0.5}[special]
    kwargs = {"weights": w, "reduction": draw(st.sampled_from(["mean", "sum"]))}
    axis = draw(st.sampled_from([None, None, -1, len(shape) - 1, 0]))
    if axis is not None:
        kwargs["axis"] = axis
    return p, t, kwargs, draw(st.sampled_from(["none", "fresh", "predictions", "targets", "weights"]))


@settings(max_examples=300)
@given(case=weighted_calls())
def test_weighted_calls_are_bitwise_those_of_the_general_path(case):
    p, t, kwargs, out_kind = case
    expected = warned(on_general_path, mse, p, t, **kwargs)
    got = warned(directly, mse, p, t, **kwargs)
    assert expected[1] == got[1]
    assert_same_results(expected[0], got[0])
    for function in (mse_grad, mse_and_grad):
        results = []
        for path in (on_general_path, directly):
            a, b, w = p.copy(), t.copy(), kwargs["weights"].copy()
            out = {"none": None, "fresh": np.full_like(a, 7), "predictions": a, "targets": b}.get(out_kind)
            if out_kind == "weights":
                out = w if w.shape == a.shape else None
            result, caught = warned(path, function, a, b, out=out, **{**kwargs, "weights": w})
            results.append((result, caught, out))
        assert results[0][1] == results[1][1]
        assert_same_results(results[0][0], results[1][0])
        if results[0][2] is not None:
            assert_same_results(results[0][2], results[1][2])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("axis", "row"), [(None, 10), (-1, 10), (-1, BLOCK + 52)])
@pytest.mark.parametrize("on_workers", [False, True])
def test_weights_checked_as_on_the_general_path(backend, monkeypatch, dtype, axis, row, on_workers):
    # A mean's weights are checked as they are summed (weight_sum_tasks), each range of
    # tasks its own weights: one negative weight, one row of zeros or all weights NaN, at
    # either end, at the end of the first thread's range, in the middle of a stretch or
    # in the other thread's range, gives the general path's error or warning, and `out`
    # is left alone where it raises; a weight of -0 or one NaN weight, which the check
    # leaves to the general path, its results. Rows longer than a block are summed in
    # chunks, their sums finished after.
    rows = PARALLEL_MIN // row + 3 if on_workers else 7
    rng = np.random.default_rng(11)
    p, t = (rng.standard_normal((rows, row)).astype(dtype) for _ in range(2))
    weights = rng.uniform(0.5, 2.0, (rows, row)).astype(dtype)
    cases = [weights]
    size = weights.size
    for at in sorted({0, size // 4 + 5, size // 2 - 1, size // 2 + 3, 3 * size // 4 + 7, size - 1}):
        negative = weights.copy()
        negative.flat[at] = -0.5
        cases.append(negative)
    for at in sorted({0, rows // 2 - 1, rows // 2, rows - 1}):
        zero_row = weights.copy()
        zero_row[at] = 0.0
        cases.append(zero_row)
    cases += [np.full_like(weights, np.nan), np.zeros_like(weights)]
    for at, value in ((size // 2 + 3, -0.0), (size // 4 + 5, np.nan)):
        odd = weights.copy()
        odd.flat[at] = value
        cases.append(odd)
    # Workers let in by each call of weight_sum_tasks (1 on the calling thread, where on
    # two), and by each of weighted_mean_tasks and weighted_rows_tasks (a mean over
    # everything or per row of a block or less, its weight sums summed in its pass).
    workers_let_in = {
        name: kernel_calls(monkeypatch, name)
        for name in ("weight_sum_tasks", "weighted_mean_tasks", "weighted_rows_tasks")
    }
    previous = backend.get_num_threads()
    backend.set_num_threads(2)
    try:
        for w in cases:
            for function in (mse, mse_grad, mse_and_grad):
                results = []
                for path in (on_general_path, directly):
                    out = np.full_like(p, 7)
                    kwargs = {} if function is mse else {"out": out}
                    result, caught = warned(path, function, p, t, weights=w, axis=axis, **kwargs)
                    results.append((result, caught, out))
                assert results[0][1] == results[1][1]
                assert_same_results(results[0][0], results[1][0])
                assert_same_results(results[0][2], results[1][2])
    finally:
        backend.set_num_threads(previous)
    # The paths under test were taken: weight_sum_tasks' check, on the workers or (16-bit
    # floats, which the one compiled weighted call does not take) on one thread; a mean
    # over everything's weights summed in its pass on the workers.
    if on_workers or dtype == np.float16:
        sums = [let_in for let_in, *_ in workers_let_in["weight_sum_tasks"]]
        assert sums
        assert any(sums) if on_workers else not any(sums)
    in_pass = on_workers and dtype != np.float16  # float32 and float64 only
    assert bool(workers_let_in["weighted_mean_tasks"]) == (in_pass and axis is None)
    assert bool(workers_let_in["weighted_rows_tasks"]) == (in_pass and axis == -1 and row <= BLOCK)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [PARALLEL_MIN, 16 * CHUNK + 3 * BLOCK + 5, 20 * CHUNK - 1])
def test_weighted_means_summing_their_weights_in_pass_are_the_general_paths(backend, monkeypatch, dtype, size):
    # A mean over everything weighted per position on the workers, its chunks' blocks'
    # loss and weight sums in one pass (weighted_mean_tasks): whole chunks, and a last
    # chunk of whole blocks and a rest, with an infinity, a NaN and subnormal weights.
    rng = np.random.default_rng(size)
    p, t = (rng.standard_normal(size).astype(dtype) for _ in range(2))
    w = rng.uniform(0.5, 3.0, size).astype(dtype)
    w[::997] *= np.finfo(dtype).tiny
    calls = kernel_calls(monkeypatch, "weighted_mean_tasks")
    previous = backend.get_num_threads()
    backend.set_num_threads(2)
    try:
        for values in ((p, t, w), (np.where(np.arange(size) == size - 7, np.inf, p).astype(dtype), t, w)):
            expected = warned(on_general_path, mse, *values[:2], weights=values[2])
            got = warned(directly, mse, *values[:2], weights=values[2])
            assert expected[1] == got[1]
            assert_same_results(expected[0], got[0])
        w[size // 3] = np.nan
        expected = warned(on_general_path, mse, p, t, weights=w)
        got = warned(directly, mse, p, t, weights=w)
        assert expected[1] == got[1]
        assert_same_results(expected[0], got[0])
    finally:
        backend.set_num_threads(previous)
    assert len(calls) == 6  # three calls' two ranges


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("row", [2, 5, 7, 8, 10, 17, 24, 40, 63, 64, 100, BLOCK])
def test_weighted_losses_per_row_summing_their_weights_in_pass_are_the_general_paths(backend, monkeypatch, dtype, row):
    # Rows of every loop of _vector_rows (packed, lockstep of 1, 2 and any groups, one by
    # one), their weight sums in the pass of the loss, the gradient or both
    # (weighted_rows_tasks), on the workers; in (rows, row) and (2, rows // 2, row), with
    # rows of subnormal weights, an infinity, a NaN and the largest weight.
    rows = PARALLEL_MIN // row + 7
    rng = np.random.default_rng(row)
    p, t = (rng.standard_normal((rows, row)).astype(dtype) for _ in range(2))
    w = rng.uniform(0.5, 3.0, (rows, row)).astype(dtype)  # no 0: weight_checks would hand gradients back
    w[::97] *= np.finfo(dtype).tiny
    p[5, 0], t[9, -1], w[11, -1] = np.inf, np.nan, np.finfo(dtype).max
    calls = kernel_calls(monkeypatch, "weighted_rows_tasks")
    previous = backend.get_num_threads()
    backend.set_num_threads(2)
    try:
        for shape in ((rows, row), (2, rows // 2, row)):
            p_, t_, w_ = (a[: math.prod(shape[:-1])].reshape(shape) for a in (p, t, w))
            for function in (mse, mse_grad, mse_and_grad):
                results = []
                for path in (on_general_path, directly):
                    out = np.full_like(p_, 7)
                    kwargs = {} if function is mse else {"out": out}
                    results.append((*warned(path, function, p_, t_, weights=w_, axis=-1, **kwargs), out))
                assert results[0][1] == results[1][1]
                assert_same_results(results[0][0], results[1][0])
                assert_same_results(results[0][2], results[1][2])
    finally:
        backend.set_num_threads(previous)
    assert len(calls) == 12  # six calls' two ranges


def test_arrays_of_an_equal_dtype_take_the_small_path(backend):
    # Unpickled arrays (Dask's, multiprocessing's) have a dtype equal to, not the same object as, another's.
    p = np.random.default_rng(4).standard_normal((256, 10)).astype(np.float32)
    t = pickle.loads(pickle.dumps(p[0] + 1))
    assert t.dtype == p.dtype
    assert t.dtype is not p.dtype
    calls = [(MSE, None, None), (MSE, -1, None), (MSE_GRAD, None, None), (MSE_AND_GRAD, 0, np.empty_like(p))]
    _take_the_small_path(backend, p, t, calls[-1][2], calls)
    w = pickle.loads(pickle.dumps(np.ones((256, 1), np.float32)))
    _take_the_small_path(backend, p, p + 1, None, [(MSE, None, None)], weights=w)


def _take_the_small_path(backend, p, t, out, calls, weights=None, reductions=("mean", "sum")):
    for reduction in reductions:
        for job, axis, result_out in calls:
            if job == MSE:
                result_out = None
            result = backend.small_call(job, p, t, weights, axis, reduction, False, result_out)
            assert result is not NotImplemented, (job, axis, reduction)
            function = (mse, mse_grad, mse_and_grad)[job]
            kwargs = {"axis": axis, "reduction": reduction, "weights": weights}
            if result_out is not None:
                expected_out = np.empty_like(p)
                assert_same_results(on_general_path(function, p, t, out=expected_out, **kwargs), result)
                assert_same_results(expected_out, out)
            else:
                assert_same_results(on_general_path(function, p, t, **kwargs), result)


@pytest.mark.parametrize("function", [mse_grad, mse_and_grad])
@pytest.mark.parametrize("axis", [None, -1])
def test_out_over_an_input_that_overlaps_the_other_is_the_general_paths(function, axis):
    # out is predictions (or targets), and the other input overlaps it, shifted by one.
    for into_predictions in (True, False):
        results = []
        for path in (on_general_path, directly):
            memory = np.arange(40.0) * 0.37
            p, t = (memory[1:33], memory[:32]) if into_predictions else (memory[:32], memory[1:33])
            p, t = p.reshape(4, 8), t.reshape(4, 8)
            results.append((path(function, p, t, axis=axis, out=p if into_predictions else t), memory))
        assert_same_results(results[0][0], results[1][0])
        assert_same_results(results[0][1], results[1][1])


def test_other_calls_are_handed_back(backend):
    p = np.ones((6, 4), np.float32)
    handed_back = [
        (MSE, p, p.astype(np.float64), None, None, "mean", False, None),  # two dtypes
        (MSE, p, p[:, :1], None, None, "mean", False, None),  # targets per sample, over everything
        (MSE, p.reshape(2, 3, 4), p[:1].reshape(1, 1, 4), None, None, "mean", False, None),  # broadcast over 3-D
        (MSE_GRAD, p, np.ones((), np.float32), None, None, "mean", False, None),  # one target for all
        (MSE_GRAD, p[:1, :1], np.ones((), np.float32), None, None, "mean", False, None),
        (MSE_GRAD, p, p.reshape(1, 6, 4), None, None, "mean", False, None),  # targets of more dimensions
        (MSE, np.asfortranarray(p), p[0].copy(), None, None, "mean", False, None),  # per column, Fortran order
        (MSE, p[:1], p[0].copy(), None, None, "mean", False, None),  # per column of one row
        (MSE, p.T, p.T.copy(), None, None, "mean", False, None),  # Fortran and C order
        (MSE, p.T, p.T, None, -1, "mean", False, None),  # a loss per row in Fortran order
        (MSE, p[:, ::2], p[:, ::2], None, None, "mean", False, None),  # in neither order
        (MSE, p, p, np.ones_like(p), 0, "mean", False, None),  # weighted, a loss per column
        (MSE, p, p, np.zeros((6, 1), np.float32), -1, "mean", False, None),  # weights per sample that do not cancel
        (MSE, p, p, np.ones((6, 1), np.float32), -1, "sum", False, None),
        (MSE, p, p, np.ones(4, np.float32), None, "mean", False, None),  # weights per column
        (MSE, p, p, np.ones((6, 4)), None, "mean", False, None),  # weights of another dtype
        (MSE, p, p, -np.ones_like(p), None, "mean", False, None),  # the general path's error
        (MSE, p, p, np.zeros_like(p), None, "mean", False, None),  # the general path's warning
        (MSE, p, p, np.zeros((6, 1), np.float32), None, "mean", False, None),
        (MSE, p, p, np.zeros_like(p), -1, "mean", False, None),
        (MSE, p.reshape(2, 3, 4), p.reshape(2, 3, 4), None, 1, "mean", False, None),  # over a middle axis
        (MSE, p[:, :1], p[:, :1], None, -1, "mean", False, None),  # a loss per position
        (MSE, p[:1], p[:1], None, -1, "mean", False, None),  # one row: a flat sum
        (MSE, p, p, None, (1,), "mean", False, None),  # axes as a tuple
        (MSE, p, p, None, None, "mean", True, None),  # keepdims
        (MSE, p, p, None, 0, "none", False, None),  # squared errors with an axis
        (MSE_GRAD, p, p, None, None, "none", False, None),
        (MSE, p, p, None, None, "max", False, None),  # the general path's error
        (MSE_GRAD, p, p, None, (0, 1), "mean", False, None),  # axes as a tuple
        (MSE_GRAD, p, p, None, 2, "mean", False, None),  # the general path's AxisError
        (MSE_GRAD, p, p, None, None, "mean", False, np.ones((6, 4))),  # out of another dtype
        (MSE_GRAD, p, p, None, None, "mean", False, np.ones((4, 6), np.float32).T),
        (MSE, np.ones((0, 4), np.float32), np.ones((0, 4), np.float32), None, None, "mean", False, None),
        (MSE, np.ones((), np.float32), np.ones((), np.float32), None, None, "mean", False, None),
        (MSE, p.astype(">f4"), p.astype(">f4"), None, None, "mean", False, None),
        (MSE, np.ma.masked_array(p), p, None, None, "mean", False, None),
        (MSE, [1.0], [1.0], None, None, "mean", False, None),
    ]
    for job, *arguments in handed_back:
        assert backend.small_call(job, *arguments) is NotImplemented, arguments[3:]
    # out over predictions as another view of the same positions: taken, as out=predictions is.
    q, t = p.copy(), p + 1
    assert_same_results(
        on_general_path(mse_grad, q.copy(), t), backend.small_call(MSE_GRAD, q, t, None, None, "mean", False, q[:])
    )
    shifted = np.ones(10, np.float32)
    a, b = shifted[1:9], shifted[:8]
    assert backend.small_call(MSE_GRAD, a, b, None, None, "mean", False, a) is NotImplemented  # out is a, over b
    into = np.ones((6, 4), np.float32)
    assert (
        backend.small_call(MSE_GRAD, p, into[0], None, None, "mean", False, into) is NotImplemented
    )  # out over targets
    read_only = np.ones((6, 4), np.float32)
    read_only.flags.writeable = False
    assert backend.small_call(MSE_GRAD, p, p, None, None, "mean", False, read_only) is NotImplemented


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weights", ["per position", "per sample"])
def test_weighted_calls_on_one_thread_are_one_compiled_call(dtype, weights):
    from fastmse._numba import GRAD, REDUCE, REDUCE_AND_GRAD, small_weighted

    rng = np.random.default_rng(6)
    p, t = (rng.standard_normal((256, 10)).astype(dtype) for _ in range(2))
    w = rng.uniform(0.5, 2.0, (256, 10) if weights == "per position" else (256, 1)).astype(dtype)
    for per_row in (False, True) if weights == "per position" else (False,):
        for kind in (REDUCE, GRAD, REDUCE_AND_GRAD):
            for mean in (True, False):
                loss = np.empty(256, dtype) if per_row and kind != GRAD else np.zeros(0, dtype)
                out = p if kind == REDUCE else np.empty_like(p)
                assert small_weighted(kind, mean, per_row, p, t, w, out, loss)[0] != -1.0, (per_row, kind, mean)
