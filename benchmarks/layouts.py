"""Layouts beyond `python -m fastmse bench --shapes`: other memory orders, strided views,
several summed axes, broadcast operands, inputs and `out` in different orders.

    python benchmarks/layouts.py [LOG2_POSITIONS]

For each layout (2**22 float32 positions unless given), the best of 15 calls of `mse`,
`mse_grad(out=o)` and `mse_and_grad(out=o)` in ms, NumPy's expression for the loss, and
the loss's GB/s (bytes of the two inputs' elements) as a share of the flat loss's in the
same run. `o` is C-ordered: with Fortran-ordered or transposed inputs it disagrees with
them, as an `out` made with np.empty(p.shape) does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
from fastmse import mse, mse_and_grad, mse_grad


def best_ms(function: Callable[[], object], repeat: int = 15) -> float:
    for _ in range(3):
        function()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return min(samples) * 1e3


def main() -> None:
    n = 2 ** int(sys.argv[1]) if len(sys.argv) > 1 else 2**22
    rng = np.random.default_rng(0)

    def array(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        return rng.random(shape).astype(dtype)

    batch, other = array((n // 64, 64)), array((n // 64, 64))
    cube = (n // 2**14, 128, 128)
    layouts: list[tuple[str, np.ndarray, object, dict[str, object]]] = [
        ("flat", array((n,)), array((n,)), {}),
        ("(N, 64) Fortran, axis=-1", np.asfortranarray(batch), np.asfortranarray(other), {"axis": -1}),
        ("(N, 64) Fortran, axis=0", np.asfortranarray(batch), np.asfortranarray(other), {"axis": 0}),
        ("(64, N).T, axis=-1", array((64, n // 64)).T, array((64, n // 64)).T, {"axis": -1}),
        ("(N, 64), targets Fortran", batch, np.asfortranarray(other), {"axis": -1}),
        ("(N, 128)[:, ::2], axis=-1", array((n // 64, 128))[:, ::2], array((n // 64, 128))[:, ::2], {"axis": -1}),
        ("(2N,)[::2]", array((2 * n,))[::2], array((2 * n,))[::2], {}),
        ("(M, 128, 128), axis=(1, 2)", array(cube), array(cube), {"axis": (1, 2)}),
        ("(M, 128, 128), axis=(0, 1)", array(cube), array(cube), {"axis": (0, 1)}),
        ("(M, 128, 128), axis=1", array(cube), array(cube), {"axis": 1}),
        ("(M, 128, 128), axis=0", array(cube), array(cube), {"axis": 0}),
        ("(N, 64), weights (64,), axis=0", batch, other, {"axis": 0, "weights": array((64,))}),
        ("(N, 64), weights (64,), axis=-1", batch, other, {"axis": -1, "weights": array((64,))}),
        ("(N, 64), targets (1, 64), axis=0", batch, array((1, 64)), {"axis": 0}),
        ("(N, 64), targets (N, 1), axis=-1", batch, array((n // 64, 1)), {"axis": -1}),
        ("(N, 64), one target", batch, np.float32(0.5), {}),
        ("(N, 64) float64, axis=-1", array((n // 64, 64), np.float64), array((n // 64, 64), np.float64), {"axis": -1}),
    ]
    print(f"{'layout':34s} {'mse':>7s} {'grad':>7s} {'fused':>7s} {'NumPy':>7s}  of flat")
    flat_rate = 0.0
    for name, p, t, kwargs in layouts:
        out = np.empty(p.shape, p.dtype)
        axis = kwargs.get("axis")
        weights = kwargs.get("weights")

        def numpy_loss(p: np.ndarray = p, t: object = t, axis: object = axis, weights: object = weights) -> object:
            errors = (p - t) ** 2
            if weights is None:
                return errors.mean(axis=axis)  # type: ignore[arg-type]
            return np.average(errors, axis=axis, weights=np.broadcast_to(weights, errors.shape))  # type: ignore[arg-type]

        times = [
            best_ms(lambda p=p, t=t, kwargs=kwargs: mse(p, t, **kwargs)),
            best_ms(lambda p=p, t=t, kwargs=kwargs, out=out: mse_grad(p, t, out=out, **kwargs)),
            best_ms(lambda p=p, t=t, kwargs=kwargs, out=out: mse_and_grad(p, t, out=out, **kwargs)),
            best_ms(numpy_loss, repeat=5),
        ]
        rate = 2 * p.size * p.itemsize / times[0]
        flat_rate = flat_rate or rate
        print(f"{name:34s} " + " ".join(f"{ms:7.3f}" for ms in times) + f"  {rate / flat_rate:5.2f}")


if __name__ == "__main__":
    main()
