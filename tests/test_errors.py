"""Every error of docs/semantics.rst (Errors, and ``out``): the right type, a message
naming the argument and the value, and nothing written to `out`."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from fastmse import get_num_threads, mse, mse_and_grad, mse_grad, set_num_threads

P = np.arange(12.0).reshape(3, 4)
T = np.ones((3, 4))


def _out():
    return np.full((3, 4), 42.0)


BAD_CALLS = [
    # (kwargs, positional override, exception, message pattern)
    (
        {},
        (P, np.ones((2, 4))),
        ValueError,
        r"predictions and targets do not broadcast together: shapes \(3, 4\), \(2, 4\)",
    ),
    (
        {"weights": np.ones(5)},
        None,
        ValueError,
        r"predictions, targets and weights do not broadcast together: shapes \(3, 4\), \(3, 4\), \(5,\)",
    ),
    ({"reduction": "avg"}, None, ValueError, r"reduction must be 'mean', 'sum' or 'none', not 'avg'"),
    ({"reduction": None}, None, ValueError, r"reduction must be .* not None"),
    ({"reduction": "none", "axis": 0}, None, ValueError, r"axis must be None with reduction='none', not 0"),
    ({"axis": 2}, None, np.exceptions.AxisError, r"axis 2 is out of bounds for array of dimension 2"),
    ({"axis": (0, -3)}, None, np.exceptions.AxisError, r"axis -3 is out of bounds"),
    ({"axis": (1, -1)}, None, ValueError, r"axis contains a repeated axis: \(1, -1\)"),
    ({"axis": 1.0}, None, TypeError, r"axis must be an int, a tuple of ints or None, not 1.0"),
    ({"axis": True}, None, TypeError, r"axis must be an int, a tuple of ints or None, not True"),
    ({"axis": [0]}, None, TypeError, r"axis must be an int, a tuple of ints or None, not \[0\]"),
    ({"weights": -np.ones(4)}, None, ValueError, r"weights must be non-negative; found -1.0"),
    ({"weights": np.array([np.nan, -1.0, 1.0, 1.0])}, None, ValueError, r"weights must be non-negative; found -1.0"),
    ({"reduction": np.array(["mean"])}, None, ValueError, r"reduction must be 'mean', 'sum' or 'none'"),
    ({"weights": np.array(["x"] * 4)}, None, TypeError, r"weights has dtype <U1"),
    ({}, (P.astype(complex), T), TypeError, r"predictions has dtype complex128"),
    ({}, (P, "abc"), TypeError, r"targets has dtype <U3"),
    ({}, (P, [[1, 2], [3]]), TypeError, r"targets could not be converted to an array"),
]


@pytest.mark.parametrize(("kwargs", "args", "error", "message"), BAD_CALLS)
def test_bad_arguments_raise_clearly_and_write_nothing(backend, kwargs, args, error, message):
    args = args or (P, T)
    for function in (mse, mse_grad, mse_and_grad):
        call_kwargs = dict(kwargs)
        out = None
        if function is not mse:
            out = _out()
            call_kwargs["out"] = out
        with pytest.raises(error, match=message):
            function(*args, **call_kwargs)
        if out is not None:
            assert (out == 42.0).all()


@pytest.mark.parametrize(
    ("out", "error", "message"),
    [
        (
            np.full((4, 3), 42.0),
            ValueError,
            r"out has shape \(4, 3\); the gradient has the shape of predictions, \(3, 4\)",
        ),
        (np.full((3, 4), 42.0, np.float32), TypeError, r"out has dtype float32; the gradient's dtype is float64"),
        ([[42.0] * 4] * 3, TypeError, r"out must be a NumPy array, not list"),
        (np.broadcast_to(np.float64(42.0), (3, 4)), ValueError, r"out is read-only"),
    ],
)
def test_bad_out_is_refused_untouched(backend, out, error, message):
    for function in (mse_grad, mse_and_grad):
        with pytest.raises(error, match=message):
            function(P, T, out=out)
        assert (np.asarray(out) == 42.0).all()


def test_errors_come_before_writes_even_when_out_is_fine_but_weights_are_not(backend):
    out = _out()
    with pytest.raises(ValueError, match="weights must be non-negative"):
        mse_grad(P, T, weights=np.array([1.0, -2.0, 1.0, 1.0]), out=out)
    assert (out == 42.0).all()


@pytest.mark.parametrize("alias", ["predictions", "targets"])
@pytest.mark.parametrize(
    "kwargs",
    [{"axis": 1}, {"reduction": "none"}, {"weights": np.ones((3, 50, 9))}, {"reduction": "sum", "weights": np.ones(9)}],
    ids=["axis", "none", "broadcast-predictions", "weights"],
)
def test_out_may_be_an_input(backend, alias, kwargs):
    rng = np.random.default_rng(6)
    p = rng.standard_normal((50, 9))
    t = rng.standard_normal((50, 9))
    expected_loss, expected_grad = mse_and_grad(p, t, **kwargs)
    p2, t2 = p.copy(), t.copy()
    out = p2 if alias == "predictions" else t2
    loss, grad = mse_and_grad(p2, t2, out=out, **kwargs)
    assert grad is out
    np.testing.assert_array_equal(grad, expected_grad)
    np.testing.assert_array_equal(loss, expected_loss)


def test_out_that_overlaps_itself_gets_a_deterministic_answer(backend):
    p = np.arange(8.0)
    out = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(8,), strides=(0,), writeable=True)
    mse_grad(p, np.zeros(8), reduction="sum", out=out)
    assert out[0] == 14.0  # the last position's gradient, written last


def test_out_overlapping_an_input_partially_gives_the_right_answer(backend):
    rng = np.random.default_rng(7)
    buffer = rng.standard_normal(101)
    p, t = buffer[:100].copy(), rng.standard_normal(100)
    expected = mse_grad(p, t, reduction="sum")
    shifted = buffer.copy()
    got = mse_grad(shifted[:100], t, reduction="sum", out=shifted[1:])
    np.testing.assert_array_equal(got, expected)


def test_set_num_threads_checks_its_argument():
    before = get_num_threads()
    with pytest.raises(ValueError, match="n must be at least 1, not 0"):
        set_num_threads(0)
    with pytest.raises(TypeError, match=re.escape("n must be an integer, not '2'")):
        set_num_threads("2")
    with pytest.raises(TypeError, match="n must be an integer, not True"):
        set_num_threads(True)
    assert get_num_threads() == before


class FakeDeviceArray:
    """Says it is in GPU memory; fastmse must never read it on the host."""

    @property
    def __cuda_array_interface__(self):
        return {"shape": (3,), "typestr": "<f4", "data": (0, False), "version": 3}


def test_gpu_and_host_arrays_in_one_call_are_refused_not_copied(backend):
    out = np.full(3, 7.0)
    for call in (mse, mse_grad):
        with pytest.raises(TypeError, match="predictions is a GPU array but targets is not: fastmse does not copy"):
            call(FakeDeviceArray(), np.zeros(3))
    with pytest.raises(TypeError, match="targets and weights are GPU arrays but predictions is not"):
        mse_and_grad(np.zeros(3), FakeDeviceArray(), weights=FakeDeviceArray(), out=out)
    assert (out == 7.0).all()


def test_gpu_arrays_without_cupy_say_how_to_install_it(backend):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: GPU arrays are computed (tests/test_gpu.py)")
    with pytest.raises(TypeError, match=re.escape("pip install 'fastmse[cuda12]'")):
        mse(FakeDeviceArray(), FakeDeviceArray())
