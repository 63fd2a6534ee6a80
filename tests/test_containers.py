"""pandas, xarray and other array containers (docs/semantics.rst, Other array containers):
read through np.asarray, so a container gives bitwise what its array gives, and the
results are NumPy scalars and arrays, matched by position, never by label."""

from __future__ import annotations

import array
import re

import numpy as np
import pytest
import reference
from checks import assert_matches, assert_same
from fastmse import mse, mse_and_grad, mse_grad
from hypothesis import given, settings
from hypothesis import strategies as st

FUNCTIONS = [mse, mse_grad, mse_and_grad]
AXES_AND_REDUCTIONS = [(axis, reduction) for axis in (None, 0, -1) for reduction in ("mean", "sum", "none")]
AXES_AND_REDUCTIONS.remove((0, "none"))
AXES_AND_REDUCTIONS.remove((-1, "none"))


@pytest.fixture(scope="module")
def pd():
    return pytest.importorskip("pandas", reason="pandas is not installed: its containers are tested where it is")


@pytest.fixture(scope="module")
def xr():
    return pytest.importorskip("xarray", reason="xarray is not installed: its containers are tested where it is")


# A pandas dtype -> the NumPy dtype np.asarray gives for its data without missing values.
PANDAS_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "Float64": np.float64,
    "Int64": np.int64,
}


def _values(rng, shape, dtype):
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-9, 10, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _weights(rng, shape, dtype):
    if np.dtype(dtype).kind in "iu":
        return rng.integers(1, 5, shape).astype(dtype)
    return rng.uniform(0.5, 2.0, shape).astype(dtype)


def _container(pd, values, dtype):
    """`values` (1-D or 2-D) as a Series or DataFrame of the pandas `dtype`, with labels
    that are not positions."""
    if values.ndim == 1:
        return pd.Series(values, index=[f"r{i}" for i in range(len(values))], dtype=dtype)
    columns = [f"c{j}" for j in range(values.shape[1])]
    return pd.DataFrame(values, index=[f"r{i}" for i in range(len(values))], columns=columns).astype(dtype)


def _check_call(inputs, plain, axis, reduction, dtype):
    """The three functions on `inputs` (containers and arrays) against the float64 oracle
    on `plain` (the same values as ndarrays), and bitwise against the same calls on what
    np.asarray makes of `inputs` (in its layout: a column-wise frame may round its sums
    in another order than a row-major copy of it)."""
    dtype = np.dtype(dtype)
    gp, gt, gw = inputs
    p, t, w = (None if v is None else np.asarray(v) for v in inputs)
    for ours, theirs in zip((p, t, w), plain, strict=True):
        np.testing.assert_array_equal(ours, theirs, strict=True)
    kwargs = {"weights": gw, "axis": axis, "reduction": reduction}
    plain_kwargs = {"weights": w, "axis": axis, "reduction": reduction}
    expected = reference.loss(p, t, w, axis=axis, reduction=reduction)
    loss = mse(gp, gt, **kwargs)
    assert type(loss) is (np.ndarray if np.ndim(expected) else dtype.type), type(loss)
    assert_matches(loss, expected, dtype)
    assert_same(loss, mse(p, t, **plain_kwargs))
    grad = mse_grad(gp, gt, **kwargs)
    assert type(grad) is np.ndarray
    scale = reference.grad(p, t, w, axis=axis, reduction=reduction, absolute=True)
    assert_matches(grad, reference.grad(p, t, w, axis=axis, reduction=reduction), dtype, magnitude=scale)
    assert_same(grad, mse_grad(p, t, **plain_kwargs))
    fused_loss, fused_grad = mse_and_grad(gp, gt, **kwargs)
    assert_same(fused_loss, loss)
    assert_same(fused_grad, grad)
    if gw is None and reduction == "mean":  # the NumPy expression a user would write
        rtol = 1e-6 if dtype == np.float32 else 1e-13
        numpy_loss = np.mean((np.asarray(gp) - np.asarray(gt)) ** 2, axis=axis)
        np.testing.assert_allclose(loss, numpy_loss, rtol=rtol)
    return loss, grad


