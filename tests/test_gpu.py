"""GPU arrays: the CUDA kernels and the CuPy fallback against the CPU path and a float64
reference. Marked `gpu`; skipped, with the reason, where CuPy or a device is missing."""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from checks import assert_matches, call
from fastmse import MSEAccumulator, _backends, _gpu, mse, mse_and_grad, mse_grad
from hypothesis import given
from reference import exact_mean_squared_error, ulps
from strategies import calls

pytestmark = pytest.mark.gpu


def _device_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - no CuPy, no driver or no device: no GPU here
        return 0


DEVICES = _device_count()
if DEVICES == 0:
    pytest.skip("no CUDA device (or no CuPy) on this machine", allow_module_level=True)

import cupy as cp

CORE = importlib.import_module("fastmse._core")


# Why fastmse's own CUDA kernels cannot run here (not built, a driver older than their
# runtime, ...), or None: their tests skip with that reason, and CuPy's kernels still run.
UNUSABLE = _gpu.unusable_reason(CORE)


def _gpu_backends() -> list:
    marks = [] if UNUSABLE is None else [pytest.mark.skip(reason=UNUSABLE)]
    return [pytest.param("cuda", id="cuda", marks=marks), pytest.param("cupy", id="cupy")]


@pytest.fixture(params=_gpu_backends())
def gpu_backend(request, monkeypatch):
    """Sends GPU calls to one GPU backend."""
    if request.param == "cuda":
        chosen = _gpu.CudaBackend(CORE)
    else:
        chosen = _gpu.CupyBackend()
    monkeypatch.setattr(_backends, "_gpu_backend", chosen)
    return chosen


def _to_device(value):
    """A host array as a CuPy array with the same strides (C, Fortran, stepped, reversed);
    anything else (None, a reduction, axes) as it is."""
    if not isinstance(value, np.ndarray):
        return value
    itemsize = value.itemsize
    low = sum(s * (n - 1) for s, n in zip(value.strides, value.shape, strict=False) if s < 0 and n > 0) // itemsize
    high = sum(s * (n - 1) for s, n in zip(value.strides, value.shape, strict=False) if s > 0 and n > 0) // itemsize
    span = np.zeros(high - low + 1, value.dtype)
    np.lib.stride_tricks.as_strided(span[-low:], value.shape, value.strides)[...] = value
    return cp.lib.stride_tricks.as_strided(cp.asarray(span)[-low:], value.shape, value.strides)


