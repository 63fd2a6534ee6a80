"""Dask inputs: lazy results from fastmse's kernels per chunk, equal to one in-memory call."""

from __future__ import annotations

import numpy as np
import pytest
from checks import assert_matches
from fastmse import MSEAccumulator, _backends, mse, mse_and_grad, mse_grad
from hypothesis import given
from hypothesis import strategies as st

da = pytest.importorskip("dask.array", reason="dask is in the test extra; install fastmse[test]")
import dask


@st.composite
def chunked_calls(draw):
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    p = rng.standard_normal(shape).astype(dtype)
    if draw(st.booleans()):  # predictions broadcast along some axes
        p = p[tuple(slice(0, 1) if draw(st.booleans()) else slice(None) for _ in shape)]
    t = rng.standard_normal(shape).astype(dtype)
    w = rng.uniform(0.1, 2.0, tuple(1 if draw(st.booleans()) else n for n in shape)) if draw(st.booleans()) else None
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    axis = None
    if reduction != "none" and draw(st.booleans()):
        axis = tuple(draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True)))

    def chunks(a):
        return tuple(draw(st.integers(1, max(n, 1))) for n in a.shape)

    lazy = [da.from_array(a, chunks=chunks(a)) for a in (p, t)]
    lazy_w = None if w is None else da.from_array(w, chunks=chunks(w))
    return (p, t, w), (lazy[0], lazy[1], lazy_w), {"axis": axis, "reduction": reduction}


