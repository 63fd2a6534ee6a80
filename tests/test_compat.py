"""The compatibility modules against the packages they stand in for, on many random cases."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from checks import assert_matches
from fastmse.compat import crysx, keras, sklearn, torch
from hypothesis import given
from hypothesis import strategies as st
from reference import loss

os.environ.setdefault("KERAS_BACKEND", "torch")

real_torch = pytest.importorskip("torch", reason="torch is in the test extra")
sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is in the test extra")
real_keras = pytest.importorskip("keras", reason="keras is in the test extra")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # crysx_nn prints a note when CuPy is missing
    crysx_loss = pytest.importorskip("crysx_nn.loss", reason="crysx-nn is installed by the README's test command")

FLOATS = [np.float32, np.float64]


def _close(actual, expected, dtype, ulps=2):
    """Within `ulps` units of the result dtype (the originals sum in the input dtype,
    fastmse in float64, so float32 results may differ in the last bits)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    limit = ulps * np.spacing(np.abs(expected).astype(dtype)).astype(np.float64) + 1e-300
    if dtype == np.float64:
        limit = 1e-12 * np.abs(expected) + 1e-300
    assert np.all(np.abs(actual - expected) <= limit), (actual, expected)


@st.composite
def batches(draw, dims=(1, 2)):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = draw(st.integers(1, 40))
    shape = (rows,) if draw(st.sampled_from(dims)) == 1 else (rows, draw(st.integers(1, 6)))
    dtype = draw(st.sampled_from(FLOATS))
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype), rng


# crysx_nn ------------------------------------------------------------------------


@given(batches(dims=(2,)))
def test_crysx_against_crysx_nn(case):
    p, t, _ = case
    expected = crysx_loss.MSE_loss(p, t)
    result = crysx.MSE_loss(p, t)
    assert type(result) is float
    assert result == pytest.approx(expected, rel=1e-6 if p.dtype == np.float32 else 1e-12)
    assert result == pytest.approx(float(loss(p, t, reduction="sum")) / p.shape[1], rel=1e-14)
    gradient = crysx.MSE_loss_grad(p, t)
    expected_gradient = crysx_loss.MSE_loss_grad(p, t)
    assert gradient.dtype == expected_gradient.dtype
    _close(gradient, expected_gradient, p.dtype)
    twin = crysx.MSE_loss_cupy(p, t)
    assert twin.dtype == p.dtype
    assert twin.shape == ()
    assert_matches(twin, float(loss(p, t, reduction="sum")) / p.shape[1], p.dtype)
    np.testing.assert_array_equal(crysx.MSE_loss_grad_cupy(p, t), gradient)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_crysx_small_arrays_give_the_general_paths_bits(dtype, order):
    """MSE_loss's flat plan and MSE_loss_grad's small call (C order) give the bits of the
    general path (fastmse.mse over everything, and mse_grad over the last axis)."""
    from fastmse._compute import gradient, partial_sums
    from fastmse._resolve import resolve

    rng = np.random.default_rng(4)
    p, t = (np.asarray(rng.standard_normal((37, 5)), dtype=dtype, order=order) for _ in range(2))
    assert crysx.MSE_loss(p, t) == float(partial_sums(p, t).sums / 5)
    general = gradient(resolve(p, t, None, -1, "mean"), None, keepdims=False, with_loss=False)[1]
    np.testing.assert_array_equal(crysx.MSE_loss_grad(p, t), general)


def test_crysx_integer_inputs_and_errors():
    p, t = np.arange(6).reshape(3, 2), np.zeros((3, 2), np.int64)
    assert crysx.MSE_loss(p, t) == crysx_loss.MSE_loss(p, t)
    assert crysx.MSE_loss_grad(p, t).dtype == crysx_loss.MSE_loss_grad(p, t).dtype == np.float64
    with pytest.raises(ValueError, match=r"\(N, k\)"):
        crysx.MSE_loss(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"\(3, 2\) and \(2, 2\)"):
        crysx.MSE_loss_grad(np.ones((3, 2)), np.ones((2, 2)))