@given(case=calls(dtypes=(np.float16, np.float32, np.float64)))
def test_every_call_matches_the_cpu_path(gpu_backend, case):
    predictions, targets, kwargs = case
    device_kwargs = {k: _to_device(v) for k, v in kwargs.items()}
    p, t = _to_device(predictions), _to_device(targets)
    host = (predictions, targets, kwargs)
    loss = call(mse, predictions, targets, kwargs)
    grad = call(mse_grad, predictions, targets, kwargs)
    gpu_loss = call(mse, p, t, device_kwargs, host=host)
    gpu_grad = call(mse_grad, p, t, device_kwargs, host=host)
    fused_loss, fused_grad = call(mse_and_grad, p, t, device_kwargs, host=host)
    assert isinstance(gpu_loss, cp.ndarray)
    assert isinstance(gpu_grad, cp.ndarray)
    assert gpu_loss.dtype == np.asarray(loss).dtype
    assert gpu_grad.dtype == grad.dtype
    # Within one ulp of the CPU path's result (float64: 1e-13 relative, docs/semantics.rst,
    # Types and precision).
    assert_matches(cp.asnumpy(gpu_loss), loss, gpu_loss.dtype)
    assert_matches(cp.asnumpy(gpu_grad), grad, gpu_grad.dtype)
    assert cp.array_equal(fused_loss, gpu_loss, equal_nan=True)
    assert cp.array_equal(fused_grad, gpu_grad, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("size", [0, 1, 7, 4096, 4097, 3 * 4096 + 5, 1 << 20])
def test_flat_sizes_against_fsum(gpu_backend, dtype, size):
    rng = np.random.default_rng(size)
    predictions = rng.standard_normal(size).astype(dtype)
    targets = rng.standard_normal(size).astype(dtype)
    p, t = cp.asarray(predictions), cp.asarray(targets)
    if size == 0:
        with pytest.warns(RuntimeWarning, match="mean over zero elements"):
            assert bool(cp.isnan(mse(p, t)))
        return
    loss = mse(p, t)
    assert loss.shape == ()
    assert loss.dtype == dtype
    exact = exact_mean_squared_error(predictions, targets)
    assert ulps(float(loss), exact, dtype) <= 1.0
    # An odd offset: no 16-byte loads, the same order of summation, the same bits.
    shifted_p = cp.empty(size + 1, dtype)[1:]
    shifted_t = cp.empty(size + 1, dtype)[1:]
    shifted_p[...] = p
    shifted_t[...] = t
    assert cp.array_equal(mse(shifted_p, shifted_t), loss)


def test_results_stay_on_the_device_that_holds_the_data(gpu_backend):
    device = DEVICES - 1
    with cp.cuda.Device(device):
        p = cp.arange(10, dtype=cp.float32)
        t = cp.zeros(10, dtype=cp.float32)
    loss, grad = mse_and_grad(p, t)
    assert loss.device.id == device
    assert grad.device.id == device
    assert float(loss) == pytest.approx(float(np.mean(np.arange(10.0) ** 2)))


@pytest.mark.skipif(DEVICES < 2, reason="one GPU here")
def test_arrays_on_two_devices_are_an_error(gpu_backend):
    with cp.cuda.Device(0):
        p = cp.ones(4)
    with cp.cuda.Device(1):
        t = cp.ones(4)
    with pytest.raises(ValueError, match="must be on one GPU: predictions on GPU 0, targets on GPU 1"):
        mse(p, t)


def test_host_and_device_arrays_are_an_error(gpu_backend):
    with pytest.raises(TypeError, match="predictions is a GPU array but targets is not"):
        mse(cp.ones(3), np.ones(3))
    out = np.zeros(3)
    with pytest.raises(TypeError, match="out must be a GPU array like the inputs"):
        mse_grad(cp.ones(3), cp.zeros(3), out=out)


def test_kernels_run_on_the_current_stream(gpu_backend):
    rng = np.random.default_rng(1)
    predictions = rng.standard_normal(1 << 22).astype(np.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        p = cp.asarray(predictions)
        t = cp.zeros_like(p)
        out = cp.empty_like(p)
        loss, grad = mse_and_grad(p, t, out=out)
    stream.synchronize()
    assert grad is out
    np.testing.assert_array_equal(cp.asnumpy(out), (2 * predictions.astype(np.float64) / p.size).astype(np.float32))
    assert ulps(float(loss), exact_mean_squared_error(predictions, np.zeros_like(predictions)), np.float32) <= 1


def test_out_may_be_predictions_and_nothing_is_written_on_error(gpu_backend):
    p = cp.arange(6, dtype=cp.float64).reshape(2, 3)
    t = cp.ones((2, 3))
    expected = cp.asnumpy(mse_grad(p, t, axis=-1))
    assert mse_grad(p, t, axis=-1, out=p) is p
    np.testing.assert_array_equal(cp.asnumpy(p), expected)
    out = cp.full((2, 3), 7.0)
    with pytest.raises(ValueError, match="weights must be non-negative"):
        mse_grad(p, t, weights=cp.asarray([1.0, -1.0, 1.0]), out=out)
    assert bool((out == 7.0).all())


class _CudaInterfaceOnly:
    def __init__(self, array):
        self._array = array
        self.__cuda_array_interface__ = array.__cuda_array_interface__


class _DLPackOnly:
    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


@pytest.mark.parametrize("wrap", [_CudaInterfaceOnly, _DLPackOnly])
def test_any_cuda_array_interface_or_dlpack_producer(gpu_backend, wrap):
    p = cp.linspace(-1, 1, 1000, dtype=cp.float32)
    t = cp.zeros(1000, dtype=cp.float32)
    loss = mse(wrap(p), wrap(t))
    assert isinstance(loss, cp.ndarray)
    assert cp.array_equal(loss, mse(p, t))


def test_torch_cuda_tensors(gpu_backend):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch has no CUDA")
    p = torch.linspace(-1, 1, 1000, device="cuda", requires_grad=True)
    t = torch.zeros(1000, device="cuda")
    loss = torch.nn.functional.mse_loss(p, t)
    loss.backward()
    ours, grad = mse_and_grad(p.detach(), t)
    assert float(ours) == pytest.approx(loss.item(), rel=1e-6)
    np.testing.assert_allclose(cp.asnumpy(grad), p.grad.cpu().numpy(), rtol=1e-6)
    out = torch.empty_like(t)  # a GPU `out` of another library is written in place
    assert mse_grad(p.detach(), t, out=out) is out
    np.testing.assert_allclose(out.cpu().numpy(), p.grad.cpu().numpy(), rtol=1e-6)


def test_torch_tensors_are_computed_on_torchs_current_stream(gpu_backend):
    """Inside torch.cuda.stream(s), the inputs are written on s behind a kernel that spins
    for tens of milliseconds: fastmse's kernels must queue behind them on s (PyTorch's
    __cuda_array_interface__ names no stream), and its results be there for s's next work."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch has no CUDA")
    stream = torch.cuda.Stream()
    n = 1 << 20
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # about 30 ms of spinning on s: other streams overtake it
        p = torch.full((n,), 3.0, device="cuda")
        t = torch.ones(n, device="cuda")
        loss, grad = mse_and_grad(p, t, reduction="sum")
        doubled = torch.as_tensor(grad, device="cuda") * 2  # PyTorch's next work on s
    stream.synchronize()
    assert float(loss) == 4.0 * n
    assert bool((doubled == 8.0).all())


def test_numba_device_arrays(gpu_backend):
    cuda = pytest.importorskip("numba.cuda")
    p = cuda.to_device(np.linspace(-1, 1, 100))
    t = cuda.to_device(np.zeros(100))
    assert float(mse(p, t)) == pytest.approx(float(np.mean(np.linspace(-1, 1, 100) ** 2)), rel=1e-15)


@pytest.mark.parametrize("axis", [None, 0])
@pytest.mark.parametrize("weighted", [False, True])
def test_accumulator_keeps_gpu_sums_on_the_device(gpu_backend, axis, weighted):
    device = DEVICES - 1  # not the current GPU where there are two
    rng = np.random.default_rng(11)
    p, t = rng.standard_normal((2, 500, 3)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (500, 1)) if weighted else None
    whole = MSEAccumulator(axis=axis)
    halves = [MSEAccumulator(axis=axis), MSEAccumulator(axis=axis)]
    for k, (start, stop) in enumerate([(0, 123), (123, 500)]):
        with cp.cuda.Device(device):
            batch = [None if a is None else cp.asarray(a[start:stop]) for a in (p, t, w)]
        whole.update(*batch)
        halves[k].update(*batch)
    with cp.cuda.Device(device):  # an unpickled CuPy array lands on the current GPU
        second = pickle.loads(pickle.dumps(halves[1]))
    merged = second.merge(halves[0])
    for accumulator in (whole, merged):
        result = accumulator.result()
        assert isinstance(result, cp.ndarray)
        assert result.device.id == device
        assert result.dtype == np.float32
        assert_matches(cp.asnumpy(result), np.asarray(mse(p, t, weights=w, axis=axis), np.float64), np.float32)
    host = MSEAccumulator(axis=axis)
    host.update(p, t, w)
    with pytest.raises(TypeError, match="does not copy"):
        host.merge(whole)
    with pytest.raises(TypeError, match="does not copy"):
        whole.update(p, t, w)


def test_crysx_cupy_twins_stay_on_the_device(gpu_backend):
    crysx = importlib.import_module("fastmse.compat.crysx")
    rng = np.random.default_rng(12)
    p, t = rng.standard_normal((2, 300, 4)).astype(np.float32)
    loss = crysx.MSE_loss_cupy(cp.asarray(p), cp.asarray(t))
    assert isinstance(loss, cp.ndarray)
    assert loss.shape == ()
    assert loss.dtype == np.float32
    exact = np.sum((p.astype(np.float64) - t) ** 2) / 4
    assert_matches(cp.asnumpy(loss), np.asarray(exact), np.float32)
    grad = crysx.MSE_loss_grad_cupy(cp.asarray(p), cp.asarray(t))
    assert isinstance(grad, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(grad), crysx.MSE_loss_grad(p, t))  # 2 / 4: exact either way


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dask_with_cupy_chunks(gpu_backend, reduction):
    da = pytest.importorskip("dask.array")
    dask = pytest.importorskip("dask")
    rng = np.random.default_rng(13)
    p, t = rng.standard_normal((2, 400, 6)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (400, 1))
    lp, lt = (da.from_array(cp.asarray(a), chunks=(90, 4), asarray=False) for a in (p, t))
    lw = da.from_array(cp.asarray(w), chunks=(150, 1), asarray=False)
    lp_spread = da.from_array(cp.asarray(p[:1]), chunks=(1, 4), asarray=False)  # broadcast predictions
    for axis in [None] if reduction == "none" else [None, 0]:
        for predictions, lazy_predictions in ((p, lp), (p[:1], lp_spread)):
            for weights, lazy_weights in ((None, None), (w, lw)):
                kwargs = {"axis": axis, "reduction": reduction}
                lazy = mse_and_grad(lazy_predictions, lt, weights=lazy_weights, **kwargs)
                loss_alone = mse(lazy_predictions, lt, weights=lazy_weights, **kwargs)
                loss, grad, alone = dask.compute(*lazy, loss_alone, scheduler="sync")
                for result in (loss, grad, alone):
                    assert isinstance(result, cp.ndarray)
                expected_loss, expected_grad = mse_and_grad(predictions, t, weights=weights, **kwargs)
                for result in (loss, alone):
                    assert_matches(cp.asnumpy(result), np.asarray(expected_loss, np.float64), np.float32)
                assert_matches(cp.asnumpy(grad), expected_grad.astype(np.float64), np.float32)


@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer is not on PATH")
@pytest.mark.skipif(UNUSABLE is not None, reason=str(UNUSABLE))
@pytest.mark.parametrize("tool", ["memcheck", "racecheck", "initcheck", "synccheck"])
def test_kernels_are_clean_under_compute_sanitizer(tool):
    script = textwrap.dedent(
        """
        import cupy as cp
        from fastmse import MSEAccumulator, _backends, _gpu, mse, mse_and_grad, mse_grad
        import fastmse._core as core
        _backends._gpu_backend = _gpu.CudaBackend(core)
        for dtype in (cp.float16, cp.float32, cp.float64):
            p = cp.linspace(-1, 1, 3 * 4096 + 5, dtype=dtype)
            t = cp.zeros_like(p)
            mse(p, t); mse_grad(p, t); mse_and_grad(p, t)
            mse(p[1:], t[1:]); mse(p[::2], t[::2]); mse(p, t, reduction="none")
            q = p[: 60 * 200].reshape(60, 200)
            mse_and_grad(q, t[:200], axis=0); mse_and_grad(q, t[:200], axis=1, weights=t[:200] + 1)
            mse_grad(q[:, :1], q, axis=-1)
        cp.cuda.runtime.deviceSynchronize()
        """
    )
    result = subprocess.run(
        ["compute-sanitizer", f"--tool={tool}", "--error-exitcode=3", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CUPY_CACHE_IN_MEMORY": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "ERROR SUMMARY: 0 errors" in result.stdout