@pytest.mark.parametrize("dtype", list(PANDAS_DTYPES))
@pytest.mark.parametrize("ndim", [1, 2], ids=["Series", "DataFrame"])
@pytest.mark.parametrize("role", ["predictions", "targets", "weights", "all"])
def test_pandas_objects_give_what_their_arrays_give(pd, dtype, ndim, role):
    """Series and DataFrames as predictions, targets or weights, next to ndarrays: every
    axis and reduction, the NumPy result of np.asarray's array, no index or columns."""
    rng = np.random.default_rng(len(dtype) + 10 * ndim + 100 * len(role))
    # pandas 3 makes an object array of a frame with several nullable columns (see
    # test_frames_of_several_nullable_columns); one such column reads as its NumPy dtype.
    shape = (7,) if ndim == 1 else (7, 1) if dtype[0].isupper() else (7, 3)
    numpy_dtype = PANDAS_DTYPES[dtype]
    plain = [_values(rng, shape, numpy_dtype), _values(rng, shape, numpy_dtype), _weights(rng, shape, numpy_dtype)]
    inputs = list(plain)
    for index, name in enumerate(("predictions", "targets", "weights")):
        if role in (name, "all"):
            inputs[index] = _container(pd, plain[index], dtype)
            converted = np.asarray(inputs[index])
            assert converted.dtype == numpy_dtype
            np.testing.assert_array_equal(converted, plain[index])
    result_dtype = reference.result_dtype(plain[0], plain[1])
    for weighted in (False, True) if role != "weights" else (True,):
        for axis, reduction in AXES_AND_REDUCTIONS:
            if ndim == 1 and axis == -1:
                continue  # the same as axis=0
            g = inputs if weighted else [*inputs[:2], None]
            p = plain if weighted else [*plain[:2], None]
            _check_call(g, p, axis, reduction, result_dtype)


def test_pandas_keepdims_gives_arrays(pd):
    frame = pd.DataFrame(np.arange(12.0).reshape(4, 3))
    loss = mse(frame, 0.0, keepdims=True)
    assert type(loss) is np.ndarray
    assert loss.shape == (1, 1)
    loss, grad = mse_and_grad(frame, 1.0, axis=0, keepdims=True)
    assert type(loss) is np.ndarray
    assert loss.shape == (1, 3)
    assert type(grad) is np.ndarray
    assert grad.shape == (4, 3)


