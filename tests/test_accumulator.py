"""MSEAccumulator: any batching and merge order gives the one-call result."""

from __future__ import annotations

import itertools
import pickle
import random

import numpy as np
import pytest
from checks import assert_matches
from fastmse import MSEAccumulator, mse
from hypothesis import given
from hypothesis import strategies as st
from reference import loss


@st.composite
def batched(draw):
    rows = draw(st.integers(1, 300))
    columns = draw(st.sampled_from([(), (1,), (3,), (2, 4)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    scale = draw(st.sampled_from([1.0, 1e-3] + ([1e4] if dtype != np.float16 else [])))
    p = (rng.standard_normal((rows, *columns)) * scale).astype(dtype)
    t = (rng.standard_normal((rows, *columns)) * scale).astype(dtype)
    weights = rng.uniform(0.0, 2.0, (rows,) + (1,) * len(columns)) if draw(st.booleans()) else None
    cuts = sorted(draw(st.lists(st.integers(1, rows - 1), max_size=6, unique=True))) if rows > 1 else []
    axis = draw(st.sampled_from([None, 0] + ([(0, 1)] if columns else [])))
    return p, t, weights, [0, *cuts, rows], axis, draw(st.sampled_from(["mean", "sum"]))


@given(batched(), st.randoms(use_true_random=False))
def test_batches_and_merges_equal_one_call(case, order):
    p, t, weights, cuts, axis, reduction = case
    parts = []
    for start, stop in itertools.pairwise(cuts):
        part = MSEAccumulator(axis=axis, reduction=reduction)
        part.update(p[start:stop], t[start:stop], None if weights is None else weights[start:stop])
        parts.append(pickle.loads(pickle.dumps(part)))  # as if sent from another worker
    order.shuffle(parts)
    total = MSEAccumulator(axis=axis, reduction=reduction)
    for part in parts:
        total.merge(part)
    one_call = mse(p, t, weights=weights, axis=axis, reduction=reduction)
    result = total.result()
    assert type(result) is type(one_call)
    assert_matches(result, one_call.astype(np.float64), p.dtype)
    # and both within docs/semantics.rst's bound (Types and precision) of the float64 reference
    assert_matches(result, loss(p, t, weights, axis, reduction), p.dtype)
    assert total.batches == len(parts)


def test_many_small_batches_stay_exact():
    """100,000 one-row float32 batches: the exact batch-sum addition loses nothing."""
    rng = np.random.default_rng(5)
    p = rng.standard_normal(100_000).astype(np.float32)
    t = rng.standard_normal(100_000).astype(np.float32)
    accumulator = MSEAccumulator()
    for start in range(0, p.size, 1):
        accumulator.update(p[start : start + 1], t[start : start + 1])
    assert accumulator.result() == mse(p, t)


def test_reset_and_empty():
    accumulator = MSEAccumulator(reduction="sum")
    assert accumulator.result() == 0.0
    accumulator.update(np.ones(3), np.zeros(3))
    assert accumulator.result() == 3.0
    accumulator.reset()
    assert accumulator.batches == 0
    with pytest.warns(RuntimeWarning, match="nan"):
        assert np.isnan(MSEAccumulator().result())
    with pytest.raises(ValueError, match="before any update"):
        MSEAccumulator(axis=0).result()


def test_dtypes_promote_across_batches():
    accumulator = MSEAccumulator()
    accumulator.update(np.ones(2, np.float32), np.zeros(2, np.float32))
    accumulator.update(np.ones(2), np.zeros(2))
    assert accumulator.result().dtype == np.float64


def test_errors():
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        MSEAccumulator(reduction="none")
    with pytest.raises(ValueError, match="axis must include 0"):
        MSEAccumulator(axis=1).update(np.ones((2, 3)), np.ones((2, 3)))
    accumulator = MSEAccumulator(axis=0)
    accumulator.update(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="kept shape"):
        accumulator.update(np.ones((2, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="broadcast"):
        accumulator.update(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(TypeError, match="MSEAccumulator"):
        accumulator.merge(3)
    with pytest.raises(ValueError, match="cannot merge"):
        accumulator.merge(MSEAccumulator())
    with pytest.raises(ValueError, match="non-negative"):
        MSEAccumulator().update(np.ones(2), np.zeros(2), weights=[-1.0, 1.0])
    assert accumulator.batches == 1


def test_nan_and_inf_propagate():
    accumulator = MSEAccumulator()
    accumulator.update(np.array([1.0, np.inf]), np.zeros(2))
    accumulator.update(np.array([1.0]), np.zeros(1))
    assert accumulator.result() == np.inf
    accumulator.update(np.array([np.nan]), np.zeros(1))
    assert np.isnan(accumulator.result())


def test_merge_order_is_irrelevant_bitwise_for_float32():
    rng = np.random.default_rng(11)
    batches = [
        (rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1000).astype(np.float32)) for _ in range(20)
    ]
    results = set()
    for seed in range(5):
        shuffled = batches[:]
        random.Random(seed).shuffle(shuffled)
        accumulator = MSEAccumulator()
        for p, t in shuffled:
            accumulator.update(p, t)
        results.add(accumulator.result().tobytes())
    assert len(results) == 1
