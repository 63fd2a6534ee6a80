"""Per-call cost on small arrays, where Python overhead dominates: fastmse against the
NumPy expressions it replaces. Usage: python benchmarks/small_calls.py [SIZE ...]"""

from __future__ import annotations

import sys
import timeit

import numpy as np
from fastmse import mse, mse_and_grad, mse_grad


def per_call_us(function, number: int = 20_000) -> float:
    return min(timeit.repeat(function, number=number, repeat=7)) / number * 1e6


def main(sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    print(f"{'size':>8s} {'call':38s} {'us':>8s} {'vs NumPy':>9s}")
    for size in sizes:
        p = rng.random(size, dtype=np.float32)
        t = rng.random(size, dtype=np.float32)
        # The arrays are bound as defaults: each timed call reads them as locals.
        numpy_loss = per_call_us(lambda p=p, t=t: np.mean((p - t) ** 2))
        numpy_grad = per_call_us(lambda p=p, t=t: 2 * (p - t) / p.size)
        rows = [
            ("np.mean((p - t) ** 2)", numpy_loss, numpy_loss),
            ("fastmse.mse(p, t)", per_call_us(lambda p=p, t=t: mse(p, t)), numpy_loss),
            ("2 * (p - t) / n", numpy_grad, numpy_grad),
            ("fastmse.mse_grad(p, t)", per_call_us(lambda p=p, t=t: mse_grad(p, t)), numpy_grad),
            ("fastmse.mse_and_grad(p, t)", per_call_us(lambda p=p, t=t: mse_and_grad(p, t)), numpy_loss + numpy_grad),
        ]
        for name, us, reference in rows:
            print(f"{size:8d} {name:38s} {us:8.2f} {us / reference:8.2f}x")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000])