@pytest.mark.parametrize(
    ("columns", "converted"),
    [
        ({"a": np.float32, "b": np.float64}, np.float64),
        ({"a": np.float32, "b": np.float32}, np.float32),
        ({"a": np.float32, "b": np.int8}, np.float32),
        ({"a": np.int64, "b": np.float32}, np.float64),
        ({"a": np.int64, "b": np.uint8}, np.int64),
        ({"a": np.int64, "b": bool}, object),  # pandas makes an object array of these
    ],
    ids=["f32+f64", "f32+f32", "f32+i8", "i64+f32", "i64+u8", "i64+bool"],
)
def test_frames_with_mixed_column_dtypes(pd, columns, converted):
    """The dtype is the one np.asarray gives the frame (pandas combines the columns; the
    result then follows the usual rules), and a frame it makes an object array of is a
    TypeError naming that dtype."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({name: _values(rng, 6, np.int64).astype(dtype) for name, dtype in columns.items()})
    assert np.asarray(frame).dtype == converted
    if converted is object:
        for function in FUNCTIONS:
            with pytest.raises(TypeError, match="predictions has dtype object"):
                function(frame, np.zeros((6, 2)))
        return
    targets = rng.standard_normal((6, 2)).astype(np.float32)
    dtype = reference.result_dtype(np.asarray(frame), targets)
    for axis, reduction in AXES_AND_REDUCTIONS:
        loss, _ = _check_call((frame, targets, None), (np.asarray(frame), targets, None), axis, reduction, dtype)
        assert np.asarray(loss).dtype == (np.float32 if converted == np.float32 else np.float64)


@pytest.mark.parametrize("dtype", ["Float64", "Int64", "Float32"])
def test_frames_of_several_nullable_columns(pd, dtype):
    """pandas 3 makes an object array of a frame of several nullable columns, even without
    missing values (one such column, or a Series, gives its NumPy dtype): fastmse reads
    what np.asarray gives, so it computes or raises a TypeError naming dtype object, never
    a wrong number; ``to_numpy(dtype=float, na_value=np.nan)`` reads every such frame."""
    rng = np.random.default_rng(12)
    values = _values(rng, (5, 3), np.int64)
    frame = pd.DataFrame(values).astype(dtype)
    converted = np.asarray(frame)
    targets = np.zeros((5, 3))
    if converted.dtype == object:
        for function in FUNCTIONS:
            with pytest.raises(TypeError, match="predictions has dtype object"):
                function(frame, targets)
    else:
        dtype = reference.result_dtype(converted, targets)
        _check_call((frame, targets, None), (values.astype(converted.dtype), targets, None), -1, "mean", dtype)
    readable = frame.to_numpy(dtype=float, na_value=np.nan)
    _check_call((readable, targets, None), (values.astype(float), targets, None), -1, "mean", np.float64)


def _layouts(pd, rng):
    """Containers whose arrays are not C-contiguous: (name, container)."""
    base = rng.standard_normal((8, 3))
    shared = pd.DataFrame(base, copy=False)
    columnwise = pd.DataFrame({f"c{j}": rng.standard_normal(8) for j in range(3)})
    return [
        ("column-wise DataFrame", columnwise),
        ("Series of every third value", pd.Series(rng.standard_normal(30)[::3], copy=False)),
        ("column of a row-major frame", shared[1]),
        ("row of a column-wise frame", columnwise.iloc[2]),
        ("reversed Series", pd.Series(rng.standard_normal(9), copy=False).iloc[::-1]),
    ]


def test_non_contiguous_containers(backend, pd):
    """Column-wise frames (Fortran order) and strided Series views are read in their
    layout, on every backend, with the reference's result."""
    rng = np.random.default_rng(8)
    for name, container in _layouts(pd, rng):
        converted = np.asarray(container)
        assert not converted.flags.c_contiguous, name
        targets = rng.standard_normal(converted.shape)
        weights = rng.uniform(0.5, 2.0, converted.shape[-1:])
        for axis, reduction in AXES_AND_REDUCTIONS:
            if converted.ndim == 1 and axis == -1:
                continue
            _check_call((container, targets, None), (converted, targets, None), axis, reduction, np.dtype(np.float64))
            _check_call((targets, container, weights), (targets, converted, weights), axis, reduction, np.float64)


def test_operands_are_matched_by_position_not_by_label(pd):
    """pandas aligns `p - t` by index and columns; fastmse, like np.asarray, does not."""
    p = pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"])
    t = pd.Series([3.0, 2.0, 1.0], index=["c", "b", "a"])
    assert ((p - t) ** 2).mean() == 0.0  # pandas, aligned: the same values
    assert mse(p, t) == np.mean((np.asarray(p) - np.asarray(t)) ** 2) == 8.0 / 3.0
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [5.0, 7.0]})
    swapped = frame[["y", "x"]]
    np.testing.assert_array_equal(mse(frame, swapped, axis=0), [20.5, 20.5])
    # A Series broadcasts as NumPy broadcasts its array: along the frame's last axis.
    np.testing.assert_array_equal(mse(frame, pd.Series([1.0, 5.0], index=["y", "x"]), axis=0), [0.5, 2.0])


MISSING = {
    "Float64": [0.5, 2.0, None, 4.0],
    "Float32": [0.5, 2.0, None, 4.0],
    "Int64": [1, 2, None, 4],
    "boolean": [True, False, None, True],
    "object": [0.5, 2.0, "NA", 4.0],
}


