"""mse, mse_grad and mse_and_grad against the float64 oracle, on every backend."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import reference
from checks import assert_matches, assert_same, call
from fastmse import mse, mse_and_grad, mse_grad
from hypothesis import given
from hypothesis import strategies as st
from strategies import calls


@given(case=calls(), keepdims=st.booleans())
def test_loss_matches_reference(backend, case, keepdims):
    predictions, targets, kwargs = case
    dtype = reference.result_dtype(predictions, targets)
    result = call(mse, predictions, targets, {**kwargs, "keepdims": keepdims})
    expected = reference.loss(predictions, targets, keepdims=keepdims and kwargs["reduction"] != "none", **kwargs)
    assert_matches(result, expected, dtype)
    if np.ndim(expected) == 0:
        assert isinstance(result, np.generic), type(result)
    else:
        assert isinstance(result, np.ndarray)


@given(case=calls())
def test_gradient_matches_reference(backend, case):
    predictions, targets, kwargs = case
    dtype = reference.result_dtype(predictions, targets)
    result = call(mse_grad, predictions, targets, kwargs)
    expected = reference.grad(predictions, targets, **kwargs)
    magnitude = reference.grad(predictions, targets, absolute=True, **kwargs)
    assert isinstance(result, np.ndarray)
    assert_matches(result, expected, dtype, magnitude=magnitude)


@given(case=calls(), keepdims=st.booleans())
def test_fused_equals_separate_calls(backend, case, keepdims):
    predictions, targets, kwargs = case
    loss, grad = call(mse_and_grad, predictions, targets, {**kwargs, "keepdims": keepdims})
    assert_same(loss, call(mse, predictions, targets, {**kwargs, "keepdims": keepdims}))
    assert_same(grad, call(mse_grad, predictions, targets, kwargs))


@given(case=calls(allow_empty=False))
def test_out_receives_the_gradient(backend, case):
    predictions, targets, kwargs = case
    dtype = reference.result_dtype(predictions, targets)
    out = np.full(np.shape(predictions), 7, dtype)[..., ::-1] if np.ndim(predictions) else np.full((), 7, dtype)
    returned = call(lambda p, t, **k: mse_grad(p, t, out=out, **k), predictions, targets, kwargs)
    assert returned is out
    assert_same(out, call(mse_grad, predictions, targets, kwargs))


def test_numpy_expressions_agree(backend):
    rng = np.random.default_rng(1)
    p = rng.standard_normal((64, 10))
    t = rng.standard_normal((64, 10))
    np.testing.assert_allclose(mse(p, t), np.mean((p - t) ** 2), rtol=1e-14)
    np.testing.assert_allclose(mse(p, t, axis=-1), np.mean((p - t) ** 2, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(mse(p, t, axis=0), np.mean((p - t) ** 2, axis=0), rtol=1e-14)
    np.testing.assert_allclose(mse_grad(p, t), 2 * (p - t) / p.size, rtol=1e-14)
    np.testing.assert_allclose(mse_grad(p, t, axis=-1), 2 * (p - t) / p.shape[1], rtol=1e-14)
    np.testing.assert_allclose(mse(p, t, reduction="sum"), np.sum((p - t) ** 2), rtol=1e-14)
    np.testing.assert_allclose(mse(p, t, reduction="none"), (p - t) ** 2, rtol=1e-15)
    w = rng.uniform(size=(64, 1))
    np.testing.assert_allclose(
        mse(p, t, weights=w), np.average((p - t) ** 2, weights=np.broadcast_to(w, p.shape)), rtol=1e-14
    )


def test_keepdims_shapes(backend):
    p = np.ones((2, 3, 4))
    assert mse(p, 0 * p, keepdims=True).shape == (1, 1, 1)
    assert mse(p, 0 * p, axis=1, keepdims=True).shape == (2, 1, 4)
    assert mse(p, 0 * p, axis=(0, 2)).shape == (3,)
    assert mse(p, 0 * p, axis=()).shape == (2, 3, 4)


def test_array_likes_and_scalars(backend):
    assert mse([1, 2, 3], [1, 2, 5]) == pytest.approx(4 / 3)
    assert mse(3.0, 1.0) == 4.0
    assert isinstance(mse(3.0, 1.0), np.float64)
    np.testing.assert_array_equal(mse_grad([[1.0, 3.0]], [[0.0, 0.0]], axis=-1), [[1.0, 3.0]])


def test_gradient_of_broadcast_predictions_sums_over_the_broadcast(backend):
    p = np.array([1.0, 2.0, 3.0])
    t = np.arange(12.0).reshape(4, 3)
    expected = np.sum(2 * (p - t) / t.size, axis=0)
    np.testing.assert_allclose(mse_grad(p, t), expected, rtol=1e-14)


def test_empty_and_nonfinite(backend):
    with pytest.warns(RuntimeWarning, match="mean over zero elements"):
        assert np.isnan(mse(np.empty(0), np.empty(0)))
    assert mse(np.empty(0), np.empty(0), reduction="sum") == 0.0
    with pytest.warns(RuntimeWarning, match="mean over zero elements"):
        assert np.isnan(mse(np.empty((0, 3)), np.empty((0, 3)), axis=0)).all()
    assert mse(np.empty((0, 3)), np.empty((0, 3)), axis=1).shape == (0,)
    assert mse_grad(np.empty((0, 3)), np.empty((0, 3))).shape == (0, 3)
    with pytest.warns(RuntimeWarning, match="weights that sum to zero"):
        assert np.isnan(mse(np.ones(3), np.zeros(3), weights=np.zeros(3)))
    assert np.isnan(mse(np.array([1.0, np.nan]), np.zeros(2)))
    assert mse(np.array([1.0, np.inf]), np.zeros(2)) == np.inf
    assert np.isnan(mse(np.array([np.inf]), np.array([np.inf])))
    grad = mse_grad(np.array([1.0, np.nan, np.inf]), np.zeros(3), reduction="sum")
    np.testing.assert_array_equal(grad, [2.0, np.nan, np.inf])


# (shape, weights' shape, axis) where the weights are constant along the summed axes.
CANCELLING_WEIGHTS = (
    ((37, 10), (37, 1), -1),  # weights per sample, a loss per sample
    ((300, 7), (1, 7), 0),  # weights per column, a loss per column
    ((6, 4, 5), (6, 1, 5), 1),  # kept dimensions on both sides
    ((4, 3, 2), (4, 1, 1), (1, 2)),  # several summed axes
    ((3,), (5, 1), -1),  # the weights alone give the outputs
)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_weights_constant_along_the_summed_axes_cancel_from_the_mean(backend, dtype):
    """w * sum(e) / (w * count) at each output: the plain mean, computed without the
    weights, wherever they are positive and finite; a zero weight still gives nan there
    (with the warning), and an inf or a nan weight nan, as the weighted formula does,
    while the other outputs stay the plain mean's, bitwise (one weight does not change the
    outputs of the others)."""
    rng = np.random.default_rng(9)
    for shape, weights_shape, axis in CANCELLING_WEIGHTS:
        p = rng.standard_normal(shape).astype(dtype)
        t = rng.standard_normal(shape).astype(dtype)
        w = rng.uniform(0.1, 2.0, weights_shape).astype(dtype)
        loss, grad = mse_and_grad(p, t, weights=w, axis=axis)
        assert_matches(loss, reference.loss(p, t, weights=w, axis=axis), dtype)
        expected_grad = reference.grad(p, t, weights=w, axis=axis)
        assert_matches(grad, expected_grad, dtype, magnitude=reference.grad(p, t, weights=w, axis=axis, absolute=True))
        # Bitwise the unweighted call, broadcast to the weights' outputs.
        full = np.broadcast_shapes(shape, weights_shape)
        p_full, t_full = np.broadcast_to(p, full), np.broadcast_to(t, full)
        assert_same(mse(p, t, weights=w, axis=axis), mse(p_full, t_full, axis=axis))
        if p.shape == full:
            assert_same(grad, mse_grad(p, t, axis=axis))
            assert_same(mse_grad(p, t, weights=w, axis=axis), grad)
        for bad in (0.0, np.inf, np.nan):
            w_bad = w.copy()
            w_bad.flat[0] = bad
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with np.errstate(invalid="ignore"):
                    loss_bad, grad_bad = mse_and_grad(p, t, weights=w_bad, axis=axis)
                    expected = reference.loss(p, t, weights=w_bad, axis=axis)
            assert any("weights that sum to zero" in str(c.message) for c in caught) == (bad == 0.0)
            spoiled = np.isnan(loss_bad)
            np.testing.assert_array_equal(spoiled, np.isnan(expected))
            assert spoiled.any()
            assert not spoiled.all()
            assert_matches(loss_bad[~spoiled], expected[~spoiled], dtype)
            assert np.isnan(grad_bad).any()
            if p.shape == full:
                plain_loss, plain_grad = mse_and_grad(p, t, axis=axis)
                assert_same(loss_bad[~spoiled], plain_loss[~spoiled])
                with np.errstate(invalid="ignore"):
                    spoiled_positions = np.broadcast_to(~((w_bad > 0) & (w_bad < np.inf)), full)
                np.testing.assert_array_equal(np.isnan(grad_bad), spoiled_positions)
                assert_same(grad_bad[~spoiled_positions], plain_grad[~spoiled_positions])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    assert_same(mse_grad(p, t, weights=w_bad, axis=axis), grad_bad)


def test_cancelling_weights_with_a_zero_beside_predictions_of_fewer_dimensions(backend):
    """The gradient has the predictions' shape, without the leading dimensions of 1 that
    the targets or weights add: nan at a zero weight's row, the plain gradient elsewhere.
    No outputs, no warning."""
    rng = np.random.default_rng(4)
    p, t = rng.standard_normal((2, 3)), rng.standard_normal((1, 2, 3))
    weights = np.array([[0.0], [1.5]])
    with pytest.warns(RuntimeWarning, match="weights that sum to zero"):
        loss, grad = mse_and_grad(p, t, weights=weights, axis=-1)
    plain_loss, plain_grad = mse_and_grad(p, t, axis=-1)
    assert grad.shape == p.shape
    assert loss.shape == plain_loss.shape == (1, 2)
    assert np.isnan(grad[0]).all()
    assert np.isnan(loss[0, 0])
    assert_same(grad[1], plain_grad[1])
    assert_same(loss[0, 1], plain_loss[0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mse(np.ones((0, 3)), np.zeros((0, 3)), weights=np.zeros((1, 1)), axis=-1).shape == (0,)
        assert mse_grad(np.ones((0, 3)), np.zeros((0, 3)), weights=np.zeros((1, 1)), axis=-1).shape == (0, 3)
        # A wrong `out` is named first, before the zero weight's warning (here an error).
        out = np.full((2, 2), 7.0)
        with pytest.raises(ValueError, match="out has shape"):
            mse_and_grad(p, t, weights=weights, axis=-1, out=out)
        assert (out == 7.0).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_a_loss_per_position_is_the_squared_error(backend, dtype, reduction, keepdims):
    """Outputs of one position ((N, 1) with axis=-1) skip the float64 sums: the result is
    still the reference rounded once, and bitwise what mse_and_grad returns."""
    rng = np.random.default_rng(5)
    p = rng.standard_normal((300, 1)).astype(dtype)
    t = rng.standard_normal((300, 1)).astype(dtype)
    p[:4, 0], t[:4, 0] = [np.inf, -0.0, 120.0, np.nan], [np.inf, 0.0, -120.0, 1.0]
    with np.errstate(invalid="ignore", over="ignore"):
        loss = mse(p, t, axis=-1, reduction=reduction, keepdims=keepdims)
        fused, _ = mse_and_grad(p, t, axis=-1, reduction=reduction, keepdims=keepdims)
        expected = (p.astype(np.float64) - t.astype(np.float64)) ** 2
    assert loss.shape == ((300, 1) if keepdims else (300,))
    assert_matches(loss, expected.reshape(loss.shape), dtype)
    assert_same(loss, fused)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("orders", ["F inputs, C out", "C inputs, F out", "targets transposed"])
def test_gradients_where_inputs_and_out_disagree_on_order(backend, dtype, orders):
    """Inputs and `out` with different dimensions contiguous (which the C++ kernels walk
    in tiles, the loss of mse_and_grad in a pass of its own): the gradient is bitwise that
    of C-ordered inputs and `out`, on ragged tiles and past them, and the loss mse's."""
    rng = np.random.default_rng(8)
    shape = (70, 45)
    p, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    p[3, 4], t[5, 6], p[40, 44] = np.nan, np.inf, -0.0
    w = rng.random(shape).astype(dtype)
    inputs = {
        "F inputs, C out": (np.asfortranarray(p), np.asfortranarray(t)),
        "C inputs, F out": (p, t),
        "targets transposed": (p, np.asfortranarray(t)),
    }[orders]
    for kwargs in ({}, {"axis": -1}, {"axis": 0}, {"weights": w, "axis": -1}, {"weights": w[:, :1]}):
        out = np.empty(shape[::-1], dtype).T if orders == "C inputs, F out" else np.empty(shape, dtype)
        with np.errstate(invalid="ignore"):
            expected_grad = mse_grad(p, t, **kwargs)
            expected_loss = mse(*inputs, **kwargs)
            assert_same(mse_grad(*inputs, out=out, **kwargs), expected_grad)
            out[...] = 7
            loss, grad = mse_and_grad(*inputs, out=out, **kwargs)
        assert grad is out
        assert_same(grad, expected_grad)
        assert_same(loss, expected_loss)


