"""``python -m fastmse bench``: fastmse against its peers and the memory ceiling.

Everything is measured in one process on the same generated arrays, round-robin (each
repeat runs every candidate once), so that a noisy, shared machine slows all of them
alike; medians are reported. Speed claims are ratios measured here, never constants.
"""

from __future__ import annotations

import importlib
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from . import _backends, mse, mse_and_grad, mse_grad
from ._config import get_num_threads, set_num_threads

SETTLE_SECONDS = 0.05  # before each timed call: see run

Timer = Callable[[Callable[[], Any]], float]


@dataclass
class Candidate:
    group: str  # "loss", "gradient", "loss+gradient" or "shapes"
    name: str
    run: Callable[[], Any]
    bytes_moved: int
    timer: Timer | None = None  # how one run is timed, where not as the others
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def _peer(name: str) -> ModuleType | None:
    """The module `name`, or None where it is not installed. Imported by name: type checkers
    then skip PyTorch's stubs (a slow part of a mypy run), for the few calls timed here."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


Batch = np.ndarray[tuple[int, int], np.dtype[np.floating[Any]]]  # (N, k) predictions or targets


def _crysx_kernels() -> tuple[Callable[[Batch, Batch], float], Callable[[Batch, Batch], np.ndarray]]:
    """The crysx_nn loss kernels' algorithm (crysx_nn/loss.py): a parallel double loop
    into one float64 scalar over an (N, k) batch, and the NumPy-style gradient."""
    from numba import njit, prange

    @njit(cache=True, fastmath=False, parallel=True)
    def crysx_mse_loss(outi: Batch, out0: Batch) -> float:
        loss = 0.0
        for i in prange(outi.shape[0]):
            for j in range(outi.shape[1]):
                loss = loss + (outi[i, j] - out0[i, j]) ** 2
        return loss / outi.shape[1]

    @njit(cache=True, fastmath=True)
    def crysx_mse_loss_grad(outi: Batch, out0: Batch) -> np.ndarray:
        return 2 * (outi - out0) / outi.shape[1]

    return crysx_mse_loss, crysx_mse_loss_grad


def _candidates(p: np.ndarray, t: np.ndarray, out: np.ndarray, columns: int) -> list[Candidate]:
    n, nbytes = p.size, p.nbytes
    read, rw = 2 * nbytes, 3 * nbytes
    found: list[Candidate] = []
    if "cpp" in _backends.available():
        core = _backends.load("cpp")._core  # type: ignore[attr-defined]
        found.append(
            Candidate(
                "loss",
                "read ceiling (stream both inputs once)",
                lambda: (core.stream_read(p), core.stream_read(t)),
                read,
            )
        )
    found += [
        Candidate("loss", "fastmse.mse(p, t)", lambda: mse(p, t), read),
        Candidate("loss", "np.mean((p - t) ** 2)", lambda: np.mean((p - t) ** 2), read),
        Candidate("gradient", "fastmse.mse_grad(p, t, out=o)", lambda: mse_grad(p, t, out=out), rw),
        Candidate("gradient", "np.subtract(p, t, out=o)", lambda: np.subtract(p, t, out=out), rw),
        Candidate("gradient", "2 * (p - t) / n", lambda: 2 * (p - t) / n, rw),
        Candidate("loss+gradient", "fastmse.mse_and_grad(p, t, out=o)", lambda: mse_and_grad(p, t, out=out), rw),
    ]
    try:
        import numba

        from ._numba import max_threads
    except ImportError:
        pass
    else:
        numba.set_num_threads(min(get_num_threads(), max_threads()))
        loss, grad = _crysx_kernels()
        p2, t2 = p.reshape(-1, columns), t.reshape(-1, columns)
        found.insert(3, Candidate("loss", "crysx_nn MSE_loss (Numba)", lambda: loss(p2, t2), read))
        found.insert(7, Candidate("gradient", "crysx_nn MSE_loss_grad (Numba)", lambda: grad(p2, t2), rw))
    torch = _peer("torch")
    if torch is not None:
        torch.set_num_threads(get_num_threads())
        tp, tt = torch.from_numpy(p), torch.from_numpy(t)
        found.append(
            Candidate("loss", "torch.nn.functional.mse_loss", lambda: torch.nn.functional.mse_loss(tp, tt), read)
        )

        def forward_backward() -> None:
            leaf = tp.detach().requires_grad_(True)
            torch.nn.functional.mse_loss(leaf, tt).backward()

        found.append(Candidate("loss+gradient", "torch mse_loss forward+backward", forward_backward, rw))
    return found


def _gpu_candidates(cp: Any, p: Any, t: Any, out: Any) -> list[Candidate]:
    """The GPU peers: CuPy's expressions, PyTorch on the same memory, and the ceilings."""
    n, nbytes = p.size, p.nbytes
    read, rw = 2 * nbytes, 3 * nbytes
    found: list[Candidate] = []
    backend = _backends.gpu()
    if backend.name == "cuda":  # the probe is one of the compiled kernels
        core = backend._core  # type: ignore[attr-defined]
        sink = cp.zeros(1, cp.uint64)

        def read_both() -> None:
            stream, device = cp.cuda.get_current_stream().ptr, p.device.id
            for array in (p, t):
                core.cuda_stream_read(array.data.ptr, array.nbytes, sink.data.ptr, device, stream)

        found.append(Candidate("loss", "read ceiling (stream both inputs once)", read_both, read))
    found += [
        Candidate("loss", "fastmse.mse(p, t)", lambda: mse(p, t), read),
        Candidate("loss", "cp.mean((p - t) ** 2)", lambda: cp.mean((p - t) ** 2), read),
        Candidate("gradient", "copy ceiling (o[...] = p)", lambda: cp.copyto(out, p), 2 * nbytes),
        Candidate("gradient", "fastmse.mse_grad(p, t, out=o)", lambda: mse_grad(p, t, out=out), rw),
        Candidate("gradient", "2 * (p - t) / n", lambda: 2 * (p - t) / n, rw),
        Candidate("loss+gradient", "fastmse.mse_and_grad(p, t, out=o)", lambda: mse_and_grad(p, t, out=out), rw),
    ]
    if backend.name == "cuda":  # the kernels alone, beside each whole call
        kernels = _kernel_timer(backend)
        found += [
            Candidate(c.group, f"{c.name} (kernels)", c.run, c.bytes_moved, kernels)
            for c in found
            if c.name.startswith("fastmse.")
        ]
        found += _gpu_shapes(cp, kernels)
    torch = _peer("torch")
    if torch is None or not torch.cuda.is_available():
        return found
    tp, tt = torch.as_tensor(p, device="cuda"), torch.as_tensor(t, device="cuda")  # same memory
    found.append(Candidate("loss", "torch.nn.functional.mse_loss", lambda: torch.nn.functional.mse_loss(tp, tt), read))

    def forward_backward() -> None:
        leaf = tp.detach().requires_grad_(True)
        torch.nn.functional.mse_loss(leaf, tt).backward()

    found.append(Candidate("loss+gradient", "torch mse_loss forward+backward", forward_backward, rw))
    return found