# scikit-learn ----------------------------------------------------------------------


@given(batches(), st.booleans(), st.sampled_from(["uniform_average", "raw_values", "array"]), st.booleans())
def test_sklearn_against_scikit_learn(case, weighted, multioutput, negative):
    p, t, rng = case
    kwargs = {}
    if weighted:
        weights = rng.uniform(0.1, 2.0, p.shape[0])
        if negative and p.shape[0] > 1:
            weights[0] = -0.05  # scikit-learn accepts negative sample weights
        kwargs["sample_weight"] = weights
    outputs = 1 if p.ndim == 1 else p.shape[1]
    if multioutput == "array":
        if outputs == 1:
            multioutput = "uniform_average"
        else:
            multioutput = rng.uniform(0.1, 1.0, outputs)
    expected = sklearn_metrics.mean_squared_error(t, p, multioutput=multioutput, **kwargs)
    result = sklearn.mean_squared_error(t, p, multioutput=multioutput, **kwargs)
    assert type(result) is type(expected)
    dtype = np.result_type(p, *([kwargs["sample_weight"]] if weighted else []))
    if isinstance(expected, np.ndarray):
        assert result.dtype == expected.dtype
    _close(result, expected, dtype, ulps=4)


SKLEARN_ERRORS = [
    ([1.0, 2.0, 3.0], [1.0, 2.0], {}),
    ([1.0, np.nan], [1.0, 2.0], {}),
    ([1.0, 2.0], [1.0, np.inf], {}),
    (np.ones((2, 2, 2)), np.ones((2, 2, 2)), {}),
    (np.ones(0), np.ones(0), {}),
    (np.ones((3, 2)), np.ones((3, 3)), {}),
    (np.ones((3, 2)), np.ones((3, 2)), {"multioutput": "variance_weighted"}),
    (np.ones((3, 2)), np.ones((3, 2)), {"multioutput": "foo"}),
    (np.ones((3, 2)), np.ones((3, 2)), {"multioutput": [1.0, 2.0, 3.0]}),
    (np.ones((3, 2)), np.ones((3, 2)), {"multioutput": [1.0, -1.0]}),
    (np.ones((3, 2)), np.ones((3, 2)), {"multioutput": [np.nan, 1.0]}),
    (np.ones(3), np.ones(3), {"multioutput": [1.0]}),
    ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], {"sample_weight": [1.0, 2.0]}),
    ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], {"sample_weight": [0.0, 0.0, 0.0]}),
    ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], {"sample_weight": [np.nan, 1.0, 1.0]}),
    ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], {"sample_weight": 5}),
    ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], {"sample_weight": np.ones((3, 1))}),
    ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], {"sample_weight": [1.0, -1.0, 0.0]}),
    ("abc", [0.0, 0.0, 0.0], {}),
    (None, [1.0], {}),
    (np.array([1.0, 2.0]) + 1j, [1.0, 2.0], {}),
]


@pytest.mark.parametrize(("y_true", "y_pred", "kwargs"), SKLEARN_ERRORS)
def test_sklearn_errors_match(y_true, y_pred, kwargs):
    with pytest.raises(Exception) as original:  # noqa: PT011 - the type is what is compared
        sklearn_metrics.mean_squared_error(y_true, y_pred, **kwargs)
    with pytest.raises(Exception) as ours:  # noqa: PT011
        sklearn.mean_squared_error(y_true, y_pred, **kwargs)
    assert ours.type.__name__ == original.type.__name__
    assert isinstance(ours.value, tuple(c for c in original.type.__mro__ if c.__module__ == "builtins"))
    # scikit-learn prints a set of options, in hash order
    assert str(ours.value) == str(original.value).replace(
        "{'uniform_average', 'raw_values'}", "{'raw_values', 'uniform_average'}"
    )


# Keras -----------------------------------------------------------------------------


