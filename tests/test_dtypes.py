"""Result dtypes, precision promises, float16 and bfloat16 rounding, dtypes that are
refused."""

from __future__ import annotations

import re
import subprocess
import sys

import ml_dtypes  # in the test extra: bfloat16 arrays
import numpy as np
import pytest
import reference
from checks import assert_matches, assert_same, call
from fastmse import mse, mse_and_grad, mse_grad
from hypothesis import given
from hypothesis import strategies as st
from strategies import calls

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOATS = [np.float16, np.float32, np.float64, BFLOAT16]
SIXTEEN_BITS = [np.dtype(np.float16), BFLOAT16]
# Doubles whose rounding to each 16-bit type is a trap: just past a tie (rounded twice,
# through float32, they would fall back onto the tie and go to even), the largest finite
# value's neighbourhood, ties in the subnormal range.
HARD_DOUBLES = {
    np.dtype(np.float16): [1 + 2.0**-11 + 2.0**-40, 2.0**-25 + 2.0**-60, 65519.99, 32760.000001, 3 * 2.0**-25],
    BFLOAT16: [
        1 + 2.0**-8 + 2.0**-40,
        2.0**-134 + 2.0**-160,
        255.5 * 2.0**120 * (1 - 2.0**-40),
        3 * 2.0**-134,
        1 + 2.0**-8,
        (1 + 2.0**-7) * (1 + 2.0**-8),
    ],
}
# How far each 16-bit type reaches: random doubles are drawn below `top` and from
# 2**low to 2**high.
RANGES = {np.dtype(np.float16): (40000.0, -30, 16), BFLOAT16: (1e38, -140, 126)}


def every_value(dtype: np.dtype) -> np.ndarray:
    """All 65536 values of a 16-bit float type, infinities and NaNs included."""
    return np.arange(1 << 16, dtype=np.uint16).view(dtype)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("f2", "f2"),
        ("f4", "f4"),
        ("f8", "f8"),
        ("f4", "f8"),
        ("f2", "f4"),
        ("i8", "i8"),
        ("i4", "f4"),
        ("u1", "f2"),
        ("?", "?"),
        ("i1", "f8"),
        (">f4", ">f4"),
        (">f8", "<f4"),
        (BFLOAT16, BFLOAT16),
        (BFLOAT16, "f4"),
        ("f2", BFLOAT16),
        ("i1", BFLOAT16),
        (BFLOAT16, "f8"),
    ],
)
def test_result_dtype_follows_numpy(backend, left, right):
    rng = np.random.default_rng(2)
    p = (rng.standard_normal(50) * 3).astype(left)
    t = (rng.standard_normal(50) * 3).astype(right)
    expected_dtype = reference.result_dtype(p, t)
    loss = mse(p, t)
    assert isinstance(loss, expected_dtype.type)
    assert mse(p, t, axis=0, keepdims=True).dtype == expected_dtype
    assert mse_grad(p, t).dtype == expected_dtype
    assert mse(p, t, reduction="none").dtype == expected_dtype
    assert_matches(loss, reference.loss(p, t), expected_dtype)
    assert_matches(mse_grad(p, t), reference.grad(p, t), expected_dtype)


@pytest.mark.parametrize("size", [1, 7, 1000, 2048 * 8 + 3, (1 << 15) * 3 + 17, 1_000_003])
def test_float32_within_one_ulp_of_exact(backend, size):
    rng = np.random.default_rng(size)
    p = rng.uniform(-10, 10, size).astype(np.float32)
    t = rng.uniform(-10, 10, size).astype(np.float32)
    exact = reference.exact_mean_squared_error(p, t)
    assert reference.ulps(mse(p, t), exact, np.float32) <= 1.0
    assert reference.ulps(mse(p, t, reduction="sum"), exact * size, np.float32) <= 1.0


@pytest.mark.parametrize("size", [3, 5000, (1 << 15) * 5 + 1, 2_000_001])
def test_float64_within_1e13_of_exact(backend, size):
    rng = np.random.default_rng(size)
    p = rng.uniform(-1, 1, size).astype(np.float32).astype(np.float64)
    t = rng.uniform(-1, 1, size).astype(np.float32).astype(np.float64)
    exact = reference.exact_mean_squared_error(p, t)
    assert abs(mse(p, t) - exact) <= 1e-13 * exact