@pytest.mark.parametrize("dtype", list(MISSING))
@pytest.mark.parametrize("role", ["predictions", "targets", "weights"])
def test_missing_values_give_nan_or_a_type_error(pd, dtype, role):
    """pd.NA is what np.asarray makes of it: NaN (pandas 3's nullable float and integer
    columns), which propagates, or an object array, a TypeError naming the dtype. Never a
    finite number computed from something else."""
    values = [pd.NA if v == "NA" else v for v in MISSING[dtype]]
    series = pd.Series(values, dtype=dtype)
    assert series.isna().iloc[2]
    converted = np.asarray(series)
    args = {"predictions": np.full(4, 0.25), "targets": np.zeros(4), "weights": None}
    args[role] = series

    def run(function, **kwargs):
        return function(args["predictions"], args["targets"], weights=args["weights"], **kwargs)

    if converted.dtype.kind not in "biuf":
        for function in FUNCTIONS:
            with pytest.raises(TypeError, match=re.escape(f"{role} has dtype {converted.dtype};")):
                run(function)
        return
    assert converted.dtype.kind == "f"
    assert np.isnan(converted[2])
    assert np.isnan(run(mse))
    assert np.isnan(run(mse, reduction="sum"))
    loss, grad = run(mse_and_grad, reduction="sum")
    assert np.isnan(loss)
    assert np.isnan(grad[2])
    assert np.isfinite(np.delete(grad, 2)).all()
    elementwise = run(mse, reduction="none")
    assert type(elementwise) is np.ndarray
    assert np.isnan(elementwise[2])
    assert np.isfinite(np.delete(elementwise, 2)).all()


def test_missing_values_can_be_masked_out(pd):
    """The documented way to skip missing values as Series.mean() does: a masked array."""
    p = pd.Series([1.0, 2.0, None, 4.0], dtype="Float64")
    t = pd.Series([0.0, 1.0, 1.0, 1.0])
    masked = np.ma.masked_invalid(p.to_numpy(dtype=float, na_value=np.nan))
    assert mse(masked, t) == pytest.approx(((p - t) ** 2).mean(), rel=1e-15)
    np.testing.assert_allclose(mse_grad(masked, t), [2 / 3, 2 / 3, 0.0, 2.0], rtol=1e-15)


def test_other_pandas_dtypes(pd):
    """Categoricals of numbers and sparse columns are their values; dates, durations and
    strings are a TypeError naming the dtype np.asarray gives."""
    zeros = np.zeros(3)
    assert mse(pd.Series([1, 2, 3], dtype="category"), zeros) == pytest.approx(14 / 3)
    assert mse(pd.Series([1.0, 2.0, 3.0], dtype="Sparse[float64]"), zeros) == pytest.approx(14 / 3)
    assert mse(pd.Series([1, 0, 1], dtype="boolean"), zeros) == pytest.approx(2 / 3)
    for series in (
        pd.Series(pd.to_datetime(["2020", "2021", "2022"])),
        pd.Series(pd.to_timedelta([1, 2, 3], unit="s")),
        pd.Series(["a", "b", "c"]),
        pd.Series(["a", "b", "c"], dtype="category"),
    ):
        with pytest.raises(TypeError, match=re.escape(f"predictions has dtype {np.asarray(series).dtype};")):
            mse(series, zeros)


def _refused_as_out(out):
    """`out` (a container of zeros) is a TypeError for mse_grad and mse_and_grad, and is
    left as it was."""
    p, t = np.arange(6.0).reshape(out.shape), np.ones(out.shape)
    for function in (mse_grad, mse_and_grad):
        with pytest.raises(TypeError, match=f"out must be a NumPy array, not {type(out).__name__}"):
            function(p, t, out=out)
    assert (np.asarray(out) == 0).all()


