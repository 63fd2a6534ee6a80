"""Fuzzing the whole argument space: every call gives the right result or one of the
documented exceptions, never a crash, and never writes to `out` when it raises."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import reference
from checks import assert_matches
from fastmse import mse, mse_and_grad, mse_grad
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DOCUMENTED = (TypeError, ValueError)  # numpy.exceptions.AxisError is a ValueError too
EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else 500

NUMERIC = ["bool", "int8", "int64", "uint16", "float16", "float32", "float64", ">f8"]
REFUSED = ["complex64", "U2", "M8[s]", "O"]


@st.composite
def numeric_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(NUMERIC)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    elements = hnp.from_dtype(dtype, allow_nan=True, allow_infinity=True) if dtype.kind == "f" else None
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    view = draw(st.sampled_from(["plain", "reversed", "transposed", "read-only"]))
    if view == "reversed" and array.ndim:
        return array[::-1]
    if view == "transposed":
        return array.T
    if view == "read-only":
        array.flags.writeable = False
    return array


def refused_arrays():
    return st.builds(lambda dtype, n: np.zeros(n, dtype=dtype), st.sampled_from(REFUSED), st.integers(0, 3))


GARBAGE = st.sampled_from([object(), "abc", b"x", {}, {1: 2}, complex(1, 2), [1, "a"], [[1], [1, 2]]])
values = st.one_of(
    numeric_arrays(),
    numeric_arrays(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(-10, 10), max_size=4),
    refused_arrays(),
    GARBAGE,
)
axes = st.one_of(
    st.none(),
    st.integers(-4, 3),
    st.lists(st.integers(-4, 3), max_size=3).map(tuple),
    st.sampled_from([1.0, "0", True, [0], (0, "1")]),
)
reductions = st.sampled_from(["mean", "sum", "none", "MEAN", "", None, 1])
outs = st.one_of(st.none(), st.none(), numeric_arrays(), GARBAGE)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _check_result(function, result, predictions, targets, kwargs) -> None:
    """A result fastmse returned is the float64 reference's, rounded to its dtype."""
    dtype = np.asarray(result[0] if function is mse_and_grad else result).dtype
    # The operands as they are computed with: in the result's dtype first (float32
    # predictions make a Python float target float32, as in NumPy), then exactly in
    # float64. Raises for what fastmse should have refused.
    with np.errstate(over="ignore"):  # a Python float past float16's range is inf there too
        p = np.asarray(predictions).astype(dtype).astype(np.float64)
        t = np.asarray(targets).astype(dtype).astype(np.float64)
    w = kwargs.get("weights")
    w = None if w is None else np.asarray(w, dtype=np.float64)
    reduction, axis = kwargs.get("reduction", "mean"), kwargs.get("axis")
    with np.errstate(all="ignore"):
        if function is mse_grad:
            loss_value, grad_value = None, result
        elif function is mse:
            loss_value, grad_value = result, None
        else:
            loss_value, grad_value = result
        if loss_value is not None:
            expected = reference.loss(p, t, w, axis, reduction, kwargs.get("keepdims", False))
            assert_matches(loss_value, expected, np.asarray(loss_value).dtype)
        if grad_value is not None:
            expected = reference.grad(p, t, w, axis, reduction)
            magnitude = reference.grad(p, t, w, axis, reduction, absolute=True)
            overflowed = reference.grad(p, t, w, axis, reduction, overflowed=True)
            assert_matches(grad_value, expected, grad_value.dtype, magnitude, overflowed)
            if kwargs.get("out") is not None:
                assert grad_value is kwargs["out"]


@pytest.mark.slow
@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    function=st.sampled_from([mse, mse_grad, mse_and_grad]),
    predictions=values,
    targets=values,
    weights=st.one_of(st.none(), st.none(), values),
    axis=axes,
    reduction=reductions,
    keepdims=st.booleans(),
    out=outs,
)
# A broadcast prediction's gradient sums w * (p - t) before the factor: 2 * -9e307 overflows
# there, where the reference's scaled terms (-9.5e153 each) do not.
@example(mse_grad, 0, 9.480751908109177e153, np.array([9.480751908109177e153] * 2), None, "mean", False, None)
def test_any_arguments_give_a_result_or_a_documented_error(
    function, predictions, targets, weights, axis, reduction, keepdims, out
):
    kwargs = {"weights": weights, "axis": axis, "reduction": reduction}
    if function is not mse_grad:
        kwargs["keepdims"] = keepdims
    if function is not mse:
        kwargs["out"] = out
    before = out.copy() if isinstance(out, np.ndarray) else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = function(predictions, targets, **kwargs)
    except DOCUMENTED:
        event("raised a documented error")
        if before is not None:
            assert _same(out, before), "out was written by a call that raised"
        return
    event("returned a result")
    _check_result(function, result, predictions, targets, kwargs)