@pytest.mark.slow
def test_float32_mean_of_a_hundred_million_ones_is_exact(backend):
    # bottleneck's float32 accumulator famously got such means wrong by a third.
    p = np.broadcast_to(np.float32(1.5), (10**8,))
    t = np.broadcast_to(np.float32(0.5), (10**8,))
    assert mse(p, t) == np.float32(1.0)
    assert mse(p, t, reduction="sum") == np.float32(1e8)


@pytest.mark.parametrize("dtype", FLOATS)
def test_float16_rounds_once_from_float64(backend, dtype):
    rng = np.random.default_rng(3)
    p = rng.standard_normal((40, 30)).astype(dtype)
    t = rng.standard_normal((40, 30)).astype(dtype)
    for axis in (None, 0, 1):
        assert_matches(mse(p, t, axis=axis), reference.loss(p, t, axis=axis), np.dtype(dtype))


@pytest.mark.parametrize("width", [3, 5, 6, 7, 9, 10, 12, 20, 1000])
def test_float32_losses_per_row_near_a_rounding_boundary(backend, width):
    # A float32 loss is its float64 sum divided by the row's width, rounded once to float32.
    # The C++ kernels multiply by the width's reciprocal where that gives the same float32,
    # and divide where the product lies near a point halfway between two float32 values.
    # Rows [x, 0, 0, ...] against 0, their sum x * x: x near sqrt(width * halfway point).
    rng = np.random.default_rng(width)
    floats = (rng.uniform(1, 2, 64) * 2.0 ** rng.integers(-100, 100, 64)).astype(np.float32)
    halfway = floats.astype(np.float64) + np.spacing(floats).astype(np.float64) / 2
    steps = np.arange(-400, 401)
    x = (np.sqrt(width * halfway).view(np.int64)[:, None] + steps).view(np.float64).ravel()
    sums = x * x
    quotients = (sums / width).view(np.int64)
    halfway_bits = np.repeat(halfway.view(np.int64), len(steps))
    x = x[np.abs(quotients - halfway_bits) <= 3]  # the quotient within 3 ulps of halfway
    expected = (x * x / width).astype(np.float32)
    # The data holds rows that the product alone would round to another float32.
    assert ((x * x * (1.0 / width)).astype(np.float32) != expected).any()
    predictions = np.zeros((len(x), width))
    predictions[:, 0] = x
    loss = mse(predictions, np.zeros(width), axis=-1, dtype=np.float32)
    np.testing.assert_array_equal(loss, expected, strict=True)


@pytest.mark.parametrize("dtype", SIXTEEN_BITS, ids=str)
def test_16_bit_results_are_rounded_once(backend, dtype):
    # docs/semantics.rst (Types and precision): float16 and bfloat16 results are computed
    # in float64 and rounded once (NumPy's and ml_dtypes' float64 casts, which round
    # once, are the oracle); every finite input is checked here against one target value.
    values = every_value(dtype)
    finite = values[np.isfinite(values)]
    target = np.array(0.3).astype(dtype)
    grad = mse_grad(finite, np.full_like(finite, target), reduction="sum")
    loss = mse(finite, np.full_like(finite, target), reduction="none")
    difference = finite.astype(np.float64) - target.astype(np.float64)
    with np.errstate(over="ignore"):  # large values overflow to inf, as they should
        np.testing.assert_array_equal(grad, (2.0 * difference).astype(dtype), strict=True)
        np.testing.assert_array_equal(loss, (difference * difference).astype(dtype), strict=True)


