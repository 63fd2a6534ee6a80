"""64-bit indexing: more than 2**31 positions, through zero-stride views (no memory)."""

from __future__ import annotations

import numpy as np
import pytest
from fastmse import _backends, mse, mse_and_grad, mse_grad

# Every call here sums 2**31+ positions.
pytestmark = pytest.mark.slow

N = 2**31 + 77


@pytest.fixture(params=["cpp", "numba"])
def compiled_backend(request):
    # The NumPy fallback materialises float64 temporaries of the full size (16 GiB here).
    if request.param not in _backends.available():
        pytest.skip(f"backend {request.param} cannot load here")
    with _backends.use(request.param) as chosen:
        yield chosen


def test_more_than_2_31_positions_in_one_sum(compiled_backend):
    p = np.broadcast_to(np.float32(2.25), (N,))
    t = np.broadcast_to(np.float32(0.25), (N,))
    assert mse(p, t) == np.float32(4.0)
    assert mse(p, t, reduction="sum") == np.float32(4.0 * N)


def test_more_than_2_31_positions_across_rows(compiled_backend):
    # A row of real values repeated over 2**31+ positions: the sum is exactly known.
    row = np.arange(1, 2**15 + 1, dtype=np.float64) / 2**10
    rows = 2**16 + 3
    p = np.broadcast_to(row, (rows, row.size))
    t = np.zeros((1, 1))
    exact_row = float(np.sum(row * row))  # exact: dyadic values with few bits
    assert mse(p, t, reduction="sum") == exact_row * rows
    per_column = mse(p, t, axis=0)
    np.testing.assert_array_equal(per_column, row * row)


def test_gradient_of_broadcast_predictions_beyond_2_31(compiled_backend):
    # Each predicted value meets 2**31+ targets: its gradient is one sum that long,
    # computed by the kernels without a full-size temporary.
    p = np.array([[1.5], [2.5]], np.float32)
    t = np.broadcast_to(np.float32(0.5), (2, 2**31 + 5))
    np.testing.assert_array_equal(mse_grad(p, t, axis=1), np.array([[2.0], [4.0]], np.float32))
    if compiled_backend.name == "cpp":  # the Numba kernels take minutes for more passes
        loss, grad = mse_and_grad(p, t, reduction="sum")
        assert loss == np.float32((1.0 + 4.0) * t.shape[1])
        np.testing.assert_array_equal(grad, np.array([[2.0], [4.0]], np.float32) * np.float32(t.shape[1]))