def test_pandas_objects_are_not_taken_as_out(pd):
    """`out` is a NumPy array: a Series or DataFrame there is a TypeError; the arrays
    pandas 3 hands out (read-only, copy-on-write) are a ValueError."""
    _refused_as_out(pd.DataFrame(np.zeros((3, 2))))
    _refused_as_out(pd.Series(np.zeros(6)))
    p, t = np.arange(6.0).reshape(3, 2), np.ones((3, 2))
    expected = mse_grad(p, t)
    frame = pd.DataFrame(np.zeros((3, 2)))
    values = frame.to_numpy()
    if values.flags.writeable:  # pandas without copy-on-write
        assert mse_grad(p, t, out=values) is values
        np.testing.assert_array_equal(values, expected)
    else:
        with pytest.raises(ValueError, match="out is read-only"):
            mse_grad(p, t, out=values)
        assert (frame.to_numpy() == 0).all()


@pytest.mark.parametrize("ndim", [1, 2], ids=["Series", "DataFrame"])
def test_out_may_be_the_array_a_container_views(pd, ndim):
    """A container made without a copy reads the array it wraps: that array as `out` is
    the exact alias the contract allows (the gradient computed in place)."""
    rng = np.random.default_rng(4)
    shape = (9,) if ndim == 1 else (9, 2)
    p, t = rng.standard_normal(shape), rng.standard_normal(shape)
    expected = mse_and_grad(p, t)
    buffer = p.copy()
    container = pd.Series(buffer, copy=False) if ndim == 1 else pd.DataFrame(buffer, copy=False)
    assert np.shares_memory(np.asarray(container), buffer)
    loss, grad = mse_and_grad(container, t, out=buffer)
    assert grad is buffer
    assert_same(loss, expected[0])
    assert_same(grad, expected[1])


def test_xarray_data_arrays(xr):
    """A DataArray is its values: axes by position, results NumPy, no dims or coords."""
    rng = np.random.default_rng(6)
    p, t = rng.standard_normal((2, 5, 4)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, (5, 1))
    coords = {"sample": np.arange(5), "feature": list("abcd")}
    dp = xr.DataArray(p, dims=("sample", "feature"), coords=coords)
    dt = xr.DataArray(t, dims=("sample", "feature"), coords=coords)
    dw = xr.DataArray(w, dims=("sample", "one"))
    for inputs, plain in (((dp, dt, None), (p, t, None)), ((dp, t, dw), (p, t, w)), ((p, dt, dw), (p, t, w))):
        for axis, reduction in AXES_AND_REDUCTIONS:
            _check_call(inputs, plain, axis, reduction, np.dtype(np.float32))
    # By position: the transpose is another shape, not the same data relabelled.
    with pytest.raises(ValueError, match=r"\(5, 4\), \(4, 5\)"):
        mse(dp, dt.transpose("feature", "sample"))
    assert type(mse(xr.Variable(("x", "y"), p), t)) is np.float32
    _refused_as_out(xr.DataArray(np.zeros((3, 2))))


def test_xarray_datasets_are_refused(xr):
    """A Dataset holds several arrays, none of which is the data: a TypeError naming the
    argument, before anything runs."""
    dataset = xr.Dataset({"v": (("x", "y"), np.ones((3, 2)))})
    plain = np.ones((3, 2))
    for name in ("predictions", "targets", "weights"):
        args = {"predictions": plain, "targets": plain, "weights": None, name: dataset}
        for function in FUNCTIONS:
            with pytest.raises(TypeError, match=f"{name} could not be converted to an array"):
                function(args["predictions"], args["targets"], weights=args["weights"])


class OnlyArray:
    """An object with nothing but a NumPy 1 style __array__ (no keywords)."""

    def __init__(self, values):
        self.values = values

    def __array__(self):
        return self.values


class NumPy2Array:
    """__array__ with the dtype and copy keywords NumPy 2 passes."""

    def __init__(self, values):
        self.values = values

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self.values, dtype=dtype)
        return self.values if dtype is None else self.values.astype(dtype)