@pytest.mark.parametrize("dtype", SIXTEEN_BITS, ids=str)
def test_16_bit_rounding_of_arbitrary_doubles(backend, dtype):
    # float64 weights make the gradient 2 * w, any double: one rounding, never two.
    rng = np.random.default_rng(11)
    top, low, high = RANGES[dtype]
    w = np.concatenate([rng.uniform(0, top, 100_000), np.exp2(rng.uniform(low, high, 100_000)), HARD_DOUBLES[dtype]])
    ones = np.ones(w.size, dtype)
    grad = mse_grad(ones, np.zeros_like(ones), weights=w, reduction="sum")
    loss = mse(ones, np.zeros_like(ones), weights=w, reduction="none")
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(grad, (2.0 * w).astype(dtype), strict=True)
        np.testing.assert_array_equal(loss, w.astype(dtype), strict=True)
    one = slice(-4, -3)
    assert mse(ones[one], np.zeros(1, dtype), weights=w[one], reduction="sum") == loss[one][0]


@given(
    case=calls(dtypes=(np.float16, np.float32, np.float64, BFLOAT16)),
    dtype=st.sampled_from(FLOATS),
    keepdims=st.booleans(),
)
def test_loss_in_the_dtype_asked_for(backend, case, dtype, keepdims):
    # dtype=: the float64 sums rounded once to the caller's dtype, whatever the inputs'
    # (a float32 loss of bfloat16 inputs, a float64 one of float32 inputs); the fused
    # call gives the same loss, and the gradient it would give without dtype=.
    predictions, targets, kwargs = case
    dtype = np.dtype(dtype)
    keepdims = keepdims and kwargs["reduction"] != "none"
    result = call(mse, predictions, targets, {**kwargs, "dtype": dtype, "keepdims": keepdims})
    assert_matches(result, reference.loss(predictions, targets, keepdims=keepdims, **kwargs), dtype)
    assert isinstance(result, np.ndarray if np.ndim(result) else np.generic)
    loss, grad = call(mse_and_grad, predictions, targets, {**kwargs, "dtype": dtype, "keepdims": keepdims})
    assert_same(loss, result)
    assert_same(grad, call(mse_grad, predictions, targets, kwargs))


@pytest.mark.parametrize("dtype", SIXTEEN_BITS, ids=str)
def test_a_loss_asked_for_in_16_bits_is_rounded_once(backend, dtype):
    # float64 weights make a sum any double; asked for in a 16-bit dtype, it is rounded
    # once from float64, never through the inputs' float32.
    w = np.array(HARD_DOUBLES[dtype])
    ones = np.ones(w.size, np.float32)
    expected = w.astype(dtype)
    for i in range(w.size):
        given = mse(ones[i : i + 1], np.zeros(1, np.float32), weights=w[i : i + 1], reduction="sum", dtype=dtype)
        assert_same(given, expected[i])
    zeros = np.zeros((w.size, 1), np.float32)
    per_position = mse(ones[:, None], zeros, weights=w[:, None], axis=-1, reduction="sum", dtype=dtype)
    assert_same(per_position, expected)
    assert_same(mse(ones, np.zeros_like(ones), weights=w, reduction="none", dtype=dtype), expected)
    # A mean: weights h and 2**k - h (exact, summing to 2**k) on squared errors 1 and 0
    # give h / 2**k, as hard to round as h where it stays a normal number.
    top = np.exp2(np.ceil(np.log2(w)) + 1)
    pair = np.stack([w, top - w], axis=1)
    assert np.array_equal(pair[:, 0] + pair[:, 1], top)
    p = np.array([[1.0, 0.0]] * w.size, np.float32)
    expected = (w / top).astype(dtype)
    assert_same(mse(p, np.zeros_like(p), weights=pair, axis=-1, dtype=dtype), expected)
    for i in range(w.size):
        assert_same(mse(p[i], np.zeros(2, np.float32), weights=pair[i], dtype=dtype), expected[i])


@pytest.mark.parametrize("bad", ["int32", np.complex64, "not a dtype", object, np.bool_, [("a", "f4")], "f4,f4"])
def test_a_dtype_that_is_not_a_float_is_refused(bad):
    p = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="dtype must be float16, bfloat16, float32 or float64"):
        mse(p, p, dtype=bad)
    with pytest.raises(TypeError, match="dtype must be"):
        mse_and_grad(p, p, dtype=bad)