@pytest.mark.parametrize("weights", [None, "per sample", "per column"], ids=["plain", "w per sample", "w per column"])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "predictions"])
def test_fused_loss_ignores_the_layout_of_out(backend, weights, layout):
    """mse_and_grad's loss is bitwise mse's whatever `out` looks like in memory: an `out`
    that keeps dimensions apart must not change how the loss is summed. The same holds for
    an input that is a strided view of the same values."""
    rng = np.random.default_rng(11)
    p, t = rng.standard_normal((57, 9)), rng.standard_normal((57, 9))
    w = {None: None, "per sample": rng.random((57, 1)), "per column": rng.random(9)}[weights]
    expected = mse(p, t, weights=w)
    out = {
        "C": np.empty((57, 9)),
        "F": np.empty((9, 57)).T,
        "strided": np.empty((57, 18))[:, ::2],
        "predictions": p.copy(),
    }[layout]
    predictions = out if layout == "predictions" else p
    loss, grad = mse_and_grad(predictions, t, weights=w, out=out)
    assert_same(loss, expected)
    assert grad is out
    wide = np.zeros((57, 18))
    wide[:, ::2] = t
    assert_same(mse(p, wide[:, ::2], weights=w), expected)


def _misaligned(values: np.ndarray) -> np.ndarray:
    """A copy of `values` whose first element sits one byte past an aligned address (as
    arrays unpickled from a byte stream on a Dask worker often do)."""
    buffer = np.zeros(values.nbytes + values.itemsize, np.uint8)
    copy = buffer[1 : 1 + values.nbytes].view(values.dtype).reshape(values.shape)
    copy[...] = values
    assert not copy.flags.aligned
    return copy


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_gradients_into_out_at_every_element_offset(backend, dtype):
    """`out` may start anywhere in a vector (the compiled walk aligns its stores to it, and
    walks a C-ordered batch with one gradient factor as one flat run): each offset, over
    everything and per row, weighted per sample or not, gives the gradient written into a
    fresh array, and the reference's. Lengths leave a ragged end and span several tasks."""
    rng = np.random.default_rng(17)
    p = rng.standard_normal((4099, 10)).astype(dtype)
    t = rng.standard_normal((4099, 10)).astype(dtype)
    p[3, :4] = [np.nan, 1.0, -0.0, 0.0]
    t[3, 2:4] = [0.0, -0.0]
    w = rng.uniform(0.5, 1.5, (4099, 1))
    for kwargs in ({}, {"axis": -1}, {"axis": -1, "reduction": "sum"}, {"weights": w}, {"axis": 0}):
        fresh = mse_grad(p, t, **kwargs)
        assert_matches(
            fresh,
            reference.grad(p, t, **kwargs),
            dtype,
            magnitude=reference.grad(p, t, absolute=True, **kwargs),
        )
        for offset in range(9):
            buffer = np.full(p.size + 9, 7.0, dtype)
            out = buffer[offset : offset + p.size].reshape(p.shape)
            assert mse_grad(p, t, out=out, **kwargs) is out
            np.testing.assert_array_equal(out, fresh, strict=True)
            assert (buffer[:offset] == 7.0).all()
            assert (buffer[offset + p.size :] == 7.0).all()


