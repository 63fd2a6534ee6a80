"""``python -m fastmse bench --shapes``: the shapes training and evaluation loops use, side
by side in one run: a loss per sample over k outputs, per-column losses, weights per
sample (which cancel from a loss per sample) or per position, a target per column, small
batches (weighted or not), flat arrays of every size, float64. For each, the per-call
time and GB/s of ``mse``, ``mse_grad(out=)`` and ``mse_and_grad(out=)``, the fastest of
the NumPy and PyTorch expressions doing the same job, and the fraction of the flat sum's
GB/s (of the same dtype) measured in the same run."""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import mse, mse_and_grad, mse_grad
from ._config import get_num_threads, set_num_threads

Run = Callable[[], Any]
SETTLE_SECONDS = 0.025  # untimed calls before each sample (_seconds)


@dataclass
class Shape:
    """One call shape: predictions' shape, the axis, weights' shape (or none) and
    targets' shape (or predictions')."""

    label: str
    family: str  # the label with N for the number of rows: the same kind of call at any size
    shape: tuple[int, ...]
    axis: int | None = None
    weights: tuple[int, ...] | None = None
    dtype: str = "float32"
    targets: tuple[int, ...] | None = None
    times: dict[str, list[float]] = field(default_factory=dict)


def _rows(elements: int, k: int, family: str, **kwargs: Any) -> Shape:
    """A family of (N, k) calls at `elements` positions: its label names N."""
    return Shape(family.replace("N", str(elements // k), 1), family, (elements // k, k), **kwargs)


def _families(elements: int) -> list[Shape]:
    top = elements.bit_length() - 1
    return [
        *(Shape(f"flat 2**{e}", "flat", (1 << e,)) for e in sorted({10, 16, 20, top}) if e <= top),
        *(_rows(elements, k, f"(N, {k}) axis=-1", axis=-1) for k in (1, 3, 10, 16, 100, 1000)),
        _rows(elements, 16, "(N, 16) axis=0", axis=0),
        _rows(elements, 3, "(N, 3) axis=0", axis=0),
        _rows(elements, 10, "(N, 10) weights per sample", weights=(elements // 10, 1)),
        _rows(elements, 10, "(N, 10) axis=-1 weights per sample", axis=-1, weights=(elements // 10, 1)),
        _rows(elements, 10, "(N, 10) axis=-1 weights per position", axis=-1, weights=(elements // 10, 10)),
        _rows(elements, 10, "(N, 10) weights per position", weights=(elements // 10, 10)),
        _rows(elements, 10, "(N, 10) a target per column", targets=(10,)),
        _rows(elements, 10, "(N, 10) axis=-1 a target per column", axis=-1, targets=(10,)),
        Shape("(256, 10) axis=-1", "(256, 10) axis=-1", (256, 10), -1),
        Shape("(256, 10) weights per sample", "(256, 10) weights per sample", (256, 10), None, (256, 1)),
        Shape("(256, 10) a target per column", "(256, 10) a target per column", (256, 10), targets=(10,)),
        Shape(f"flat 2**{top} float64", "flat float64", (1 << top,), dtype="float64"),
        _rows(elements, 10, "(N, 10) axis=-1 float64", axis=-1, dtype="float64"),
    ]


def _calls(case: Shape, rng: np.random.Generator, torch: Any) -> dict[str, tuple[Run, int]]:
    """name -> (call, bytes it must move at least)."""
    p = rng.standard_normal(case.shape, dtype=np.float32).astype(case.dtype)
    t = rng.standard_normal(case.targets or case.shape, dtype=np.float32).astype(case.dtype)
    # Weights in (0, 1]: a weight per sample of 0 (about one in 2**24 of rng.random's) gives its
    # row a mean over weights that sum to zero, and a warning from every call.
    w = None if case.weights is None else (1 - rng.random(case.weights, dtype=np.float32)).astype(case.dtype)
    out = np.empty_like(p)
    axis, write = case.axis, p.nbytes
    read = p.nbytes + t.nbytes + (0 if w is None else w.nbytes)
    count = p.size if axis is None else p.shape[axis]
    loss = p.nbytes // count  # one element per output: of (N, 1) with axis=-1, as many as p
    calls: dict[str, tuple[Run, int]] = {
        "mse": (lambda: mse(p, t, weights=w, axis=axis), read + loss),
        "mse_grad(out=)": (lambda: mse_grad(p, t, weights=w, axis=axis, out=out), read + write),
        "mse_and_grad(out=)": (lambda: mse_and_grad(p, t, weights=w, axis=axis, out=out), read + write + loss),
    }
    if w is None:
        calls["numpy loss"] = (lambda: np.mean((p - t) ** 2, axis=axis), read)
        calls["numpy grad"] = (lambda: np.multiply(p - t, 2 / count, out=out), read + write)
    else:
        total = np.sum(np.broadcast_to(w, p.shape), axis=axis, keepdims=True)
        calls["numpy loss"] = (lambda: np.sum(w * (p - t) ** 2, axis=axis) / total.squeeze(), read)
        calls["numpy grad"] = (lambda: np.multiply(2 * w * (p - t), 1 / total, out=out), read + write)
    if torch is not None:
        tp, tt = torch.from_numpy(p), torch.from_numpy(t)
        tw = None if w is None else torch.from_numpy(w)
        dims = () if axis is None else (axis,)
        if tw is None:
            calls["torch loss"] = (lambda: ((tp - tt) ** 2).mean(dim=dims), read)
        else:
            tw_sum = tw.expand_as(tp).sum(dim=dims)
            calls["torch loss"] = (lambda: (tw * (tp - tt) ** 2).sum(dim=dims) / tw_sum, read)
    return calls


def _read_ceiling(elements: int) -> Run | None:
    try:
        core = importlib.import_module("fastmse._core")
    except ImportError:
        return None
    a = np.ones(elements, np.float32)
    b = np.ones(elements, np.float32)
    return lambda: (core.stream_read(a), core.stream_read(b))


@dataclass
class Measured:
    """One run of every shape family: each case with its calls (their bytes) and times."""

    elements: int
    threads: int
    repeat: int
    cases: list[tuple[Shape, dict[str, tuple[Run, int]]]]
    ceiling_seconds: float | None  # reading both inputs of the flat case once

    def median(self, case: Shape, name: str) -> float:
        """Median seconds per call, the warm-up round left out."""
        return statistics.median(case.times[name][1:])


def measure(elements: int = 1 << 22, repeat: int = 7, threads: int | None = None, seed: int = 0) -> Measured:
    """Times every shape family at `elements` positions, round-robin."""
    if threads is not None:
        set_num_threads(threads)
    try:
        torch: Any = importlib.import_module("torch")
        torch.set_num_threads(get_num_threads())
    except ImportError:
        torch = None
    rng = np.random.default_rng(seed)
    plans = [(case, _calls(case, rng, torch)) for case in _families(elements)]
    ceiling = _read_ceiling(elements)
    ceiling_times: list[float] = []
    # Calls shorter than a timer's resolution are repeated: `number` calls per sample.
    number = {(case.label, name): 1 for case, calls in plans for name in calls}
    for round_ in range(repeat + 1):  # round-robin; the first round warms up (page faults, JIT)
        if ceiling is not None:
            ceiling_times.append(_seconds(ceiling, 1))
        for case, calls in plans:
            for name, (call, _) in calls.items():
                seconds = _seconds(call, number[case.label, name])
                if round_ == 0:
                    number[case.label, name] = max(1, int(2e-3 / max(seconds, 1e-9)))
                case.times.setdefault(name, []).append(seconds)
    ceiling_s = statistics.median(ceiling_times[1:]) if ceiling_times else None
    return Measured(elements, get_num_threads(), repeat, plans, ceiling_s)


def run(elements: int = 1 << 22, repeat: int = 7, threads: int | None = None, seed: int = 0) -> str:
    """Times every shape family; returns the table."""
    measured = measure(elements, repeat, threads, seed)
    title = f"fastmse bench --shapes: {measured.threads} threads, median of {repeat}"
    lines = [title + "; GB/s counts each input (weights too) read once and each result written once"]
    if measured.ceiling_seconds is not None:
        gbps = 2 * 4 * elements / measured.ceiling_seconds / 1e9
        lines.append(f"read ceiling: {gbps:.1f} GB/s (2 x 2**{elements.bit_length() - 1} float32)")
    # A shape's GB/s over the flat loss's of its dtype: on a cache that holds much of 2**22
    # float32 inputs but less of float64 ones, float64's flat loss itself streams slower.
    flat_gbps = {
        case.dtype: calls["mse"][1] / measured.median(case, "mse") / 1e9
        for case, calls in measured.cases
        if case.shape == (elements,)
    }
    header = (
        f"{'shape':44s} {'call':20s} {'fastmse ms':>11s} {'GB/s':>6s} {'of flat':>8s} {'peer ms':>9s} {'speed-up':>9s}"
    )
    lines += ["", header]
    for case, calls in measured.cases:
        median = {name: measured.median(case, name) for name in case.times}
        peers = {
            "mse": [median.get("numpy loss"), median.get("torch loss")],
            "mse_grad(out=)": [median.get("numpy grad")],
            "mse_and_grad(out=)": [None if "numpy loss" not in median else median["numpy loss"] + median["numpy grad"]],
        }
        for name in ("mse", "mse_grad(out=)", "mse_and_grad(out=)"):
            seconds, moved = median[name], calls[name][1]
            gbps = moved / seconds / 1e9
            fastest = min((s for s in peers[name] if s is not None), default=None)
            of_flat = f"{gbps / flat_gbps[case.dtype]:.2f}"
            speed_up = f"{fastest / seconds:.2f}x" if fastest else ""
            peer = f"{fastest * 1e3:.3f}" if fastest else ""
            lines.append(
                f"{case.label:44s} {name:20s} {seconds * 1e3:11.3f} {gbps:6.1f} {of_flat:>8s} {peer:>9s} {speed_up:>9s}"
            )
    lines += [
        "",
        "of flat: GB/s over that of mse on the flat array of the same dtype and size",
        "peer: the fastest of NumPy's and PyTorch's expressions (loss+grad: NumPy's two)",
    ]
    return "\n".join(lines)


def _seconds(call: Run, number: int) -> float:
    """Seconds per call, over `number` calls after untimed calls for SETTLE_SECONDS:
    otherwise a call pays for the one before it, whose thread pool (OpenMP's, PyTorch's,
    OpenBLAS's) may still hold the cores, spinning (PyTorch's for some 20 ms: the Numba
    backend's flat sum took 4.3 ms after a PyTorch call, 1.1 ms without), or be asleep
    where this call's own needs waking. Calls, not a pause: on a VM's idle vCPUs every
    call after a pause ran slower, fastmse's and its peers' alike."""
    settled = time.perf_counter() + SETTLE_SECONDS
    call()
    while time.perf_counter() < settled:
        call()
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number
