"""NumPy masked arrays follow np.ma: masked positions take no part, an output with none
left is masked, the gradient is zero at masked positions; ndarray subclasses whose
arithmetic means something else are refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from checks import assert_matches
from fastmse import mse, mse_and_grad, mse_grad

SHAPE = (6, 5)


def _operands(masked: str, weighted: bool):
    rng = np.random.default_rng(len(masked) + 10 * weighted)
    p, t = rng.standard_normal((2, *SHAPE))
    mask = rng.random(SHAPE) < 0.3
    mask[2] = True  # one sample with nothing left
    w = rng.uniform(0.5, 2.0, (SHAPE[0], 1)) if weighted else None
    mp = np.ma.masked_array(p, mask) if masked in ("predictions", "both") else p
    mt = np.ma.masked_array(t, mask) if masked in ("targets", "both") else t
    return p, t, w, mask, mp, mt


def _expected(p, t, w, mask, axis, reduction):
    """np.ma's result in float64: weighted sums over the unmasked positions."""
    e = np.ma.masked_array((p - t) ** 2, mask)
    weights = np.ma.masked_array(np.broadcast_to(1.0 if w is None else w, SHAPE), mask)
    if reduction == "none":
        return weights * e
    total = np.ma.sum(weights * e, axis=axis)
    return total if reduction == "sum" else total / np.ma.sum(weights, axis=axis)


@pytest.mark.parametrize("masked", ["predictions", "targets", "both"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(
    ("axis", "reduction"), [(None, "none")] + [(a, r) for a in (None, 0, -1) for r in ("mean", "sum")]
)
def test_masked_positions_take_no_part(backend, masked, weighted, axis, reduction):
    p, t, w, mask, mp, mt = _operands(masked, weighted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an all-masked output is masked, without a warning
        result = mse(mp, mt, weights=w, axis=axis, reduction=reduction)
    expected = _expected(p, t, w, mask, axis, reduction)
    if np.ndim(expected) == 0 and expected is not np.ma.masked:
        assert not isinstance(result, np.ma.MaskedArray)
        assert_matches(np.asarray(result), np.asarray(expected), np.float64)
        return
    assert isinstance(result, np.ma.MaskedArray), type(result)
    np.testing.assert_array_equal(np.ma.getmaskarray(result), np.ma.getmaskarray(expected))
    kept = ~np.ma.getmaskarray(expected)
    assert_matches(np.asarray(result)[kept], np.asarray(expected)[kept], np.float64)
    if np.ma.getmaskarray(expected).any():
        assert np.ma.is_masked(result)
    if not weighted and reduction == "mean":  # np.ma's own expression, as a user writes it
        np.testing.assert_allclose(
            np.ma.getdata(result)[kept], np.ma.getdata(np.ma.mean((mp - mt) ** 2, axis=axis))[kept], rtol=1e-13
        )


@pytest.mark.parametrize("axis", [None, -1])
def test_the_gradient_is_zero_at_masked_positions(backend, axis):
    p, t, w, mask, mp, _ = _operands("predictions", True)
    grad = mse_grad(mp, t, weights=w, axis=axis)
    assert type(grad) is np.ndarray
    assert np.all(grad[mask] == 0)
    # Elsewhere: the gradient of the weighted mean over the unmasked positions.
    weights = np.where(mask, 0.0, np.broadcast_to(w, SHAPE))
    sums = weights.sum() if axis is None else weights.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = 2 * weights * (p - t) / sums
    np.testing.assert_allclose(grad[~mask], expected[~mask], rtol=1e-13)
    loss, fused = mse_and_grad(mp, t, weights=w, axis=axis)
    np.testing.assert_array_equal(fused, grad)
    assert np.ma.allequal(loss, mse(mp, t, weights=w, axis=axis))


def test_what_is_masked_may_be_nan(backend):
    """Masked positions often hold no number: they are not read into any result."""
    p = np.ma.masked_invalid(np.array([[1.0, np.nan], [np.inf, 2.0]]))
    t = np.zeros((2, 2))
    assert mse(p, t) == np.ma.mean((p - t) ** 2) == 2.5
    np.testing.assert_array_equal(mse(p, t, axis=-1), np.ma.mean((p - t) ** 2, axis=-1))
    np.testing.assert_array_equal(mse_grad(p, t), [[1.0, 0.0], [0.0, 2.0]])  # 2 (p - t) / 2 where unmasked
    w = np.ma.masked_array([1.0, 2.0], [False, True])
    assert mse(np.array([1.0, np.nan]), np.zeros(2), weights=w) == 1.0


def test_everything_masked_is_masked(backend):
    assert mse(np.ma.masked_all((3,)), np.zeros(3)) is np.ma.masked
    assert np.all(mse_grad(np.ma.masked_all((3,)), np.zeros(3)) == 0)


class _Meters(np.ndarray):
    """An ndarray subclass with arithmetic of its own, as unit libraries have."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return NotImplemented


def test_subclasses_that_change_arithmetic_are_refused_and_memmaps_read(tmp_path):
    with pytest.raises(TypeError, match="predictions is a test_masked._Meters"):
        mse(np.ones(3).view(_Meters), np.zeros(3))
    path = tmp_path / "values.npy"
    np.save(path, np.arange(4.0))
    mapped = np.load(path, mmap_mode="r")
    assert type(mapped) is np.memmap
    assert mse(mapped, np.zeros(4)) == np.mean(np.arange(4.0) ** 2)


def test_errors_name_the_arguments_as_for_plain_arrays():
    with pytest.raises(
        ValueError, match=r"predictions and targets do not broadcast together: shapes \(3, 4\), \(2, 4\)"
    ):
        mse(np.ma.masked_array(np.ones((3, 4)), False), np.ones((2, 4)))
    out = np.full(3, 7.0)
    with pytest.raises(ValueError, match="weights must be non-negative; found -1"):
        mse_grad(np.ma.masked_array(np.ones(3), [1, 0, 0]), np.zeros(3), weights=np.array([1.0, -1.0, 1.0]), out=out)
    assert np.all(out == 7.0)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("axis", [None, 0, -1])
def test_a_masked_loss_in_the_dtype_asked_for(backend, axis, dtype):
    _, _, w, mask, mp, mt = _operands("both", weighted=True)
    single = (mp.astype(np.float32), mt.astype(np.float32))
    result = mse(*single, weights=w, axis=axis, dtype=dtype)
    assert np.ma.getdata(result).dtype == dtype
    expected = _expected(single[0].data.astype(np.float64), single[1].data.astype(np.float64), w, mask, axis, "mean")
    assert np.array_equal(np.ma.getmaskarray(result), np.ma.getmaskarray(expected))
    assert_matches(np.ma.filled(result, np.nan), np.ma.filled(expected, np.nan), np.dtype(dtype))
    loss, _ = mse_and_grad(*single, weights=w, axis=axis, dtype=dtype)
    assert np.array_equal(np.ma.filled(loss, np.nan), np.ma.filled(result, np.nan), equal_nan=True)