@pytest.mark.parametrize(("dtype", "n"), [(np.float32, (1 << 23) + 3), (np.float64, (1 << 22) + 5)])
def test_large_gradients_at_any_offset_of_out(backend, dtype, n):
    """Gradients of 24 MiB and more (whose stores the compiled walk streams past the cache
    where they are aligned) are 2 / n * (p - t) rounded once, at any offset of `out`, with
    nothing written around it, and in place; the fused pass's loss is `mse`'s."""
    rng = np.random.default_rng(23)
    p, t = rng.standard_normal((2, n)).astype(dtype)
    expected = (2.0 / n * (p.astype(np.float64) - t.astype(np.float64))).astype(dtype)
    loss = mse(p, t)
    for offset in (0, 1, 2, 3):
        for fused in (False, True):
            buffer = np.full(n + 4, 7.0, dtype)
            out = buffer[offset : offset + n]
            if fused:
                assert_same(mse_and_grad(p, t, out=out)[0], loss)
            else:
                mse_grad(p, t, out=out)
            np.testing.assert_array_equal(out, expected, strict=True)
            assert (buffer[:offset] == 7.0).all()
            assert (buffer[offset + n :] == 7.0).all()
    in_place = p.copy()  # stored plainly: the line just read is in cache
    assert_same(mse_and_grad(in_place, t, out=in_place)[0], loss)
    np.testing.assert_array_equal(in_place, expected, strict=True)


