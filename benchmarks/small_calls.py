"""Per-call cost of small calls, where the call itself is most of the cost: fastmse
against the NumPy expressions it replaces and crysx_nn's Numba kernel (where installed),
round-robin in one process, best of 7 repeats. Usage: python benchmarks/small_calls.py

Issue 14's small-call targets: mse(p, t) on 1,000 float32 >= 5x faster than
np.mean((p - t) ** 2) and >= 2x faster than crysx_nn's MSE_loss; mse_grad(p, t, out=o)
on (256, 10) >= 3x faster than 2 * (p - t) / k. The calls on (256, 10) with targets per
column, a loss per column, the squared errors and weights take the general path's
shapes. FASTMSE_BACKEND=numba times the Numba backend's small calls, whose target is
to be no slower than NumPy's expressions.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import numpy as np
from fastmse import mse, mse_and_grad, mse_grad


def per_call_us(function: Callable[[], object]) -> float:
    once = timeit.timeit(function, number=10) / 10
    number = max(200, min(20_000, int(0.05 / max(once, 1e-7))))  # about 50 ms a repeat
    return min(timeit.repeat(function, number=number, repeat=7)) / number * 1e6


def crysx_loss() -> Callable[[np.ndarray, np.ndarray], float] | None:
    try:
        from crysx_nn.loss import MSE_loss
    except ImportError:
        return None
    return MSE_loss  # type: ignore[no-any-return]


def main() -> None:
    rng = np.random.default_rng(0)
    flat_p, flat_t = rng.random(1000, dtype=np.float32), rng.random(1000, dtype=np.float32)
    p, t = rng.random((256, 10), dtype=np.float32), rng.random((256, 10), dtype=np.float32)
    o = np.empty_like(p)
    # In Fortran order, as DataFrame.to_numpy() gives a frame of one float dtype.
    fortran_p, fortran_t = np.asfortranarray(p), np.asfortranarray(t)
    fortran_o = np.empty_like(fortran_p)
    rows: list[tuple[str, str, Callable[[], object]]] = [
        ("1,000 float32, loss", "np.mean((p - t) ** 2)", lambda: np.mean((flat_p - flat_t) ** 2)),
        ("1,000 float32, loss", "fastmse.mse(p, t)", lambda: mse(flat_p, flat_t)),
        ("1,000 float32, gradient", "2 * (p - t) / n", lambda: 2 * (flat_p - flat_t) / flat_p.size),
        ("1,000 float32, gradient", "fastmse.mse_grad(p, t)", lambda: mse_grad(flat_p, flat_t)),
        ("1,000 float32, both", "fastmse.mse_and_grad(p, t)", lambda: mse_and_grad(flat_p, flat_t)),
        ("(256, 10), loss per sample", "np.mean((p - t) ** 2, axis=-1)", lambda: np.mean((p - t) ** 2, axis=-1)),
        ("(256, 10), loss per sample", "fastmse.mse(p, t, axis=-1)", lambda: mse(p, t, axis=-1)),
        ("(256, 10), gradient", "2 * (p - t) / k", lambda: 2 * (p - t) / p.shape[1]),
        ("(256, 10), gradient", "fastmse.mse_grad(p, t, out=o)", lambda: mse_grad(p, t, out=o)),
        ("(256, 10), both", "fastmse.mse_and_grad(p, t, out=o)", lambda: mse_and_grad(p, t, out=o)),
        ("(256, 10) Fortran, loss", "np.mean((p - t) ** 2) [F]", lambda: np.mean((fortran_p - fortran_t) ** 2)),
        ("(256, 10) Fortran, loss", "fastmse.mse(p, t) [F]", lambda: mse(fortran_p, fortran_t)),
        ("(256, 10) Fortran, gradient", "2 * (p - t) / k [F]", lambda: 2 * (fortran_p - fortran_t) / p.shape[1]),
        (
            "(256, 10) Fortran, gradient",
            "fastmse.mse_grad(p, t, out=o) [F]",
            lambda: mse_grad(fortran_p, fortran_t, out=fortran_o),
        ),
    ]
    # Targets and weights that broadcast, and the other axis: the general path's shapes.
    column_t, per_sample_w = t[0].copy(), rng.random((256, 1), dtype=np.float32)
    per_position_w = rng.random((256, 10), dtype=np.float32)
    per_sample_total = float(np.sum(np.broadcast_to(per_sample_w, p.shape)))
    rows += [
        ("(256, 10), target per column", "np.mean((p - t[0]) ** 2)", lambda: np.mean((p - column_t) ** 2)),
        ("(256, 10), target per column", "fastmse.mse(p, t[0])", lambda: mse(p, column_t)),
        ("(256, 10), loss per column", "np.mean((p - t) ** 2, axis=0)", lambda: np.mean((p - t) ** 2, axis=0)),
        ("(256, 10), loss per column", "fastmse.mse(p, t, axis=0)", lambda: mse(p, t, axis=0)),
        ("(256, 10), squared errors", "(p - t) ** 2", lambda: (p - t) ** 2),
        ("(256, 10), squared errors", "fastmse.mse(p, t, reduction='none')", lambda: mse(p, t, reduction="none")),
        (
            "(256, 10), weights (256, 1)",
            "np.average((p - t) ** 2, weights=w)",
            lambda: np.average((p - t) ** 2, weights=np.broadcast_to(per_sample_w, p.shape)),
        ),
        ("(256, 10), weights (256, 1)", "fastmse.mse(p, t, weights=w)", lambda: mse(p, t, weights=per_sample_w)),
        (
            "(256, 10), weights (256, 1)",
            "2 * w * (p - t) / w_sum [out]",
            lambda: np.multiply(2 * per_sample_w * (p - t), 1 / per_sample_total, out=o),
        ),
        (
            "(256, 10), weights (256, 1)",
            "fastmse.mse_grad(p, t, weights=w, out=o)",
            lambda: mse_grad(p, t, weights=per_sample_w, out=o),
        ),
        (
            "(256, 10), weights per position",
            "np.average((p - t) ** 2, axis=-1, weights=w)",
            lambda: np.average((p - t) ** 2, axis=-1, weights=per_position_w),
        ),
        (
            "(256, 10), weights per position",
            "fastmse.mse(p, t, weights=w, axis=-1)",
            lambda: mse(p, t, weights=per_position_w, axis=-1),
        ),
    ]
    loss = crysx_loss()
    if loss is not None:
        crysx_p, crysx_t = flat_p.reshape(100, 10), flat_t.reshape(100, 10)
        loss(crysx_p, crysx_t)  # compiled before timing
        rows.insert(2, ("1,000 float32, loss", "crysx_nn MSE_loss (Numba), (100, 10)", lambda: loss(crysx_p, crysx_t)))
    times: dict[str, list[float]] = {name: [] for _, name, _ in rows}
    for _ in range(3):  # round-robin: a busy moment of this shared machine hits every row
        for _, name, function in rows:
            times[name].append(per_call_us(function))
    print(f"{'case':32s} {'call':45s} {'us':>7s}")
    for case, name, _ in rows:
        print(f"{case:32s} {name:45s} {min(times[name]):7.2f}")
    best = {name: min(values) for name, values in times.items()}
    ratios = [
        ("mse, 1,000: np.mean / fastmse (target >= 5)", "np.mean((p - t) ** 2)", "fastmse.mse(p, t)"),
        ("mse, 1,000: crysx_nn / fastmse (target >= 2)", "crysx_nn MSE_loss (Numba), (100, 10)", "fastmse.mse(p, t)"),
        ("mse_grad(out), (256, 10): NumPy / fastmse (target >= 3)", "2 * (p - t) / k", "fastmse.mse_grad(p, t, out=o)"),
        (
            "mse(axis=-1), (256, 10): NumPy / fastmse",
            "np.mean((p - t) ** 2, axis=-1)",
            "fastmse.mse(p, t, axis=-1)",
        ),
        ("mse, (256, 10) Fortran: NumPy / fastmse", "np.mean((p - t) ** 2) [F]", "fastmse.mse(p, t) [F]"),
        (
            "mse_grad(out), (256, 10) Fortran: NumPy / fastmse",
            "2 * (p - t) / k [F]",
            "fastmse.mse_grad(p, t, out=o) [F]",
        ),
    ]
    for label, peer, ours in ratios:
        if peer in best:
            print(f"{label:60s} {best[peer] / best[ours]:6.2f}x")


if __name__ == "__main__":
    main()
