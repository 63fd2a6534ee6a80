"""PyTorch (CPU) as a peer oracle: its losses, and autograd's gradient of sum(loss)."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from checks import assert_matches
from fastmse import mse, mse_and_grad, mse_grad
from hypothesis import given
from strategies import calls

torch = pytest.importorskip("torch")


def _autograd(predictions, targets, weights=None, axis=None, reduction="mean"):
    """torch's value of sum(loss) and its gradient with respect to predictions, float64."""
    p = torch.tensor(np.array(predictions, np.float64), requires_grad=True)
    t = torch.tensor(np.array(targets, np.float64))
    shape = torch.broadcast_shapes(p.shape, t.shape, *(() if weights is None else (np.shape(weights),)))
    w = torch.ones(shape, dtype=torch.float64) if weights is None else torch.tensor(np.array(weights, np.float64))
    e = w * (p - t) ** 2
    if reduction == "none":
        value = e
    else:
        dims = tuple(range(len(shape))) if axis is None else axis
        value = torch.sum(e, dim=dims)
        if reduction == "mean":
            value = value / torch.sum(w.expand(shape), dim=dims)
    value.sum().backward()
    return value.detach().numpy(), p.grad.numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_mse_loss(backend, reduction, dtype):
    rng = np.random.default_rng(9)
    p = rng.standard_normal((33, 17)).astype(dtype)
    t = rng.standard_normal((33, 17)).astype(dtype)
    expected = torch.nn.functional.mse_loss(
        torch.from_numpy(p.astype(np.float64)), torch.from_numpy(t.astype(np.float64)), reduction=reduction
    ).numpy()
    assert_matches(mse(p, t, reduction=reduction), expected, np.dtype(dtype))
    ours = torch.nn.functional.mse_loss(torch.from_numpy(p), torch.from_numpy(t), reduction=reduction).numpy()
    np.testing.assert_allclose(mse(p, t, reduction=reduction), ours, rtol=5e-6 if dtype == np.float32 else 1e-13)


@given(case=calls(allow_empty=False))
def test_autograd_gradients(backend, case):
    predictions, targets, kwargs = case
    dtype = np.result_type(predictions, targets)
    value, gradient = _autograd(predictions, targets, **kwargs)
    loss, grad = mse_and_grad(predictions, targets, **kwargs)
    assert_matches(loss, value, dtype)
    magnitude = reference.grad(predictions, targets, absolute=True, **kwargs)
    assert_matches(grad, gradient, dtype, magnitude=magnitude)
    np.testing.assert_array_equal(grad, mse_grad(predictions, targets, **kwargs))


def test_batch_mean_over_last_axis_is_the_crysx_gradient(backend):
    rng = np.random.default_rng(10)
    p = rng.standard_normal((64, 10)).astype(np.float32)
    t = rng.standard_normal((64, 10)).astype(np.float32)
    _, gradient = _autograd(p, t, axis=-1)
    np.testing.assert_allclose(mse_grad(p, t, axis=-1), gradient, rtol=1e-6)
    np.testing.assert_allclose(gradient, 2 * (p - t) / 10, rtol=1e-6)