@pytest.mark.parametrize(
    ("shape", "axis", "target_shape", "dtype"),
    [
        ((629146, 10), -1, None, np.float32),  # rows in groups of four
        ((699051, 9), -1, None, np.float32),  # groups of four rows, staged and streamed by Numba
        ((524288, 12), -1, None, np.float32),  # aligned rows whose last positions are 16 bytes
        ((2097152, 3), -1, None, np.float32),  # rows packed four to a vector
        ((62915, 100), -1, None, np.float32),  # rows one by one
        ((393216, 16), -1, None, np.float32),  # rows of whole vectors, which Numba streams too
        ((393216, 16), 0, None, np.float32),  # across outputs
        ((2097152, 3), 0, None, np.float32),  # across outputs, narrow
        ((393216, 16), None, (16,), np.float32),  # a target per column over everything
        ((629146, 10), None, (10,), np.float32),  # a target per column of rows with tails
        ((314573, 10), -1, None, np.float64),
        ((349526, 9), -1, None, np.float64),
    ],
)
def test_large_gradients_over_rows_at_any_offset_of_out(backend, shape, axis, target_shape, dtype):
    """Gradients of 24 MiB and more over rows, columns and broadcast targets (whose stores
    the compiled walks stream where they are aligned) are 2 / count * (p - t) rounded once
    at any offset of `out`, with nothing written around it, into rows of `out` with gaps
    between them, and in place (`out` the predictions or the targets); the fused loss is
    `mse`'s."""
    rng = np.random.default_rng(shape[1])
    p = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(target_shape or shape).astype(dtype)
    count = p.size if axis is None else shape[axis]
    expected = (2.0 / count * (p.astype(np.float64) - t.astype(np.float64))).astype(dtype)
    loss = mse(p, t, axis=axis)
    for offset in (0, 1, 2, 3):
        buffer = np.full(p.size + 4, 7.0, dtype)
        out = buffer[offset : offset + p.size].reshape(shape)
        for fused in (False, True):
            out.fill(0)
            if fused:
                assert_same(mse_and_grad(p, t, axis=axis, out=out)[0], loss)
            else:
                mse_grad(p, t, axis=axis, out=out)
            np.testing.assert_array_equal(out, expected, strict=True)
            assert (buffer[:offset] == 7.0).all()
            assert (buffer[offset + p.size :] == 7.0).all()
    padded = np.full((shape[0], shape[1] + 4), 7.0, dtype)  # rows 16 bytes or more apart
    assert_same(mse_and_grad(p, t, axis=axis, out=padded[:, : shape[1]])[0], loss)
    np.testing.assert_array_equal(padded[:, : shape[1]], expected, strict=True)
    assert (padded[:, shape[1] :] == 7.0).all()
    # In place, where the compiled walks store plainly: the line just read is in cache.
    in_place = p.copy()
    assert_same(mse_and_grad(in_place, t, axis=axis, out=in_place)[0], loss)
    np.testing.assert_array_equal(in_place, expected, strict=True)
    if target_shape is None:
        in_place = t.copy()
        mse_grad(p, in_place, axis=axis, out=in_place)
        np.testing.assert_array_equal(in_place, expected, strict=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_misaligned_inputs_are_read_in_place(backend, dtype):
    """Inputs at any address give the bits of their aligned copies, and the compiled and
    Numba backends read them where they are (a copy of either would show in the peak)."""
    rng = np.random.default_rng(5)
    n, k = 1 << 16, 16
    p, t = rng.standard_normal((2, n // k, k)).astype(dtype)
    w = rng.uniform(0.5, 1.5, (n // k, 1))
    mp, mt, mw = _misaligned(p), _misaligned(t), _misaligned(w)
    for kwargs, misaligned_kwargs in (({}, {}), ({"axis": -1, "weights": w}, {"axis": -1, "weights": mw})):
        assert_same(mse(mp, mt, **misaligned_kwargs), mse(p, t, **kwargs))
        assert_same(mse_grad(mp, mt, **misaligned_kwargs), mse_grad(p, t, **kwargs))
        for ours, aligned in zip(mse_and_grad(mp, mt, **misaligned_kwargs), mse_and_grad(p, t, **kwargs), strict=True):
            assert_same(ours, aligned)
    if backend.name == "numpy":  # NumPy's expressions make temporaries anyway
        return
    mse(mp, mt)  # first-call costs (Numba's compilation) out of the measurement
    tracemalloc.start()
    try:
        mse(mp, mt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < p.nbytes // 4, peak


@pytest.mark.parametrize(
    ("shape", "weights_shape", "axis"),
    [
        ((7, 1), (7, 1), -1),  # an output per position, its own weight: the plan keeps one dimension
        ((1, 7), (1, 7), 0),
        ((6, 5), (6, 1), None),  # a weight per sample broadcast along short rows
        ((6, 5), (5,), None),  # a weight per column
        ((3, 4, 5), (3, 1, 5), 1),
    ],
)
def test_elementwise_passes_scale_each_position_by_its_own_output(backend, shape, weights_shape, axis):
    """The gradient's factor 2 / sum(w) belongs to the position's output, however the
    kernels walk an elementwise pass (rows along the last dimension, whatever is summed)."""
    rng = np.random.default_rng(5)
    p, t = rng.standard_normal(shape), rng.standard_normal(shape)
    w = rng.uniform(0.5, 2.0, weights_shape)
    expected = reference.grad(p, t, w, axis=axis)
    magnitude = reference.grad(p, t, w, axis=axis, absolute=True)
    assert_matches(mse_grad(p, t, weights=w, axis=axis), expected, np.dtype(np.float64), magnitude=magnitude)
    assert_matches(mse_and_grad(p, t, weights=w, axis=axis)[1], expected, np.dtype(np.float64), magnitude=magnitude)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("keepdims", [False, True])
def test_broadcast_inputs_with_outputs_of_size_one(backend, dtype, keepdims):
    """A target per column summed over every dimension but some of length 1: the plan keeps
    no dimension, yet the loss is an array in the data's dtype, not float64 sums."""
    rng = np.random.default_rng(6)
    p = rng.standard_normal((3, 4, 1, 1)).astype(dtype)
    t = rng.standard_normal((1, 4, 1, 1)).astype(dtype)
    expected = reference.loss(p, t, axis=(0, 1), keepdims=keepdims)
    for loss in (mse(p, t, axis=(0, 1), keepdims=keepdims), mse_and_grad(p, t, axis=(0, 1), keepdims=keepdims)[0]):
        assert loss.shape == expected.shape
        assert_matches(loss, expected, np.dtype(dtype))