def _kernel_timer(backend: Any) -> Timer:
    """Seconds of device time the kernels of one run take (CUDA events around the launches,
    not around the Python before them)."""

    def kernels(run: Callable[[], Any]) -> float:
        with backend.timing_launches() as seconds:
            run()
        return float(sum(seconds))

    return kernels


# The shapes training and evaluation pass: (name, predictions' shape, targets' shape,
# weights' shape or None, axis).
GPU_SHAPES: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...] | None, int | None]] = [
    ("mse(p, t, axis=-1), (2**22, 64)", (1 << 22, 64), (1 << 22, 64), None, -1),
    ("mse(p, t, axis=-1), (2**24, 16)", (1 << 24, 16), (1 << 24, 16), None, -1),
    ("mse(p, t, axis=0), (2**20, 256)", (1 << 20, 256), (1 << 20, 256), None, 0),
    ("mse(p, t, weights=w), (2**22, 64), w (2**22, 1)", (1 << 22, 64), (1 << 22, 64), (1 << 22, 1), None),
    ("mse(p, t), (2**22, 64), t (64,)", (1 << 22, 64), (64,), None, None),
    ("mse(p, t, axis=-1), (256, 10)", (256, 10), (256, 10), None, -1),
]


def _gpu_shapes(cp: Any, kernels: Timer) -> list[Candidate]:
    """fastmse.mse on GPU_SHAPES (float32), whole call and kernels, and one empty kernel
    launch (what the smallest shape is measured against)."""
    found: list[Candidate] = []
    free = int(cp.cuda.Device().mem_info[0])
    for name, p_shape, t_shape, w_shape, axis in GPU_SHAPES:
        size = 4 * sum(math.prod(s) for s in (p_shape, t_shape, w_shape or ()))
        if 2 * size > free:  # leaves room for the results and the pool
            print(f"fastmse bench: {name} left out, {size / 2**30:.1f} GiB does not fit", file=sys.stderr)
            continue
        free -= size
        p = cp.random.standard_normal(p_shape, dtype=cp.float32)
        t = cp.random.standard_normal(t_shape, dtype=cp.float32)
        w = None if w_shape is None else cp.random.uniform(0.5, 1.5, w_shape, dtype=cp.float32)
        moved = p.nbytes + t.nbytes + (0 if w is None else w.nbytes)

        def call(p: Any = p, t: Any = t, w: Any = w, axis: int | None = axis) -> Any:
            return mse(p, t, weights=w, axis=axis)

        found += [
            Candidate("shapes", name, call, moved),
            Candidate("shapes", f"{name} (kernels)", call, moved, kernels),
        ]
    empty = cp.RawKernel('extern "C" __global__ void fastmse_empty() {}', "fastmse_empty")
    found.append(Candidate("shapes", "one empty kernel launch", lambda: empty((1,), (1,), ()), 0))
    return found