@given(chunked_calls(), st.booleans())
def test_dask_equals_in_memory(case, keepdims):
    (p, t, w), (lp, lt, lw), kwargs = case
    expected = mse(p, t, weights=w, keepdims=keepdims, **kwargs)
    lazy = mse(lp, lt, weights=lw, keepdims=keepdims, **kwargs)
    assert isinstance(lazy, da.Array)
    assert lazy.dtype == np.asarray(expected).dtype
    assert_matches(lazy.compute(), np.asarray(expected, np.float64), p.dtype)
    gradient = mse_grad(lp, lt, weights=lw, **kwargs)
    assert isinstance(gradient, da.Array)
    assert_matches(gradient.compute(), mse_grad(p, t, weights=w, **kwargs).astype(np.float64), p.dtype)
    lazy_loss, lazy_grad = mse_and_grad(lp, lt, weights=lw, keepdims=keepdims, **kwargs)
    assert_matches(lazy_loss.compute(), np.asarray(expected, np.float64), p.dtype)  # alone
    loss, grad = dask.compute(lazy_loss, lazy_grad)
    assert_matches(loss, np.asarray(expected, np.float64), p.dtype)
    assert_matches(grad, mse_grad(p, t, weights=w, **kwargs).astype(np.float64), p.dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("axis", [None, 0, (0, 1)])
def test_mse_and_grad_reads_each_chunk_once(monkeypatch, reduction, weighted, axis):
    # Computed together, loss and gradient come from one fused kernel pass per chunk.
    rng = np.random.default_rng(5)
    p, t = rng.standard_normal((2, 30, 8))
    w = rng.uniform(0.5, 1.5, (30, 8)) if weighted else None
    lp, lt = da.from_array(p, chunks=(7, 3)), da.from_array(t, chunks=(7, 3))
    lw = None if w is None else da.from_array(w, chunks=(7, 3))
    backend = _backends.current()
    passes = []
    for name in ("reduce", "grad", "reduce_and_grad"):
        monkeypatch.setattr(backend, name, _counted(getattr(backend, name), name, passes))
    loss, grad = dask.compute(*mse_and_grad(lp, lt, weights=lw, axis=axis, reduction=reduction), scheduler="sync")
    assert passes == ["reduce_and_grad"] * lp.npartitions
    monkeypatch.undo()
    expected_loss, expected_grad = mse_and_grad(p, t, weights=w, axis=axis, reduction=reduction)
    if weighted:  # the weight sums are added in another order (Dask's tree): within 1 ulp
        assert_matches(grad, expected_grad, np.float64)
    else:  # the same arithmetic per element
        np.testing.assert_array_equal(grad, expected_grad)
    assert_matches(loss, np.asarray(expected_loss, np.float64), np.float64)


def _counted(method, name, passes):
    def run(plan):
        passes.append(name)
        return method(plan)

    return run


def test_dask_checks_eagerly():
    p = da.ones((4, 3), chunks=2)
    with pytest.raises(ValueError, match="do not broadcast"):
        mse(p, da.ones((5, 3)))
    with pytest.raises(np.exceptions.AxisError):
        mse(p, p, axis=2)
    with pytest.raises(TypeError, match="out cannot be used"):
        mse_grad(p, p, out=np.empty((4, 3)))
    with pytest.raises(TypeError, match="complex"):
        mse(p, p.astype(np.complex128))


def test_dask_mixed_with_numpy():
    p = np.arange(12.0).reshape(4, 3)
    lazy = mse(da.from_array(p, chunks=2), np.zeros((4, 3)), axis=0)
    np.testing.assert_array_equal(lazy.compute(), mse(p, np.zeros((4, 3)), axis=0))
    # a Dask array in second place (or as weights) makes the call lazy too: never a silent compute
    assert isinstance(mse(p, da.zeros((4, 3), chunks=2)), da.Array)
    assert isinstance(mse_grad(p, p, weights=da.ones(3, chunks=2)), da.Array)
    # functions that compute in memory refuse Dask arrays rather than computing them whole
    with pytest.raises(TypeError, match="predictions: Dask arrays are taken by"):
        MSEAccumulator().update(da.ones(3, chunks=2), np.zeros(3))


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed", reason="distributed is in the test extra")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.mark.slow
def test_on_a_local_cluster_with_worker_processes(cluster_client):
    rng = np.random.default_rng(3)
    p = rng.standard_normal((4000, 6)).astype(np.float32)
    t = rng.standard_normal((4000, 6)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (4000, 1))
    lp, lt, lw = da.from_array(p, chunks=(500, 3)), da.from_array(t, chunks=(700, 6)), da.from_array(w, chunks=1000)
    for axis in (None, 0, 1):
        loss = cluster_client.compute(mse(lp, lt, weights=lw, axis=axis)).result()
        assert_matches(loss, np.asarray(mse(p, t, weights=w, axis=axis), np.float64), np.float32)
    gradient = cluster_client.compute(mse_grad(lp, lt, axis=1)).result()
    assert_matches(gradient, mse_grad(p, t, axis=1).astype(np.float64), np.float32)
    loss, gradient = cluster_client.compute(list(mse_and_grad(lp, lt, weights=lw, axis=0)), sync=True)
    expected_loss, expected_gradient = mse_and_grad(p, t, weights=w, axis=0)
    assert_matches(loss, np.asarray(expected_loss, np.float64), np.float32)
    assert_matches(gradient, expected_gradient.astype(np.float64), np.float32)
    workers = cluster_client.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2


@given(chunked_calls(), st.sampled_from([np.float16, np.float32, np.float64]))
def test_dask_loss_in_the_dtype_asked_for(case, dtype):
    (p, t, w), (lp, lt, lw), kwargs = case
    expected = mse(p, t, weights=w, dtype=dtype, **kwargs)
    lazy = mse(lp, lt, weights=lw, dtype=dtype, **kwargs)
    assert lazy.dtype == np.dtype(dtype)
    assert_matches(lazy.compute(), np.asarray(expected, np.float64), np.dtype(dtype))
    lazy_loss, lazy_grad = mse_and_grad(lp, lt, weights=lw, dtype=dtype, **kwargs)
    assert lazy_loss.dtype == np.dtype(dtype)
    assert lazy_grad.dtype == p.dtype
    assert_matches(lazy_loss.compute(), np.asarray(expected, np.float64), np.dtype(dtype))