def test_the_inputs_dtype_asked_for_changes_nothing(backend):
    rng = np.random.default_rng(5)
    p, t = rng.standard_normal((2, 37, 10), dtype=np.float32)
    w = rng.uniform(0.1, 2.0, (37, 1))
    for kwargs in ({}, {"axis": -1}, {"axis": 0, "weights": w}, {"reduction": "none"}, {"reduction": "sum"}):
        assert_same(mse(p, t, dtype=np.float32, **kwargs), mse(p, t, **kwargs))
        assert_same(mse(p, t, dtype="bfloat16", **kwargs), mse(p, t, dtype=BFLOAT16, **kwargs))
        assert_same(mse(p, t, dtype=">f8", **kwargs), mse(p, t, dtype=np.float64, **kwargs))  # byte order: native


@pytest.mark.parametrize("dtype", SIXTEEN_BITS, ids=str)
def test_16_bit_values_are_read_exactly(backend, dtype):
    values = every_value(dtype)
    sums = mse(values[:, None], np.zeros((1, 1), dtype), axis=1, reduction="sum")
    with np.errstate(over="ignore", invalid="ignore"):  # NaNs and infinities are read too
        squares = values.astype(np.float64) ** 2
        np.testing.assert_array_equal(sums, squares.astype(dtype), strict=True)


def test_bfloat16_needs_no_import_of_ml_dtypes():
    # ml_dtypes is an optional extra: fastmse imports it nowhere, and computes bfloat16
    # arrays that whoever made them brought.
    script = (
        "import sys, numpy as np, fastmse\n"
        "assert fastmse.mse(np.ones(3), np.zeros(3)) == 1.0\n"
        "assert 'ml_dtypes' not in sys.modules\n"
        "import ml_dtypes\n"
        "p = np.ones(3, ml_dtypes.bfloat16)\n"
        "assert fastmse.mse(p, p * 0).dtype == p.dtype\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1 + 2j]),
        np.array(["a"]),
        np.array([b"a"]),
        np.array([object()]),
        np.array(["2020-01-01"], dtype="M8[D]"),
        np.array([1], dtype="m8[s]"),
        np.zeros(1, dtype=[("a", "f8")]),
    ],
    ids=["complex", "str", "bytes", "object", "datetime", "timedelta", "structured"],
)
def test_non_real_dtypes_are_refused_by_name(backend, bad):
    for function in (mse, mse_grad, mse_and_grad):
        name = re.escape(str(bad.dtype))
        with pytest.raises(TypeError, match=f"predictions has dtype {name}"):
            function(bad, np.zeros(1))
        with pytest.raises(TypeError, match=f"targets has dtype {name}"):
            function(np.zeros(1), bad)
        with pytest.raises(TypeError, match=f"weights has dtype {name}"):
            function(np.zeros(1), np.zeros(1), weights=bad)


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize == 8, reason="longdouble is float64 here")
def test_longdouble_is_refused(backend):
    with pytest.raises(TypeError, match="float128|longdouble|float96"):
        mse(np.zeros(2, np.longdouble), np.zeros(2))


@pytest.mark.parametrize("dtype", SIXTEEN_BITS, ids=str)
@pytest.mark.parametrize("weights_dtype", [np.float16, BFLOAT16, np.float32, np.float64, np.int64, np.bool_])
def test_weights_keep_their_precision(backend, dtype, weights_dtype):
    rng = np.random.default_rng(4)
    p = rng.standard_normal(300).astype(dtype)
    t = rng.standard_normal(300).astype(dtype)
    w = (rng.uniform(0.5, 3, 300) * 1000).astype(weights_dtype)
    assert_matches(mse(p, t, weights=w), reference.loss(p, t, weights=w), dtype)
    assert_matches(mse_grad(p, t, weights=w), reference.grad(p, t, weights=w), dtype)


def test_read_only_and_memory_mapped_inputs(backend, tmp_path):
    rng = np.random.default_rng(5)
    values = rng.standard_normal((100, 7)).astype(np.float32)
    np.save(tmp_path / "p.npy", values)
    mapped = np.load(tmp_path / "p.npy", mmap_mode="r")
    readonly = values.copy()
    readonly.flags.writeable = False
    t = np.zeros_like(values)
    assert mse(mapped, t) == mse(values, t)
    assert mse(readonly, t) == mse(values, t)
    np.testing.assert_array_equal(mse_grad(mapped, t, axis=1), mse_grad(values, t, axis=1))


