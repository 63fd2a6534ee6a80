"""Loss throughput against array size: fastmse.mse and its peers, float32, flat and for
every shape family of ``python -m fastmse bench --shapes``.

    python benchmarks/sizes.py [--repeat R] [--output benchmarks/sizes.json]

For sizes from 2**10 to 2**25 elements per input, times the loss candidates of
``python -m fastmse bench`` (fastmse.mse, np.mean((p - t) ** 2), crysx_nn's Numba
kernel and torch.nn.functional.mse_loss where installed, and the streaming read of both
inputs as the ceiling), round-robin, and writes the medians to a JSON file that the
documentation plots (docs/conf.py). At small sizes a measurement is a loop of calls on
the same arrays, so the inputs sit in cache: per-call overhead and cache bandwidth, not
memory bandwidth, set the figures there. The shape families (a loss per sample over k
outputs, per-column losses, weights per sample, float64) are timed by
``fastmse._bench_shapes.measure`` at each size from 2**12 to 2**24 positions: mse,
mse_grad(out=) and the NumPy and PyTorch expressions doing the same job.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastmse
import numpy as np
from fastmse import _bench, _bench_shapes
from fastmse._config import config

SIZES = [1 << k for k in (10, 12, 14, 16, 18, 20, 22, 24, 25)]
FAMILY_SIZES = [1 << k for k in (12, 14, 16, 18, 20, 22, 24)]
FAMILY_CALLS = ("mse", "mse_grad(out=)", "numpy loss", "numpy grad", "torch loss")
CEILING = "read ceiling (stream both inputs once)"
MIN_SECONDS = 2e-3  # the least time one measurement (a loop of calls) takes


def _calls_per_measurement(run: Callable[[], Any]) -> int:
    """Calls in a loop long enough for perf_counter's resolution and overhead not to count."""
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    return max(1, int(MIN_SECONDS / max(once, 1e-9)))


def _loop(run: Callable[[], Any], number: int) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        for _ in range(number):
            run()
        return (time.perf_counter() - start) / number

    return timed


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, of this process) so far; None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def _commit() -> str | None:
    """The checkout's commit (``git describe --always --dirty``), where there is one."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "numpy": np.__version__, "fastmse": fastmse.__version__}
    for name in ("numba", "torch"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        found[name] = module.__version__
    return found


def measure(size: int, repeat: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Median seconds per call and GB/s of each loss candidate on `size` float32 elements."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size, dtype=np.float32)
    t = rng.standard_normal(size, dtype=np.float32)
    out = np.empty_like(p)  # only the gradient candidates, which are not run, write it
    candidates = [c for c in _bench._candidates(p, t, out, columns=16) if c.group == "loss"]
    for candidate in candidates:  # warm-up: page faults, JIT compilation
        candidate.run()
    loops = [_loop(c.run, _calls_per_measurement(c.run)) for c in candidates]
    for _ in range(repeat):  # round-robin, as the bench does: drift slows all alike
        for candidate, loop in zip(candidates, loops, strict=True):
            candidate.times.append(loop())
    return {c.name: (statistics.median(c.times), c.bytes_moved / statistics.median(c.times) / 1e9) for c in candidates}


def measure_families(repeat: int) -> dict[str, dict[str, list[list[float]]]]:
    """family -> call -> [size, median seconds, GB/s] rows, for every shape family of
    ``bench --shapes`` whose size follows the total (not the fixed (256, 10) batch)."""
    families: dict[str, dict[str, list[list[float]]]] = {}
    for size in FAMILY_SIZES:
        measured = _bench_shapes.measure(size, repeat)
        for case, calls in measured.cases:
            positions = int(np.prod(case.shape))  # (N, k) families: the largest N * k up to size
            if case.family == case.label or (case.family == "flat" and positions != size):
                continue  # a fixed batch, or a flat array of another size
            for name in FAMILY_CALLS:
                if name in calls:
                    seconds = measured.median(case, name)
                    gbps = calls[name][1] / seconds / 1e9
                    families.setdefault(case.family, {}).setdefault(name, []).append([positions, seconds, gbps])
                    print(f"{size:>10,d}  {case.family:36s} {name:16s} {seconds * 1e6:12.2f} us {gbps:8.2f} GB/s")
    return families


def write(figures: dict[str, Any], path: str) -> None:
    """JSON, indented, with each (size, seconds, GB/s) row on one line."""
    rows = {name: [json.dumps(row) for row in table] for name, table in figures["results"].items()}
    family_rows = {
        family: {name: [json.dumps(row) for row in table] for name, table in calls.items()}
        for family, calls in figures["families"].items()
    }
    text = json.dumps({**figures, "results": rows, "families": family_rows}, indent=1)
    for table in [*rows.values(), *(t for calls in family_rows.values() for t in calls.values())]:
        for row in table:
            text = text.replace(json.dumps(row), row, 1)
    with open(path, "w") as handle:
        handle.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11, help="measurements per size and implementation")
    parser.add_argument("--output", default=str(Path(__file__).with_name("sizes.json")))
    args = parser.parse_args(argv)

    began, load, cpu_before = time.perf_counter(), os.getloadavg(), _cpu_seconds()
    results: dict[str, list[list[float]]] = {}
    for size in SIZES:
        for name, (seconds, gbps) in measure(size, args.repeat).items():
            results.setdefault(name, []).append([size, seconds, gbps])
            print(f"{size:>10,d}  {name:42s} {seconds * 1e6:12.2f} us {gbps:8.2f} GB/s", flush=True)
    families = measure_families(max(3, args.repeat // 2))
    cpu_after = _cpu_seconds()
    others = None  # CPU time other processes took while this ran: nonzero means a busy machine
    if cpu_before is not None and cpu_after is not None:
        others = round(max(0.0, (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])), 2)
    info = config()
    figures = {
        "description": "fastmse.mse and peers on float32 inputs of each size: median seconds per call "
        "and GB/s (2 inputs x 4 bytes x size / seconds)",
        "command": " ".join(["python", *sys.argv]) if argv is None else "python benchmarks/sizes.py " + " ".join(argv),
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "system": f"{platform.system()} {platform.machine()}",
            "cpu": _cpu_model(),
            "cpus": info["machine"].rsplit(", ", 1)[-1],
            "threads": fastmse.get_num_threads(),
            "backend": info["backend"],
            "kernels": info.get("kernels", ""),
            "compiler": info.get("compiler", ""),
            "load_average_before": [round(x, 2) for x in load],
            "cpu_seconds_of_other_processes": others,
        },
        "versions": _versions(),
        "dtype": "float32",
        "repeat": args.repeat,
        "min_seconds_per_measurement": MIN_SECONDS,
        "ceiling": CEILING,
        "columns": ["size", "seconds", "gbps"],
        "results": results,
        "families": families,
        "wall_seconds": round(time.perf_counter() - began, 1),
    }
    write(figures, args.output)
    print(f"wrote {args.output} in {figures['wall_seconds']} s; other processes took {others} CPU seconds meanwhile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