@pytest.mark.parametrize("kind", [OnlyArray, NumPy2Array])
def test_objects_with_array_method(kind):
    rng = np.random.default_rng(2)
    p, t = rng.standard_normal((2, 6, 3)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, (6, 1))
    for inputs, plain in (((kind(p), t, None), (p, t, None)), ((p, kind(t), kind(w)), (p, t, w))):
        for axis, reduction in AXES_AND_REDUCTIONS:
            _check_call(inputs, plain, axis, reduction, np.dtype(np.float32))


def test_lists_buffers_and_scalars():
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]]
    _check_call((rows, np.zeros((3, 2)), None), (np.array(rows), np.zeros((3, 2)), None), -1, "mean", np.float64)
    assert type(mse([[1, 2], [3, 4]], [[0, 0], [0, 0]])) is np.float64  # integers give float64
    assert mse([True, False], [False, False]) == 0.5
    singles = array.array("f", [1.0, 2.0, 3.0])
    zeros32 = np.zeros(3, np.float32)
    for buffer in (singles, memoryview(singles)):
        loss, grad = mse_and_grad(buffer, zeros32)
        assert type(loss) is np.float32
        assert loss == np.float32(14 / 3)
        np.testing.assert_array_equal(grad, np.array([2, 4, 6], np.float32) / np.float32(3), strict=True)
    assert mse(array.array("d", [1.0, 2.0, 3.0]), zeros32) == pytest.approx(14 / 3, rel=1e-15)
    assert mse(memoryview(np.arange(6.0).reshape(2, 3)), 0.0, axis=0).tolist() == [4.5, 8.5, 14.5]
    for scalar, dtype in (
        (3.0, np.float64),
        (np.float32(3.0), np.float32),
        (np.array(3.0), np.float64),
        (3, np.float64),
    ):
        loss, grad = mse_and_grad(scalar, 1.0)
        assert type(loss) is dtype
        assert loss == 4.0
        assert type(grad) is np.ndarray
        assert grad.shape == ()
        assert grad == 4.0
        assert type(mse(scalar, 1.0, reduction="none")) is dtype


def test_what_np_asarray_cannot_read_is_a_type_error():
    for inputs, match in (
        ([[1.0, 2.0], [3.0]], "predictions could not be converted to an array"),
        ([1.0, None], "predictions has dtype object"),
        (b"abc", "predictions has dtype |S3"),
        ({"a": 1.0}, "predictions has dtype object"),
    ):
        for function in FUNCTIONS:
            with pytest.raises(TypeError, match=re.escape(match)):
                function(inputs, 0.0)


_NUMPY_COLUMN_DTYPES = ["float32", "float64", "int32", "int64", "bool"]


@settings(max_examples=25)
@given(
    columns=st.lists(st.sampled_from(_NUMPY_COLUMN_DTYPES), min_size=1, max_size=4),
    rows=st.integers(1, 6),
    axis=st.sampled_from([None, 0, 1, -1, (0, 1)]),
    reduction=st.sampled_from(["mean", "sum"]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_frame_is_its_array(pd, columns, rows, axis, reduction, weighted, seed):
    """Whatever its column dtypes, a DataFrame gives what np.asarray of it gives: the same
    bits, or the same TypeError where pandas makes an object array."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"c{j}": _values(rng, rows, np.int64).astype(dtype) for j, dtype in enumerate(columns)})
    converted = np.asarray(frame)
    targets = rng.standard_normal((rows, len(columns))).astype(np.float32)
    weights = pd.Series(rng.uniform(0.5, 2.0, len(columns))) if weighted else None
    plain_weights = None if weights is None else np.asarray(weights)
    if converted.dtype == object:
        with pytest.raises(TypeError, match="predictions has dtype object"):
            mse(frame, targets, weights=weights, axis=axis, reduction=reduction)
        return
    dtype = reference.result_dtype(converted, targets)
    _check_call((frame, targets, weights), (converted, targets, plain_weights), axis, reduction, dtype)
