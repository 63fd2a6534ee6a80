"""The compiled module's small_call: the common call (NumPy arrays of one float dtype,
C-contiguous, summed over everything or over a leading or trailing run of axes; targets
of the predictions' shape, one number, or per sample or per column; without weights, or
with weights per position, per sample or per column over everything, per column over the
axes they cover, or that cancel from a mean) taken whole in C++. It must give bitwise
what the general path gives, take exactly the calls it is meant for, and hand everything
else, errors and warnings included, back."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
from checks import Raised, assert_same, assert_same_results, directly, on_general_path, warned
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


@st.composite
def common_calls(draw):
    """Calls near and inside the common case: C-contiguous or not, axes that are runs or
    not, extents of 0 and 1, targets of predictions' shape or broadcast (per sample, per
    column, one, or otherwise) or a number, every reduction and keepdims, out fresh,
    aliased or absent."""
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=1, max_size=4)))
    dtype = draw(st.sampled_from(FLOATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = rng.standard_normal(shape).astype(dtype)
    split = draw(st.integers(0, len(shape)))
    target_shape = {
        "same": shape,
        "per sample": shape[:split] + (1,) * (len(shape) - split),
        "per column": shape[split:],
        "one": (1,) * split,
        "otherwise": tuple(extent if draw(st.booleans()) else 1 for extent in shape),
    }[draw(st.sampled_from(["same", "same", "per sample", "per column", "one", "otherwise"]))]
    t = rng.standard_normal(target_shape).astype(draw(st.sampled_from((dtype, dtype, np.float64))))
    if draw(st.integers(0, 5)) == 0:
        t = draw(
            st.sampled_from([float(t.flat[0]) if t.size else 0.1, 3, -(2**53), 2**53 + 1, dtype(0.7), np.float64(0.7)])
        )
    fortran = draw(st.booleans()) and len(shape) > 1
    if fortran:  # Fortran order (of every array: else the general path)
        p, t = p.T, t.T if isinstance(t, np.ndarray) else t
        if isinstance(t, np.ndarray) and draw(st.booleans()):  # broadcast, with extents of 1 where drawn
            t = np.asfortranarray(t[tuple(slice(None) if draw(st.booleans()) else slice(0, 1) for _ in t.shape)])
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
    weights = draw(weights_for(p, rng))
    if weights is not None:
        kwargs["weights"] = np.asfortranarray(weights) if fortran and draw(st.booleans()) else weights
    out = draw(st.sampled_from(["none", "fresh", "predictions", "targets"]))
    return p, t, kwargs, out, draw(st.booleans())


@st.composite
def weights_for(draw, p, rng):
    """None, or weights broadcasting to `p`: per position, per sample, per column or one,
    of p's dtype or another, with values that are all positive, or with zeros, a negative,
    a nan or an inf among them."""
    kind = draw(st.sampled_from(["none", "none", "per position", "per position", "ones from the right", "scalar"]))
    if kind == "none":
        return None
    if kind == "per position":
        shape = p.shape
    elif kind == "scalar":
        shape = ()
    else:  # extents of 1 where a draw says so, and perhaps fewer dimensions
        shape = tuple(1 if draw(st.booleans()) else n for n in p.shape)[draw(st.integers(0, p.ndim)) :]
    dtype = draw(st.sampled_from([p.dtype, p.dtype, np.float64, np.float32, np.int64]))
    weights = rng.uniform(0.5, 2.0, shape).astype(dtype)
    special = draw(st.sampled_from(["", "", "", "", "", "zero", "negative", "nan", "inf", "all zero"]))
    if weights.size and special:
        flat = weights.reshape(-1)
        value = {"zero": 0, "negative": -1, "nan": np.nan, "inf": np.inf, "all zero": 0}[special]
        if np.issubdtype(dtype, np.floating) or special in ("zero", "negative", "all zero"):
            if special == "all zero":
                flat[:] = 0
            else:
                flat[draw(st.integers(0, flat.size - 1))] = value
    return weights


def _out(kind: str, p: np.ndarray, t: np.ndarray):
    return {"none": None, "fresh": np.full_like(p, 7), "predictions": p, "targets": t}[kind]


def _on_thread_counts(counts=(1, 2)):
    """Iterates with each thread count set in turn, and sets the previous one back."""
    previous = get_num_threads()
    try:
        for threads in counts:
            set_num_threads(threads)
            yield threads
    finally:
        set_num_threads(previous)


def _assert_paths_agree(results) -> None:
    """The general path's (result, warnings) and the small path's, as `warned` gives them:
    the same warnings, the same result to the bit or the same error."""
    (expected, expected_warnings), (got, got_warnings) = results
    assert expected_warnings == got_warnings
    assert_same_results(expected, got)


@settings(max_examples=400)  # each example is a few small calls
@given(case=common_calls())
def test_results_are_bitwise_those_of_the_general_path(case):
    p, t, kwargs, out_kind, keepdims = case
    expected, got = (
        warned(on_general_path, mse, p, t, keepdims=keepdims, **kwargs),
        warned(directly, mse, p, t, keepdims=keepdims, **kwargs),
    )
    assert expected[1] == got[1]
    assert_same_results(expected[0], got[0])
    aliased = out_kind in ("predictions", "targets")
    if aliased and (getattr(t, "dtype", None) != p.dtype or kwargs["reduction"] == "none"):
        return  # out of the other dtype, or an elementwise mse_and_grad over its own input
    for function, extra in ((mse_grad, {}), (mse_and_grad, {"keepdims": keepdims})):
        results = []
        for path in (on_general_path, directly):
            a, b = p.copy(order="K"), t.copy(order="K") if isinstance(t, np.ndarray) else t
            out = _out(out_kind, a, b)
            result, caught = warned(path, function, a, b, out=out, **extra, **kwargs)
            if out is not None and not isinstance(result, Raised):  # the gradient is written into `out` itself
                assert (result[1] if isinstance(result, tuple) else result) is out
            results.append((result, caught))
        _assert_paths_agree(results)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((1000,), None), ((256, 10), None), ((256, 10), -1), ((256, 10), 1), ((256, 10), 0), ((4, 5, 6), (1, 2))],
)
def test_the_common_calls_take_the_small_path(dtype, shape, axis, order):
    # Each of these must be taken whole in C++ (NotImplemented would send it back), in C
    # order or in Fortran order (DataFrame.to_numpy()'s) alike.
    rng = np.random.default_rng(1)
    p, t = (rng.standard_normal(shape).astype(dtype, order=order) for _ in range(2))
    out = np.empty_like(p)
    per_position = [
        rng.uniform(0.5, 2.0, shape).astype(dtype, order=order),
        rng.uniform(0.5, 2.0, shape).astype(float, order=order),
    ]
    for reduction in ("mean", "sum"):
        for job, result_out in ((MSE, None), (MSE_GRAD, out), (MSE_GRAD, None), (MSE_AND_GRAD, out)):
            for weights in (None, *per_position):
                assert core.small_call(job, p, t, weights, axis, reduction, False, result_out) is not NotImplemented
    for weights in (None, *per_position):
        assert core.small_call(MSE, p, t, weights, None, "none", False, None) is not NotImplemented


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("shape", "targets_shape", "axes"),
    [
        ((40_000, 3), (40_000, 1), (None, -1)),
        ((40_000, 3), (3,), (None, 0)),
        ((40_000, 3), (1,), (None, -1, 0)),
        ((4, 5, 6), (4, 1, 1), (None, (1, 2))),
        ((8, 3000), (3000,), (None, 0)),
        ((8, 3000), (8, 1), (None, 1)),
        ((700, 100), (700, 1), (0,)),
        ((700, 100), (100,), (-1,)),
    ],
)
def test_targets_per_sample_or_column_take_the_small_path(dtype, shape, targets_shape, axes):
    # Summed over everything (rows of up to 2048 positions first, longer ones in one stage),
    # over the axes along which the targets do not vary, or over those along which they do;
    # on threads where large: bitwise as the general path sums them.
    rng = np.random.default_rng(5)
    p, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(targets_shape).astype(dtype)
    for _ in _on_thread_counts():
        for axis in axes:
            for reduction in ("mean", "sum"):
                for job, function in ((MSE, mse), (MSE_GRAD, mse_grad), (MSE_AND_GRAD, mse_and_grad)):
                    assert core.small_call(job, p, t, None, axis, reduction, False, None) is not NotImplemented
                    assert_same_results(
                        on_general_path(function, p, t, axis=axis, reduction=reduction),
                        function(p, t, axis=axis, reduction=reduction),
                    )
                    if job != MSE:
                        out = [np.full_like(p, 7), np.full_like(p, 7)]
                        function(p, t, axis=axis, reduction=reduction, out=out[1])
                        on_general_path(function, p, t, axis=axis, reduction=reduction, out=out[0])
                        assert_same_results(out[0], out[1])
        assert core.small_call(MSE, p, t, None, None, "none", False, None) is not NotImplemented
        assert_same_results(on_general_path(mse, p, t, reduction="none"), mse(p, t, reduction="none"))


def _cast_quietly(number, dtype) -> bool:
    """Whether NumPy casts `number` to `dtype` without reporting anything (an overflow, an
    underflow, an invalid signalling NaN), and it is not a NaN to cast: the small path's
    numbers."""
    value = np.asarray(number)
    if np.isnan(value) and dtype != np.float64:
        return False
    with np.errstate(all="raise"):
        try:
            value.astype(dtype)
        except FloatingPointError:
            return False
    return True


@pytest.mark.parametrize("dtype", FLOATS)
def test_a_number_as_targets_takes_the_small_path(dtype):
    # Python floats and ints, and NumPy scalars of the data's dtype, as NumPy converts them;
    # those whose cast NumPy reports (a warning, or an error under np.errstate) are left to it.
    p = np.random.default_rng(6).standard_normal((300, 7)).astype(dtype)
    signalling_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0]
    numbers = [0.1, 1e-5, 1e-8, 1e-300, 65510.0, 70000.5, 1e39, 0, -3, 2**53, -(2**53), dtype(0.7)]
    numbers += [float("inf"), float("nan"), signalling_nan, dtype("nan")]
    for number in numbers:
        taken = core.small_call(MSE, p, number, None, None, "mean", False, None) is not NotImplemented
        assert taken == _cast_quietly(number, dtype), number
        for axis in (None, -1, 0):
            for job, function in ((MSE, mse), (MSE_GRAD, mse_grad), (MSE_AND_GRAD, mse_and_grad)):
                assert (core.small_call(job, p, number, None, axis, "mean", False, None) is not NotImplemented) == taken
                expected, got = (
                    warned(on_general_path, function, p, number, axis=axis),
                    warned(directly, function, p, number, axis=axis),
                )
                assert expected[1] == got[1]
                assert_same_results(expected[0], got[0])
    if dtype != np.float64:  # cast: an underflow that np.errstate makes an error
        with np.errstate(under="raise"), pytest.raises(FloatingPointError):
            mse(np.ones(4, dtype), 1e-300)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("shape", "axis"), [((256, 1), -1), ((1, 300), 0), ((1003, 1), -1), ((40_000, 1), 1), ((6, 4), ())]
)
def test_a_loss_per_position_takes_the_small_path(dtype, shape, axis):
    # One position per output, unweighted: the squared errors in a pass of their own, then
    # (mse_and_grad) the gradient, which may overwrite an input, or (float32 and float64)
    # both in one pass of rows of one position; bitwise the general path's either way.
    rng = np.random.default_rng(3)
    p, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    big = np.finfo(dtype).max if dtype != np.float64 else 1e300
    specials = [(np.nan, 1.0), (-np.inf, 2.0), (np.inf, np.inf), (-0.0, 0.0), (big, -big), (1e-30, -1e-30)]
    for k, (special_p, special_t) in enumerate(specials[: p.size]):
        p.flat[k * 7 % p.size], t.flat[k * 7 % p.size] = special_p, special_t
    jobs = ((MSE, mse, (False, True)), (MSE_GRAD, mse_grad, (None,)), (MSE_AND_GRAD, mse_and_grad, (False, True)))
    for job, function, keepdims_values in jobs:
        for reduction in ("mean", "sum"):
            assert core.small_call(job, p, t, None, axis, reduction, False, None) is not NotImplemented
            for keepdims in keepdims_values:
                extra = {} if keepdims is None else {"keepdims": keepdims}
                for out_kind in ("none", "fresh", "predictions") if job != MSE else ("none",):
                    results = []
                    for path in (on_general_path, directly):
                        a, b = p.copy(), t.copy()
                        out = {} if job == MSE else {"out": _out(out_kind, a, b)}
                        results.append(path(function, a, b, axis=axis, reduction=reduction, **out, **extra))
                    assert_same_results(*results)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("shape", "weights_shape"),
    [
        ((256, 10), (256, 1)),
        ((4, 5, 6), (4, 5, 1)),
        ((8, 3000), (8, 1)),
        ((256, 10), (10,)),
        ((4, 5, 6), (1, 6)),
        ((8, 3000), (3000,)),
    ],
)
def test_weights_per_sample_or_column_over_everything_take_the_small_path(dtype, shape, weights_shape):
    # Rows of up to 2048 positions are summed first, longer ones in one stage: both bitwise
    # as the general path sums them.
    rng = np.random.default_rng(4)
    p, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    for weights in (rng.uniform(0.5, 2.0, weights_shape).astype(dtype), rng.uniform(0.5, 2.0, weights_shape)):
        for reduction in ("mean", "sum", "none"):
            for job, function in ((MSE, mse), (MSE_GRAD, mse_grad), (MSE_AND_GRAD, mse_and_grad)):
                if job == MSE_AND_GRAD and reduction == "none":
                    continue
                assert core.small_call(job, p, t, weights, None, reduction, False, None) is not NotImplemented
                assert_same_results(
                    on_general_path(function, p, t, weights=weights, reduction=reduction),
                    function(p, t, weights=weights, reduction=reduction),
                )


@pytest.mark.usefixtures("threads_from_parallel_min")
@pytest.mark.parametrize("dtype", FLOATS)
def test_large_weighted_calls_are_bitwise_those_of_the_general_path(dtype):
    # 200,000 positions: threads, the GIL released, the weight sums in tasks of their own.
    rng = np.random.default_rng(5)
    p, t = rng.standard_normal((40_000, 5)).astype(dtype), rng.standard_normal((40_000, 5)).astype(dtype)
    per_position = rng.uniform(0.5, 2.0, p.shape).astype(dtype)
    per_sample = rng.uniform(0.5, 2.0, (40_000, 1))
    per_column = rng.uniform(0.5, 2.0, 5).astype(dtype)
    cases = [(per_position, None), (per_position, -1), (per_position, 0), (per_sample, None)]
    for weights, axis in [*cases, (per_column, None), (per_column, -1)]:
        for reduction in ("mean", "sum"):
            for job, function in ((MSE, mse), (MSE_GRAD, mse_grad), (MSE_AND_GRAD, mse_and_grad)):
                assert core.small_call(job, p, t, weights, axis, reduction, False, None) is not NotImplemented
                kwargs = {"weights": weights, "axis": axis, "reduction": reduction}
                assert_same_results(on_general_path(function, p, t, **kwargs), function(p, t, **kwargs))


@pytest.mark.usefixtures("threads_from_parallel_min")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("row", [2, 3, 4, 5, 7, 8, 10, 12, 16, 17, 33, 2048, 2049])
def test_a_loss_per_row_weighted_per_position_is_bitwise_that_of_the_general_path(dtype, row):
    # Rows of up to 2048 positions: the passes sum the weights themselves (the loss checks
    # them there too), in row groups of every length, on threads (70,000 positions or
    # more); longer rows: the loss in lane mode's blocks, the gradients in a pass of their
    # own. A negative weight or a row whose weights sum to zero anywhere (the last row, a
    # middle one) hands the call back, `out` an input or not: the general path's error or
    # warning, and its results. Zeros in rows that are not all zero (a mask) send a
    # gradient into `out` the way of sums found first.
    rng = np.random.default_rng(row)
    rows = max(3, 70_000 // row + 1)
    p, t = rng.standard_normal((rows, row)).astype(dtype), rng.standard_normal((rows, row)).astype(dtype)
    weights = [rng.uniform(0.5, 2.0, p.shape).astype(dtype), rng.uniform(0.5, 2.0, p.shape)]
    negative, zero_row = weights[0].copy(), weights[1].copy()
    negative[-1, -1] = -1
    zero_row[rows // 2] = 0
    masked = weights[0] * (rng.random(p.shape) < 0.7)
    masked[:, 0] = 1
    jobs = ((MSE, mse, {}), (MSE_GRAD, mse_grad, {}), (MSE_AND_GRAD, mse_and_grad, {"keepdims": True}))
    for _ in _on_thread_counts():
        for w, handed_back in (
            (weights[0], False),
            (weights[1], False),
            (masked, False),
            (negative, True),
            (zero_row, True),
        ):
            for job, function, extra in jobs:
                assert (core.small_call(job, p, t, w, -1, "mean", False, None) is NotImplemented) == handed_back
                for out_kind in ("none", "fresh", "predictions") if job != MSE else ("none",):
                    results = []
                    for path in (on_general_path, directly):
                        a, b = p.copy(), t.copy()
                        out = {} if job == MSE else {"out": _out(out_kind, a, b)}
                        results.append(warned(path, function, a, b, weights=w, axis=-1, **out, **extra))
                    _assert_paths_agree(results)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((2,), None),
        ((7,), None),
        ((2048,), None),
        ((2049,), None),
        ((3, 700), (0, 1)),
        ((40_000,), None),
        ((7, 10_001), None),
        ((3, 2, 2100), (1, 2)),
        ((2, 70_001), -1),
    ],
)
def test_a_weighted_loss_in_lane_mode_is_bitwise_that_of_the_general_path(dtype, shape, axis):
    # The loss alone, weighted per position, over everything or per row of more than 2048
    # positions, sums the weights in its own pass and checks their signs there: one block
    # or short row (2048 positions or fewer), blocks in one task, tasks on threads (70,000
    # positions or more), outputs of several tasks. A negative weight (in the first task or
    # the last) or weights that sum to zero hand the call back: the general path's error or
    # warning. A NaN weight passes, as on the general path. float64 weights of 53 bits are
    # the ones whose sums depend on the order of their additions.
    rng = np.random.default_rng(sum(shape))
    p, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    positive = rng.uniform(0.5, 2.0, shape).astype(dtype)
    first, last, not_a_number = positive.copy(), positive.copy(), positive.copy()
    masked = positive * (rng.random(shape) < 0.5)
    first.flat[1], last.flat[-1], masked.flat[-1] = -1, -1, 1
    not_a_number.flat[p.size // 2] = np.nan
    cases = [
        (positive, False),
        (rng.uniform(0.5, 2.0, shape), False),
        (masked, False),
        (not_a_number, False),
        (first, True),
        (last, True),
        (np.zeros(shape, dtype), True),
    ]
    for _ in _on_thread_counts():
        for w, handed_back in cases:
            for keepdims in (False, True):
                assert (core.small_call(MSE, p, t, w, axis, "mean", keepdims, None) is NotImplemented) == handed_back
                results = [
                    warned(path, mse, p, t, weights=w, axis=axis, keepdims=keepdims)
                    for path in (on_general_path, directly)
                ]
                _assert_paths_agree(results)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("shape", "weights_shape", "axis"),
    [
        ((40_000, 5), (40_000, 5), None),
        ((40_000, 5), (40_000, 1), None),
        ((5, 8000), (5, 8000), -1),
        ((2, 4000), (2, 4000), None),
        ((2, 3000), (2, 3000), -1),
        ((7, 3000), (3000,), None),
        ((7, 3000), (3000,), -1),
    ],
)
def test_weight_sums_summed_before_the_pass_check_the_signs_as_they_sum(dtype, shape, weights_shape, axis):
    # A weighted mean's gradient needs its weight sums before it writes, and weights per
    # sample or per column are summed before the loss too: where more than 2048 weights
    # make each sum, the pass that sums them checks their signs (elsewhere a pass of its
    # own does). A negative weight in the first task or the last hands the call back
    # before anything is written: the general path's error, `out` untouched. A NaN passes.
    rng = np.random.default_rng(sum(shape))
    p, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    positive = rng.uniform(0.5, 2.0, weights_shape).astype(dtype)
    first, last, not_a_number = positive.copy(), positive.copy(), positive.copy()
    first.flat[1], last.flat[-1], not_a_number.flat[positive.size // 2] = -1, -1, np.nan
    cases = (
        (positive, False),
        (positive.astype(np.float64), False),
        (not_a_number, False),
        (first, True),
        (last, True),
    )
    jobs = ((MSE, mse), (MSE_GRAD, mse_grad), (MSE_AND_GRAD, mse_and_grad))
    for _ in _on_thread_counts():
        for w, handed_back in cases:
            for job, function in jobs:
                assert (core.small_call(job, p, t, w, axis, "mean", False, None) is NotImplemented) == handed_back
                results = []
                for path in (on_general_path, directly):
                    out = {} if job == MSE else {"out": np.full_like(p, 7)}
                    results.append(warned(path, function, p, t, weights=w, axis=axis, **out))
                    assert not handed_back or all((o == 7).all() for o in out.values())
                _assert_paths_agree(results)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("rows", [3, 1 << 18])
def test_the_weights_check_finds_one_bad_weight_anywhere(dtype, rows):
    # Before a pass that writes, the weights are read once to check them (in vectors of
    # 16 bytes, the rest one by one; in blocks on the team's threads where there are over
    # 2**20): one negative weight, one row of zeros or one weight that cancels from a mean
    # but is not positive and finite, in any vector, lane or tail, on either thread, hands
    # the call back or takes it off the pass that sums the weights as it writes.
    row = 5
    rng = np.random.default_rng(rows)
    p, t = rng.standard_normal((2, rows, row)).astype(dtype)
    out = np.empty_like(p)
    per_position = rng.uniform(0.5, 2.0, (rows, row)).astype(dtype)
    per_sample = per_position[:, :1].copy()
    assert core.small_call(MSE_GRAD, p, t, per_position, None, "sum", False, out) is not NotImplemented
    assert core.small_call(MSE_GRAD, p, t, per_sample, -1, "mean", False, out) is not NotImplemented
    for at in sorted({0, 1, 2, 3, per_position.size // 2 + 1, per_position.size - 2, per_position.size - 1}):
        negative = per_position.copy()
        negative.flat[at] = -0.5
        assert core.small_call(MSE_GRAD, p, t, negative, None, "sum", False, out) is NotImplemented
    for at in sorted({0, 1, 2, rows // 2, rows - 2, rows - 1}):
        for bad in (0.0, -1.0, np.inf, np.nan):
            cancelling = per_sample.copy()
            cancelling[at] = bad
            assert core.small_call(MSE_GRAD, p, t, cancelling, -1, "mean", False, out) is NotImplemented
        zero_row = per_position.copy()
        zero_row[at] = 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out.fill(7)
            with pytest.raises(RuntimeWarning, match="weights that sum to zero"):
                mse_grad(p, t, weights=zero_row, axis=-1, out=out)
            assert (out == 7).all()


@pytest.mark.parametrize("function", [mse_grad, mse_and_grad])
def test_out_is_left_alone_where_a_zero_weight_sum_warns_as_an_error(function):
    # The general path warns before it writes: with warnings as errors, `out` keeps what
    # it held on both paths (the small path finds the weight sums in the gradient's own
    # pass only where no row's weights are all 0, or into an array of its own).
    rng = np.random.default_rng(6)
    p, t = rng.standard_normal((100, 8)), np.zeros((100, 8))
    weights = np.ones_like(p)
    weights[5] = 0
    for path in (on_general_path, directly):
        out = np.full_like(p, 7.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(RuntimeWarning, match="weights that sum to zero"):
                path(function, p, t, weights=weights, axis=-1, out=out)
        assert (out == 7.0).all()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("width", [10, 1])
def test_weights_that_cancel_take_the_small_path(dtype, width):
    # Weights per sample with a loss per sample (of one position too: the squared errors):
    # a mean that does not read them, bitwise the general path's.
    rng = np.random.default_rng(2)
    p, t = rng.standard_normal((64, width)).astype(dtype), rng.standard_normal((64, width)).astype(dtype)
    out = np.empty_like(p)
    for weights in (rng.uniform(0.5, 2.0, (64, 1)).astype(dtype), rng.uniform(0.5, 2.0, (64, 1)), np.array(2.0)):
        for job, result_out in ((MSE, None), (MSE_GRAD, out), (MSE_AND_GRAD, None)):
            assert core.small_call(job, p, t, weights, -1, "mean", False, result_out) is not NotImplemented
            assert core.small_call(job, p, t, weights, -1, "sum", False, result_out) is NotImplemented
        for function in (mse, mse_grad, mse_and_grad):
            assert_same_results(
                on_general_path(function, p, t, weights=weights, axis=-1),
                directly(function, p, t, weights=weights, axis=-1),
            )


def test_other_calls_are_handed_back():
    p = np.ones((6, 4), np.float32)
    handed_back = [
        (p, p.astype(np.float64), None, "mean", False, None),  # two dtypes
        (p.T, p.T.copy(), None, "mean", False, None),  # Fortran and C order
        (p.T, p.T, 0, "none", False, None),
        (p[:, ::2], p[:, ::2], None, "mean", False, None),  # in neither order
        # A loss in Fortran order over two kept extents: C order on the general path.
        (np.ones((2, 3, 4), np.float32).T, np.ones((2, 3, 4), np.float32).T, 0, "mean", False, None),
        (p[::2], p[::2], None, "mean", False, None),
        (p[:1], p, None, "mean", False, None),  # predictions broadcast
        (np.ones((2, 3, 4), np.float32), np.ones((2, 1, 4), np.float32), None, "mean", False, None),
        # Targets per sample that vary along more than the plan's one kept or summed dimension.
        (np.ones((2, 3, 4), np.float32), np.ones((2, 3, 1), np.float32), (1, 2), "mean", False, None),
        (np.ones((2, 3, 4), np.float32), np.ones((2, 3, 1), np.float32), 0, "mean", False, None),
        (p, np.float64(1.0), None, "mean", False, None),  # a number of another dtype, or not exact as a double
        (p, 2**53 + 1, None, "mean", False, None),
        (p, True, None, "mean", False, None),
        (p, 1j, None, "mean", False, None),
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
    for predictions, targets, *rest in handed_back:
        assert core.small_call(MSE, predictions, targets, None, *rest) is NotImplemented, rest
    # Targets per sample or per column beside weights; `out` over targets that broadcast.
    assert core.small_call(MSE, p, p[:1], p, None, "sum", False, None) is NotImplemented
    assert core.small_call(MSE_GRAD, p, p[:1], None, None, "mean", False, p) is NotImplemented
    weights_handed_back = [
        np.ones((6, 4), np.float16),  # another dtype than the data's, not float64
        np.ones((6, 4), np.int64),
        np.ones((4, 6)).T,  # in Fortran order, predictions in C order
        np.ones((1, 6, 4)),  # broadcasts predictions
        np.ones((6, 1, 1)),  # broadcasts predictions
        np.full((6, 4), -1.0),  # negative: the general path's error
        np.zeros((6, 4)),  # weights that sum to zero: the general path's warning
        np.ma.masked_array(np.ones((6, 4))),
        [[1.0] * 4] * 6,
        2.0,
    ]
    for weights in weights_handed_back:
        assert core.small_call(MSE, p, p, weights, None, "mean", False, None) is NotImplemented, weights
    # Weights per sample with a sum per sample, per column with a sum per column or over
    # some of the axes they cover: the general path.
    assert core.small_call(MSE, p, p, np.ones((6, 1), np.float32), -1, "sum", False, None) is NotImplemented
    assert core.small_call(MSE, p, p, np.ones(4, np.float32), 0, "sum", False, None) is NotImplemented
    q = np.ones((3, 4, 5), np.float32)
    assert core.small_call(MSE, q, q, np.ones((4, 5), np.float32), -1, "mean", False, None) is NotImplemented
    overlapping = np.ones(10, np.float32)
    for out in (overlapping[1:9], np.ones((6, 4), np.float64), np.ones((4, 6), np.float32), np.ones((6, 4)).T):
        a, b = (overlapping[:8], overlapping[2:]) if out.base is overlapping else (p, p)
        assert core.small_call(MSE_GRAD, a, b, None, None, "mean", False, out) is NotImplemented
    weights = np.ones((6, 4), np.float32)
    assert core.small_call(MSE_GRAD, p, p, weights, None, "mean", False, weights) is NotImplemented
    read_only = np.ones((6, 4), np.float32)
    read_only.flags.writeable = False
    assert core.small_call(MSE_GRAD, p, p, None, None, "mean", False, read_only) is NotImplemented
    # One position per output, weighted: the general path's (weighted) squared errors.
    assert core.small_call(MSE, p, p, np.ones_like(p), (), "sum", False, None) is NotImplemented
    assert core.small_call(MSE_AND_GRAD, p, p, None, None, "none", False, None) is NotImplemented


def test_weight_sums_beyond_float64_are_silent():
    # inf weight sums (and factors 2 / sum beyond float64) on both paths, without warnings.
    p, t = np.array([[1, 2], [3, 4]], np.float32), np.zeros((2, 2), np.float32)
    tiny, huge = np.full((2, 2), 5e-324), np.array([[1e308], [7e307]])
    for function, weights, axis in ((mse_grad, tiny, -1), (mse_and_grad, tiny, 0), (mse, huge, None)):
        expected, got = (
            warned(on_general_path, function, p, t, weights=weights, axis=axis),
            warned(directly, function, p, t, weights=weights, axis=axis),
        )
        assert expected[1] == got[1] == []
        assert_same_results(expected[0], got[0])


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
    with pytest.raises(ValueError, match="weights must be non-negative; found -1.0"):
        mse(p, p, weights=np.full_like(p, -1))
    with pytest.warns(RuntimeWarning, match="weights that sum to zero"):
        mse_grad(p, p, weights=np.zeros_like(p), axis=-1)
    with pytest.raises(TypeError, match="small_call"):
        core.small_call(MSE, p, p)
    with pytest.raises(ValueError, match="job is 0"):
        core.small_call(3, p, p, None, None, "mean", False, None)


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(3)
    p, t = rng.standard_normal((3, 70_000)).astype(np.float32), rng.standard_normal((3, 70_000)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, p.shape).astype(np.float32)
    results = [
        (mse(p, t), mse(p, t, axis=-1, weights=w), mse_and_grad(p, t, axis=0, weights=w))
        for _ in _on_thread_counts((1, 2, 3))
    ]
    for other in results[1:]:
        for a, b in zip(results[0][:2], other[:2], strict=True):
            assert_same(a, b)
        assert_same_results(results[0][2], other[2])


def test_fortran_order_with_operands_that_broadcast_is_the_general_paths():
    # The general path's plan orders dimensions by all operands' strides together; with an
    # operand that broadcasts, a tie can keep C order: p (2, 7) in Fortran order and t
    # (2, 1) give each dimension 2.
    rng = np.random.default_rng(0)
    cases = [
        ((2, 7), (2, 1), None),
        ((2, 5, 2, 2), (2, 5, 2, 1), None),
        ((4, 2, 4), (), (4, 2, 1)),
        ((6, 3), (3,), None),
        ((6, 3), (6, 3), (6, 1)),
        ((6, 3), (6, 3), (3,)),
    ]
    for shape, targets_shape, weights_shape in cases:
        p = np.asfortranarray(rng.standard_normal(shape))
        t = np.asfortranarray(rng.standard_normal(targets_shape))
        kwargs = {} if weights_shape is None else {"weights": rng.uniform(0.5, 2.0, weights_shape)}
        for reduction in ("mean", "sum"):
            for keepdims in (False, True):
                for function in (mse, mse_and_grad):
                    expected = on_general_path(function, p, t, reduction=reduction, keepdims=keepdims, **kwargs)
                    assert_same_results(expected, function(p, t, reduction=reduction, keepdims=keepdims, **kwargs))


@pytest.mark.parametrize("path", [on_general_path, directly])
def test_elementwise_results_are_laid_out_like_numpys(path):
    # reduction="none" and the gradient follow predictions' order, as (p - t) ** 2 does.
    rng = np.random.default_rng(8)
    for p in (rng.standard_normal((30, 7)), rng.standard_normal((30, 7)).T, rng.standard_normal((3, 4, 5)).T):
        t = p * 0.5  # in p's order
        expected = ((p - t) ** 2).flags
        for result in (path(mse, p, t, reduction="none"), path(mse_grad, p, t)):
            assert (result.flags.c_contiguous, result.flags.f_contiguous) == (
                expected.c_contiguous,
                expected.f_contiguous,
            )