def test_unaligned_strides_are_handled(backend):
    record = np.zeros(10, dtype=[("a", "u1"), ("b", "<f8")])
    record["b"] = np.arange(10.0)
    assert record["b"].strides[0] % 8 != 0
    assert mse(record["b"], np.zeros(10)) == pytest.approx(np.mean(np.arange(10.0) ** 2), rel=1e-15)


def _unaligned_copy(array: np.ndarray) -> np.ndarray:
    """`array`'s values in a buffer one byte off alignment (NumPy allows such arrays: a
    buffer at an odd offset, or an array unpickled from a Dask worker)."""
    buffer = bytearray(array.nbytes + 1)
    moved = np.frombuffer(buffer, array.dtype, count=array.size, offset=1).reshape(array.shape)
    moved[...] = array
    assert not moved.flags.aligned
    return moved


def test_unaligned_buffers_are_handled(backend):
    expected = np.arange(100.0)
    p = _unaligned_copy(expected)
    t = np.zeros(100)
    assert mse(p, t) == pytest.approx(np.mean(expected**2), rel=1e-15)
    out = _unaligned_copy(np.zeros(100))
    mse_grad(p, t, reduction="sum", out=out)
    np.testing.assert_array_equal(out, 2 * expected)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_unaligned_arrays_give_the_aligned_results(backend, dtype):
    # Under .ci/sanitize, UBSan reports any misaligned element access in the kernels.
    rng = np.random.default_rng(11)
    p = rng.standard_normal((70, 33)).astype(dtype)
    t = rng.standard_normal((70, 33)).astype(dtype)
    w = rng.uniform(0.5, 2.0, (70, 1))
    row = rng.standard_normal(33).astype(dtype)
    cases = [
        lambda p, t, w, out: mse(p, t),
        lambda p, t, w, out: mse(p, t, weights=w, axis=0),
        lambda p, t, w, out: mse(p, t, reduction="none"),
        lambda p, t, w, out: mse_grad(p, t, weights=w, out=out),
        lambda p, t, w, out: mse_and_grad(p[:, ::2], t[:, ::2], axis=-1),
        lambda p, t, w, out: mse_and_grad(p, t, out=out)[0],
        lambda p, t, w, out: mse_grad(row, t, weights=w),  # broadcast predictions
    ]
    for case in cases:
        expected = case(p, t, w, np.empty_like(p))
        out = _unaligned_copy(np.zeros_like(p))
        got = case(_unaligned_copy(p), _unaligned_copy(t), _unaligned_copy(w), out)
        if isinstance(expected, tuple):
            for a, b in zip(expected, got, strict=True):
                np.testing.assert_array_equal(np.asarray(b), np.asarray(a), strict=True)
        else:
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), strict=True)


def test_python_scalars_take_the_arrays_dtype(backend):
    # np.result_type(p, 0.0) keeps float32 (NEP 50), as np.mean((p - 0.0) ** 2) does.
    p = np.ones(3, np.float32)
    assert isinstance(mse(p, 0.0), np.float32)
    assert mse_grad(p, 0).dtype == np.float32
    assert isinstance(mse(2, p), np.float32)
    assert isinstance(mse(p.astype(np.float16), 0.5), np.float16)
    assert isinstance(mse(p, [0.0, 0.0, 0.0]), np.float64)  # a list is not a weak scalar
    assert isinstance(mse(np.arange(3), 1.5), np.float64)


def test_more_dimensions_than_numpy_broadcast_shapes_takes(backend):
    p = np.arange(6.0).reshape((1,) * 31 + (2, 3))
    t = np.zeros((3,))
    assert p.ndim == 33
    assert mse(p, t) == pytest.approx(np.mean(np.arange(6.0) ** 2), rel=1e-15)
    assert mse(p, t, axis=-1).shape == (1,) * 31 + (2,)