def _gpu_unavailable() -> str | None:
    """Why the GPU benchmark cannot run here, or None."""
    from ._gpu import cupy

    try:
        count = cupy().cuda.runtime.getDeviceCount()
    except TypeError as error:  # no CuPy
        return str(error)
    except Exception as error:  # noqa: BLE001 - CuPy's CUDARuntimeError: no driver
        return f"no usable CUDA device ({error})"
    return None if count else "no CUDA device"


def _timer(device: str) -> Callable[[Callable[[], Any]], float]:
    """Seconds one run takes: wall time on the CPU; CUDA events around it on the GPU
    (PyTorch and CuPy both queue on the legacy default stream here)."""
    if device == "cpu":

        def wall(run: Callable[[], Any]) -> float:
            start = time.perf_counter()
            run()
            return time.perf_counter() - start

        return wall
    from ._gpu import cupy

    cp = cupy()

    def events(run: Callable[[], Any]) -> float:
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        run()
        end.record()
        end.synchronize()
        return float(cp.cuda.get_elapsed_time(start, end)) / 1e3

    return events


def _progress(total: int) -> Any:
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return None
    return tqdm(total=total, desc="fastmse bench", unit="call", file=sys.stderr, leave=False)


def _exact_mean_squared_error(p: np.ndarray, t: np.ndarray) -> float:
    """mean((p - t)^2) correctly rounded: math.fsum over every squared difference (each
    exact in float64 for float32 inputs of like magnitude), streamed in chunks."""

    def squares() -> Iterator[float]:
        for start in range(0, p.size, 1 << 20):
            d = p[start : start + (1 << 20)].astype(np.float64) - t[start : start + (1 << 20)]
            yield from (d * d).tolist()

    return math.fsum(squares()) / p.size