@given(batches(), st.sampled_from([np.float32, np.float64, np.int64, "list"]), st.booleans())
def test_keras_against_keras(case, pred_dtype, squeeze):
    p, t, _ = case
    if pred_dtype == "list":
        p = p.tolist()
    else:
        p = (p * 3).astype(pred_dtype)
    if squeeze and t.ndim == 1:
        t = t[:, None]  # keras expands the other side to the same rank
    expected = real_keras.losses.mean_squared_error(t, p)
    result = keras.mean_squared_error(t, p)
    dtype = np.dtype(str(expected.dtype).removeprefix("torch."))
    assert result.dtype == dtype
    # Keras's torch backend rounds through float32 along the way, even for float64 data:
    # a float32 mean of k squares is off by up to about k + 1 float32 ulps.
    terms = np.shape(p)[-1] if np.ndim(p) else 1
    _close(result, expected.numpy(), np.float32, ulps=terms + 2)
    predicted = np.asarray(p, dtype=None if pred_dtype != "list" else np.float32)
    truth = np.asarray(t).astype(predicted.dtype)  # Keras casts y_true to y_pred's dtype
    if truth.ndim == predicted.ndim + 1:  # a trailing axis of 1: the 1-D side is expanded
        predicted = predicted[:, None]
    assert_matches(result, loss(predicted, truth, axis=-1), dtype)


# PyTorch ---------------------------------------------------------------------------


@given(batches(), st.sampled_from(["mean", "sum", "none"]), st.booleans(), st.booleans())
def test_torch_against_torch(case, reduction, weighted, broadcast):
    p, t, rng = case
    if broadcast:
        t = t[:1]
    kwargs = {}
    if weighted and not broadcast:
        weight = rng.uniform(-0.5, 2.0, p.shape)  # PyTorch allows negative weights
        kwargs["weight"] = weight
    with warnings.catch_warnings(record=True) as torch_warnings:
        warnings.simplefilter("always")
        expected = real_torch.nn.functional.mse_loss(
            real_torch.from_numpy(p),
            real_torch.from_numpy(np.ascontiguousarray(t)),
            reduction=reduction,
            **{k: real_torch.from_numpy(v) for k, v in kwargs.items()},
        )
    with warnings.catch_warnings(record=True) as our_warnings:
        warnings.simplefilter("always")
        result = torch.mse_loss(p, t, reduction=reduction, **kwargs)
    assert [str(w.message) for w in our_warnings] == [str(w.message) for w in torch_warnings]
    dtype = np.dtype(str(expected.dtype).removeprefix("torch."))
    assert np.asarray(result).dtype == dtype
    # PyTorch squares in the input dtype (float32 here even with float64 weights); with
    # negative weights the sums may cancel, so the slack scales with the terms' magnitude.
    terms = np.abs(loss(p, t, kwargs.get("weight"), reduction="none"))
    scale = np.maximum(terms, np.abs(expected.numpy())) if reduction == "none" else np.sum(terms)
    if reduction == "mean":
        scale = scale / (abs(np.sum(kwargs["weight"])) if "weight" in kwargs else terms.size)
    slack = 4 * np.finfo(p.dtype).eps * scale
    assert np.all(np.abs(np.asarray(result, np.float64) - expected.numpy()) <= slack + 1e-300)
    assert_matches(result, loss(p, t, kwargs.get("weight"), reduction=reduction), dtype, magnitude=1e3 * scale)


def test_torch_errors_and_legacy_arguments():
    p, t = np.ones(3), np.zeros(3)
    for kwargs, match in (
        ({"reduction": "avg"}, "avg is not a valid value for reduction"),
        ({"reduction": "avg", "weight": np.ones(3)}, "Invalid reduction mode: avg"),
        ({"weight": np.ones(2)}, "Weights and input must have the same size."),
    ):
        with pytest.raises(ValueError, match=match):
            torch.mse_loss(p, t, **kwargs)
        with pytest.raises(ValueError, match=match):
            real_torch.nn.functional.mse_loss(
                real_torch.from_numpy(p),
                real_torch.from_numpy(t),
                **{k: real_torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()},
            )
    with pytest.warns(UserWarning, match="reduction='sum'"):
        assert torch.mse_loss(p, t, size_average=False) == 3.0
