"""The CUDA kernels (cuda/kernels.cu) run on the CPU: the test-only module fastmse._cuda_host
compiles their own source against cuda/host_model.hpp (each thread of a block a fiber, real
block barriers and warp shuffles), and these tests drive it through the code that drives the
real kernels on a GPU: the public functions, the plan, and _gpu.CudaBackend's translation of
the plan into entry-point arguments, with NumPy arrays where CuPy's would be.

Every result is compared with the float64 reference, with the CPU backend (within rounding:
the summation orders differ) and with itself on emulated devices of 1, 3, 8 and 132
multiprocessors, bit for bit: the grid follows the device, the summation order never does.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import reference
from checks import assert_finishes_loss, assert_matches, call, empty_mean
from fastmse import _backends, _gpu, mse, mse_and_grad, mse_grad
from fastmse._plan import Operands, Plan
from hypothesis import given
from strategies import calls

try:
    HOST = importlib.import_module("fastmse._cuda_host")
except ImportError:
    if os.environ.get("FASTMSE_REQUIRE_CUDA_HOST"):  # .ci/test-wheel builds it: missing is a failure there
        raise
    pytest.skip(
        "fastmse._cuda_host is not built (pip install . -C cmake.define.FASTMSE_CUDA_HOST_MODEL=ON)",
        allow_module_level=True,
    )

PASSES = ("reduce", "grad", "reduce_and_grad", "squared_error", "reduce_difference")
SM_COUNTS = (1, 3, 8, 132)
DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)
GUARD = 64  # bytes on either side of every workspace, which the kernels must not touch
SENTINEL = 0xA5
TILE = 4096  # positions per tile (kTilePositions in cuda/kernels.cu); outputs of <= 1024 go to row_kernel


class HostMemory:
    """_gpu.DeviceMemory over NumPy arrays (device 0, stream 0). Every workspace is laid
    between guard bytes that must stay as they are, and filled with a sentinel that the
    kernels must overwrite everywhere: cuda_workspace_bytes sizes exactly what they touch."""

    def __init__(self) -> None:
        self.areas: list[np.ndarray] = []

    def device(self, array: Any) -> int:
        return 0

    def address(self, array: Any) -> int:
        return int(array.__array_interface__["data"][0])

    def stream(self) -> int:
        return 0

    def scratch(self, nbytes: int) -> np.ndarray:
        area = np.full(nbytes + 2 * GUARD, SENTINEL, np.uint8)
        self.areas.append(area)
        return area[GUARD : GUARD + nbytes]

    def mark(self) -> float:
        return time.perf_counter()  # the host model's launches end before they return

    def seconds(self, start: float, end: float) -> float:
        return end - start

    def check_workspaces(self) -> None:
        sentinel_word = np.frombuffer(bytes([SENTINEL]) * 8, np.uint64)[0]
        for area in self.areas:
            assert np.all(area[:GUARD] == SENTINEL), "a kernel wrote below its workspace"
            assert np.all(area[-GUARD:] == SENTINEL), "a kernel wrote past its workspace"
            untouched = np.count_nonzero(area[GUARD:-GUARD].view(np.uint64) == sentinel_word)
            assert untouched == 0, f"{untouched} words of the workspace were never written: sized too large"
        self.areas.clear()


class Recorder:
    """A backend that notes each pass it is asked for and runs it on `backend`."""

    name = "cuda"
    rows_first = False  # as the GPU backends: a sum over rows takes two passes

    small_call = None  # every call through the passes

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.ran: list[str] = []


def _recording(name: str) -> Callable[[Recorder, Plan], None]:
    def run(self: Recorder, plan: Plan) -> None:
        self.ran.append(name)
        getattr(self.backend, name)(plan)

    return run


for _name in PASSES:
    setattr(Recorder, _name, _recording(_name))


@pytest.fixture
def host_kernels(monkeypatch):
    """Sends host arrays to the CUDA kernels run by the host model, through CudaBackend."""
    memory = HostMemory()
    recorder = Recorder(_gpu.CudaBackend(HOST, memory))
    monkeypatch.setattr(_backends, "_current", recorder)
    monkeypatch.setattr(_backends, "small_call", recorder.small_call)
    yield recorder
    memory.check_workspaces()


def _bits(result: Any) -> list[tuple[str, tuple[int, ...], bytes]]:
    parts = result if isinstance(result, tuple) else (result,)
    return [(np.asarray(r).dtype.str, np.shape(r), np.asarray(r).tobytes()) for r in parts]


def on_every_device(compute: Callable[[], Any]) -> Any:
    """compute() on emulated devices of each of SM_COUNTS multiprocessors, every other one
    (the first: a block does many tiles there) running a block's warps in reverse order, so
    that a missing barrier would show; the results are bitwise the same. Returns the first."""
    default = HOST.multiprocessor_count()
    results = []
    try:
        for k, count in enumerate(SM_COUNTS):
            HOST.set_multiprocessor_count(count)
            HOST.set_reverse_order(k % 2 == 0)
            results.append(compute())
    finally:
        HOST.set_multiprocessor_count(default)
        HOST.set_reverse_order(False)
    for count, other in zip(SM_COUNTS[1:], results[1:], strict=True):
        assert _bits(other) == _bits(results[0]), f"{count} multiprocessors changed the bits of {SM_COUNTS[0]}'s"
    return results[0]


def _close_to_cpu(result: Any, cpu: Any, dtype: np.dtype) -> None:
    """Within two units in the last place of the CPU backend's result (each is within one of
    the exact value; float64: 1e-13 relative)."""
    a, b = np.asarray(result, np.float64), np.asarray(cpu, np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    finite = ~np.isnan(b)
    if dtype == np.float64:
        limit = 1e-13 * np.abs(b[finite]) + 1e-300
    else:
        limit = 2 * np.spacing(np.abs(b[finite]).astype(dtype)).astype(np.float64)
    assert np.all(np.abs(a[finite] - b[finite]) <= limit), (a, b)


def _layout(name: str, dtype: type, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(predictions, targets, kwargs) of one layout the kernels treat apart."""
    n = 3 * TILE + 5  # several tiles, and a tail past the last 16-byte step

    def values(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    if name == "flat":
        return values(n), values(n), {}
    if name == "flat, misaligned by one element":
        p = np.empty(n + 1, dtype)[1:]
        p[...] = values(n)
        return p, values(n), {}
    if name == "strided":
        return values(2 * n)[::2], values(n), {}
    if name == "broadcast targets":
        return values(60, 70), values(1, 70), {}
    if name == "rows of 3":
        return values(300, 3), values(300, 3), {"axis": -1}
    if name == "rows of 100":
        return values(50, 100), values(50, 100), {"axis": -1}
    if name == "rows of 1000":
        return values(20, 1000), values(20, 1000), {"axis": -1}
    if name == "kept first, one tile":
        return values(4, 3000), values(4, 3000), {"axis": -1}
    if name == "kept first, tiled":
        return values(3, 2 * TILE + 3), values(3, 2 * TILE + 3), {"axis": -1}
    if name == "kept last, short":
        return values(200, 7), values(200, 7), {"axis": 0}
    if name == "kept last, tiled":
        return values(TILE + 9, 5), values(TILE + 9, 5), {"axis": 0}
    if name == "kept last, 70 columns":
        return values(300, 70), values(300, 70), {"axis": 0}
    if name == "kept outer and last":
        return values(3, 500, 40), values(3, 500, 40), {"axis": 1}
    if name == "two summed dimensions":  # targets broadcast: the summed dimensions do not merge
        return values(7, 33, 45), values(33, 1), {"axis": (1, 2)}
    if name == "float64 weights":
        return values(n), values(n), {"weights": rng.uniform(0.5, 2.0, n)}
    if name == "weights per sample":  # summed: in a mean they cancel, and no weight is read
        weights = rng.uniform(0.5, 2.0, (40, 1)).astype(dtype)
        return values(40, 9), values(40, 9), {"weights": weights, "axis": -1, "reduction": "sum"}
    if name == "weights per position":  # a weighted mean per output: its own divisor and factor
        return values(40, 9), values(40, 9), {"weights": rng.uniform(0.5, 2.0, (40, 9)).astype(dtype), "axis": -1}
    raise AssertionError(name)


LAYOUTS = (
    "flat",
    "flat, misaligned by one element",
    "strided",
    "broadcast targets",
    "rows of 3",
    "rows of 100",
    "rows of 1000",
    "kept first, one tile",
    "kept first, tiled",
    "kept last, short",
    "kept last, tiled",
    "kept last, 70 columns",
    "kept outer and last",
    "two summed dimensions",
    "float64 weights",
    "weights per sample",
    "weights per position",
)


def _run_pass(name: str, p: np.ndarray, t: np.ndarray, kwargs: dict[str, Any]) -> Any:
    """The public call that asks for pass `name`."""
    if name == "reduce":
        return mse(p, t, **kwargs)
    if name == "squared_error":
        return mse(p, t, reduction="none", **{k: v for k, v in kwargs.items() if k not in ("axis", "reduction")})
    if name == "reduce_and_grad":
        return mse_and_grad(p, t, **kwargs)
    return mse_grad(p, t, **kwargs)  # grad; reduce_difference where predictions broadcast


def _expected(name: str, p: np.ndarray, t: np.ndarray, kwargs: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(float64 reference, magnitude of its terms) of each result of _run_pass."""
    if name == "squared_error":
        kwargs = {k: v for k, v in kwargs.items() if k not in ("axis", "reduction")}
        return [(reference.loss(p, t, reduction="none", **kwargs), None)]
    loss = (reference.loss(p, t, **kwargs), None)
    grad = (reference.grad(p, t, **kwargs), reference.grad(p, t, absolute=True, **kwargs))
    return {"reduce": [loss], "reduce_and_grad": [loss, grad]}.get(name, [grad])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", PASSES)
def test_every_pass_dtype_and_layout(host_kernels, name, dtype, layout):
    rng = np.random.default_rng(zlib.crc32(f"{name} {np.dtype(dtype).name} {layout}".encode()))
    p, t, kwargs = _layout(layout, dtype, rng)
    if name == "reduce_difference":  # predictions broadcast along what is summed
        full = np.broadcast_shapes(p.shape, t.shape)
        t = t if t.shape == full else rng.standard_normal(full).astype(dtype)
        p = p[..., :1] if kwargs.get("axis") == -1 else p[:, :1] if kwargs.get("axis") == 1 else p[:1]
    result = on_every_device(lambda: _run_pass(name, p, t, kwargs))
    assert name in host_kernels.ran, host_kernels.ran
    with _backends.use("cpp"):
        cpu = _run_pass(name, p, t, kwargs)
    results = result if isinstance(result, tuple) else (result,)
    cpus = cpu if isinstance(cpu, tuple) else (cpu,)
    for got, on_cpu, (exact, magnitude) in zip(results, cpus, _expected(name, p, t, kwargs), strict=True):
        assert_matches(got, exact, np.dtype(dtype), magnitude=magnitude)
        _close_to_cpu(got, on_cpu, np.dtype(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fused", [False, True])
def test_out_may_be_the_predictions(host_kernels, dtype, fused):
    rng = np.random.default_rng(7)
    p, t = rng.standard_normal((2, 30, 3 * TILE + 1)).astype(dtype)
    expected = reference.grad(p, t, axis=-1)

    def compute() -> Any:
        q = p.copy()
        result = mse_and_grad(q, t, axis=-1, out=q) if fused else mse_grad(q, t, axis=-1, out=q)
        assert (result[1] if fused else result) is q
        return result

    result = on_every_device(compute)
    grad = result[1] if fused else result
    assert_matches(grad, expected, np.dtype(dtype), magnitude=reference.grad(p, t, axis=-1, absolute=True))
    if fused:  # the loss was summed before the gradient overwrote the predictions
        assert_matches(result[0], reference.loss(p, t, axis=-1), np.dtype(dtype))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_16_bit_nans_are_stored_as_on_the_cpu(host_kernels, dtype):
    # CUDA's own conversions store every NaN as 0x7FFF; the kernels store the CPU's bits.
    p = np.array([np.nan, -np.nan, 1.0, np.inf, -np.inf]).astype(dtype)
    t = np.array([0.0, 0.0, np.nan, np.inf, 1.0]).astype(dtype)

    def compute() -> Any:
        return mse(p, t, reduction="none"), mse_grad(p, t, reduction="sum")

    results = on_every_device(compute)
    with _backends.use("cpp"):
        cpu = compute()
    for got, expected in zip(results, cpu, strict=True):
        assert got.view(np.uint16).tolist() == expected.view(np.uint16).tolist()


@given(case=calls(dtypes=DTYPES))
def test_any_call_matches_the_reference(host_kernels, case):
    predictions, targets, kwargs = case
    dtype = reference.result_dtype(predictions, targets)
    loss = on_every_device(lambda: call(mse, predictions, targets, kwargs))
    assert_matches(loss, reference.loss(predictions, targets, **kwargs), dtype)
    grad = on_every_device(lambda: call(mse_grad, predictions, targets, kwargs))
    magnitude = reference.grad(predictions, targets, absolute=True, **kwargs)
    assert_matches(grad, reference.grad(predictions, targets, **kwargs), dtype, magnitude=magnitude)
    fused = on_every_device(lambda: call(mse_and_grad, predictions, targets, kwargs))
    assert _bits(fused) == _bits((loss, grad))
    if not empty_mean(predictions, targets, kwargs):
        with _backends.use("cpp"):
            _close_to_cpu(loss, mse(predictions, targets, **kwargs), dtype)


BEYOND_INT32 = 2**31 + 2 * TILE + 3  # positions of one output


@pytest.mark.slow
def test_more_than_2_to_the_31_positions():
    """64-bit index arithmetic in the tiled and the map kernels, through zero strides:
    one output of 2**31 + 8195 positions, each adding exactly 1; and a squared error over
    2**21 x 1025 positions whose rows write one element each, the last rows from positions
    past 2**31 (a wrapped index would leave them NaN)."""
    backend = _gpu.CudaBackend(HOST, HostMemory())
    one, zero = np.ones(1, np.float16), np.zeros(1, np.float16)
    loss = np.full(1, np.nan)
    backend.reduce(Plan((BEYOND_INT32,), 0, Operands(one, zero, loss=loss), [(0,), (0,), (), (), (0,), ()]))
    assert loss[0] == BEYOND_INT32
    rows, columns = 2**21, 1025
    predictions = np.arange(rows, dtype=np.float32)
    out = np.full(rows, np.nan, np.float32)
    plan = Plan(
        (rows, columns),
        0,
        Operands(predictions, zero.astype(np.float32), out=out),
        [(1, 0), (0, 0), (), (1, 0), (), ()],
    )
    backend.squared_error(plan)
    np.testing.assert_array_equal(out, (predictions.astype(np.float64) ** 2).astype(np.float32))


def test_the_host_model_keeps_cudas_rules():
    """A block sum by warp shuffles, shared memory and a barrier gives each block's sum;
    kernels that break the rules are refused, naming the kernel and what each thread did."""
    blocks = 5
    for reverse in (False, True):
        HOST.set_reverse_order(reverse)
        try:
            sums = HOST.run_host_model_case("block_sum", blocks)
        finally:
            HOST.set_reverse_order(False)
        assert sums == [float(sum(range(b * 256, (b + 1) * 256))) for b in range(blocks)]
    refusals = {
        "leaves_before_a_barrier": r"threads 0-127: waiting at __syncthreads \(host_model_faults.cpp:\d+\); "
        r"threads 128-255: left",
        "waits_at_two_barriers": r"threads 0-31: waiting at __syncthreads \(host_model_faults.cpp:(\d+)\); "
        r"threads 32-63: waiting at __syncthreads \(host_model_faults.cpp:(?!\1)\d+\)",
        "leaves_during_a_shuffle": r"threads 0-4: waiting at __shfl_down_sync \(host_model_faults.cpp:\d+\); "
        r"thread 5: left",
    }
    for name, what in refusals.items():
        with pytest.raises(RuntimeError, match=rf"kernel .*{name}, block 0 of {blocks}: .*{what}"):
            HOST.run_host_model_case(name, blocks)


@pytest.mark.skipif("asan" not in os.environ.get("LD_PRELOAD", ""), reason="AddressSanitizer is not loaded")
def test_an_out_of_bounds_read_is_caught():
    """Under .ci/sanitize, a kernel that reads past its array stops the process with
    AddressSanitizer's report, as compute-sanitizer's memcheck would on a GPU."""
    script = "import fastmse._cuda_host as h; h.run_host_model_case('reads_past_the_end', 1)"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "heap-buffer-overflow" in result.stderr


def test_the_launches_are_timed_apart_from_python(host_kernels):
    """timing_launches brackets each call's launches, and only them, with marks on the
    stream (what `bench --device gpu` reports as kernel time beside the whole call)."""
    p, t = np.ones((3, 2 * TILE + 1), np.float32), np.zeros((3, 2 * TILE + 1), np.float32)
    with host_kernels.backend.timing_launches() as seconds:
        mse(p, t, axis=-1)  # tile and finish kernels: one entry call
        mse_and_grad(p, t)
    assert len(seconds) == 2
    assert all(s > 0 for s in seconds)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_finish_the_loss_they_are_asked_to(dtype):
    memory = HostMemory()
    assert_finishes_loss(_gpu.CudaBackend(HOST, memory), dtype)
    memory.check_workspaces()