def _accuracy(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """Error of each float32 loss in units in the last place of the exact mean."""
    exact = _exact_mean_squared_error(p, t)
    spacing = float(np.spacing(np.asarray(exact, p.dtype)))
    result = {
        "fastmse.mse": abs(float(mse(p, t)) - exact) / spacing,
        "np.mean((p - t) ** 2)": abs(float(np.mean((p - t) ** 2)) - exact) / spacing,
    }
    torch = _peer("torch")
    if torch is not None:
        value = float(torch.nn.functional.mse_loss(torch.from_numpy(p), torch.from_numpy(t)))
        result["torch.nn.functional.mse_loss"] = abs(value - exact) / spacing
    return result


def run(
    size: int = 1 << 25,
    dtype: str = "float32",
    repeat: int = 9,
    threads: int | None = None,
    columns: int = 16,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Time every candidate on `size` generated elements; returns the figures."""
    if threads is not None:
        set_num_threads(threads)
    size -= size % columns
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size, dtype=np.float32).astype(dtype)
    t = rng.standard_normal(size, dtype=np.float32).astype(dtype)
    where = f"{get_num_threads()} threads, backend {_backends.current().name}"
    if device == "gpu":
        from ._gpu import cupy

        cp = cupy()
        p, t = cp.asarray(p), cp.asarray(t)
        out = cp.empty_like(p)
        candidates = _gpu_candidates(cp, p, t, out)
        name = cp.cuda.runtime.getDeviceProperties(p.device.id)["name"]
        where = f"{name.decode() if isinstance(name, bytes) else name}, backend {_backends.gpu().name}"
    else:
        out = np.empty_like(p)
        candidates = _candidates(p, t, out, columns)
    timed = _timer(device)
    bar = _progress(len(candidates) * (repeat + 1))
    for candidate in candidates:  # warm-up: page faults, JIT compilation
        candidate.run()
        if bar is not None:
            bar.update()
    for _ in range(repeat):
        for candidate in candidates:
            # A pause first: the thread pool of the call before (Numba's OpenMP threads,
            # after crysx_nn's kernels) spins on for a while, and on two cores the next
            # call shared them with it (fastmse.mse 12.3 ms where it takes 7.0 alone, on
            # a 2-vCPU Xeon). Each call is timed as a call made on its own.
            time.sleep(SETTLE_SECONDS)
            candidate.times.append((candidate.timer or timed)(candidate.run))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return {
        "size": size,
        "dtype": dtype,
        "repeat": repeat,
        "device": device,
        "where": where,
        "machine": f"{platform.system()} {platform.machine()}, {platform.processor() or 'cpu'}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "results": [
            {"group": c.group, "name": c.name, "median_s": c.median, "gbps": c.bytes_moved / max(c.median, 1e-12) / 1e9}
            for c in candidates
        ],
        "ulps": _accuracy(p, t) if dtype == "float32" and device == "cpu" else {},
    }


def targets(figures: dict[str, Any]) -> list[tuple[str, float, float, bool]]:
    """The issue's speed targets as (what, measured, goal, met)."""
    time_of = {r["name"]: r["median_s"] for r in figures["results"]}
    checks = []

    def ratio(what: str, slow: str, fast: str, goal: float) -> None:
        if slow in time_of and fast in time_of:
            value = time_of[slow] / time_of[fast]
            checks.append((what, value, goal, value >= goal))

    if figures.get("device") == "gpu":  # the GPU issue's targets
        gbps = {r["name"]: r["gbps"] for r in figures["results"]}
        ratio("mse fraction of the read ceiling", "read ceiling (stream both inputs once)", "fastmse.mse(p, t)", 0.90)
        if "copy ceiling (o[...] = p)" in gbps:
            value = gbps["fastmse.mse_grad(p, t, out=o)"] / gbps["copy ceiling (o[...] = p)"]
            checks.append(("mse_grad fraction of copy bandwidth (GB/s)", value, 0.85, value >= 0.85))
        ratio(
            "mse_and_grad speed-up over torch forward+backward",
            "torch mse_loss forward+backward",
            "fastmse.mse_and_grad(p, t, out=o)",
            2.5,
        )
        ratio(
            "mse speed-up over torch mse_loss",
            "torch.nn.functional.mse_loss",
            "fastmse.mse(p, t)",
            1.8,
        )
        ratio("mse speed-up over cp.mean((p - t) ** 2)", "cp.mean((p - t) ** 2)", "fastmse.mse(p, t)", 3.5)
        kernel_time = time_of.get("fastmse.mse(p, t) (kernels)")
        if kernel_time is not None and figures["size"] == 1 << 28 and figures["dtype"] == "float32":
            value = 0.50e-3 / kernel_time
            checks.append(("mse kernels within 0.50 ms on 2**28 float32 (ratio)", value, 1.0, value >= 1.0))
        ceiling = gbps.get("read ceiling (stream both inputs once)")
        for shape, *_ in GPU_SHAPES:
            measured = f"{shape} (kernels)"
            if measured not in time_of:
                continue
            if shape.endswith("(256, 10)"):  # a small batch: against one launch, not bandwidth
                ratio(f"{shape}: 2 x empty launch / kernels", "one empty kernel launch", measured, 0.5)
            elif ceiling:
                value = gbps[measured] / ceiling
                checks.append((f"{shape}: kernels' fraction of the read ceiling", value, 0.8, value >= 0.8))
        return checks
    ratio("mse speed-up over np.mean((p - t) ** 2)", "np.mean((p - t) ** 2)", "fastmse.mse(p, t)", 3.0)
    ratio("mse speed-up over crysx_nn's Numba kernel", "crysx_nn MSE_loss (Numba)", "fastmse.mse(p, t)", 1.3)
    ratio("mse fraction of the read ceiling", "read ceiling (stream both inputs once)", "fastmse.mse(p, t)", 0.85)
    ratio(
        "mse_grad(out) vs np.subtract(out) (time ratio)",
        "np.subtract(p, t, out=o)",
        "fastmse.mse_grad(p, t, out=o)",
        1 / 1.10,
    )
    ratio(
        "mse_and_grad vs mse_grad + 15% (time ratio)",
        "fastmse.mse_grad(p, t, out=o)",
        "fastmse.mse_and_grad(p, t, out=o)",
        1 / 1.15,
    )
    for name, ulps in figures["ulps"].items():
        if name == "fastmse.mse":
            checks.append(("mse float32 error (ulp)", ulps, 1.0, ulps <= 1.0))
    return checks


def report(figures: dict[str, Any]) -> str:
    """The figures as a table, with the targets."""
    lines = [
        (
            f"fastmse bench: {figures['size']:,} {figures['dtype']} elements per input, "
            f"{figures['where']}, median of {figures['repeat']}"
        ),
        f"{figures['machine']}; Python {figures['python']}, NumPy {figures['numpy']}",
        "",
        f"{'operation':14s} {'implementation':42s} {'ms':>9s} {'GB/s':>7s} {'fastmse is':>12s}",
    ]
    fastest: dict[str, float] = {}
    for r in figures["results"]:
        if r["name"].startswith("fastmse."):
            fastest.setdefault(r["group"], r["median_s"])
    for r in figures["results"]:
        mine = fastest.get(r["group"])
        relative = "" if mine is None or r["name"].startswith("fastmse.") else f"{r['median_s'] / mine:.2f}x"
        lines.append(f"{r['group']:14s} {r['name']:42s} {r['median_s'] * 1e3:9.2f} {r['gbps']:7.2f} {relative:>12s}")
    if figures["ulps"]:
        lines += ["", "float32 loss error, in units in the last place of the exact mean:"]
        lines += [f"  {name:40s} {ulps:8.3f}" for name, ulps in figures["ulps"].items()]
    lines += ["", "targets (ratios measured in this run):"]
    for what, value, goal, met in targets(figures):
        lines.append(
            f"  {'met ' if met else 'MISS'} {what:52s} {value:7.3f} (goal {'<=' if 'ulp' in what else '>='} {goal:.3f})"
        )
    return "\n".join(lines)


def main(
    size: int | None, dtype: str, repeat: int, threads: int | None, json_path: str | None, device: str = "cpu"
) -> int:
    if size is None:
        size = 1 << 28 if device == "gpu" else 1 << 25
    if device == "gpu":
        problem = _gpu_unavailable()
        if problem:
            print(f"fastmse bench --device gpu: {problem}", file=sys.stderr)
            return 2
    figures = run(size=size, dtype=dtype, repeat=repeat, threads=threads, device=device)
    print(report(figures))
    if json_path:
        with open(json_path, "w") as handle:
            json.dump({**figures, "targets": [list(t) for t in targets(figures)]}, handle, indent=1)
    return 0


__all__ = ["main", "report", "run", "targets"]
