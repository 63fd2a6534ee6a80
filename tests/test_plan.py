"""The plan of a dense call, built without the general search, is the general plan."""

from __future__ import annotations

import numpy as np
from fastmse import _plan
from fastmse._plan import Operands
from hypothesis import given
from hypothesis import strategies as st


@st.composite
def dense_calls(draw):
    shape = tuple(draw(st.lists(st.sampled_from([1, 1, 2, 3, 5]), min_size=1, max_size=4)))
    m = draw(st.integers(0, len(shape)))
    axes = tuple(range(m)) if draw(st.booleans()) else tuple(range(len(shape) - m, len(shape)))
    kept = tuple(n for d, n in enumerate(shape) if d not in axes)
    p, t = np.zeros(shape, np.float32), np.ones(shape, np.float32)
    out = draw(st.sampled_from([None, np.zeros(shape, np.float32)]))
    loss = draw(st.sampled_from([None, np.zeros(kept)]))
    scale = draw(st.sampled_from([None, np.zeros(()), np.zeros(kept)]))
    return shape, axes, Operands(p, t, None, out, loss, scale)


@given(dense_calls())
def test_dense_plan_is_the_general_plan(call):
    shape, axes, operands = call
    fast = _plan._dense_plan(shape, axes, operands)
    assert fast is not None
    saved = _plan._dense_plan
    try:
        _plan._dense_plan = lambda *_: None  # the general search alone
        general = _plan.make_plan(shape, axes, operands)
    finally:
        _plan._dense_plan = saved
    assert (fast.shape, fast.n_kept) == (general.shape, general.n_kept)
    assert [tuple(s) for s in fast.strides] == [tuple(s) for s in general.strides]


def test_other_calls_take_the_general_search():
    p = np.zeros((4, 3), np.float32)
    weighted = Operands(p, p, np.ones(3, np.float32))
    assert _plan._dense_plan((4, 3), (1,), weighted) is None
    assert _plan._dense_plan((4, 3), (1,), Operands(p[:, ::-1], p)) is None  # not C-contiguous
    assert (
        _plan._dense_plan((4, 3, 2), (1,), Operands(np.zeros((4, 3, 2)), np.zeros((4, 3, 2)))) is None
    )  # a middle axis
