"""A PyTorch training step through fastmse.compat.torch against the same step through
torch.nn.functional.mse_loss, side by side in one process, on CPU float32 tensors.

    python benchmarks/torch_step.py [--threads N]

Issue 15's targets: `leaf.grad = None; mse_loss(leaf, t).backward()` >= 3x faster than
PyTorch's on (2**24,) and >= 1.5x on (256, 10). Also the floors of a step on this
machine (an autograd.Function that does nothing; one native node), the forward alone,
and torch.func's loss per sample and per-sample gradients (vmap, vmap(grad)) on (N, 16).
The two losses alternate; each figure is the best of 7 loops (the median of 21 single
steps for (2**24,)).
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import fastmse
import torch
from fastmse.compat.torch import mse_loss

F = torch.nn.functional


def best_us(function: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=7)) / number * 1e6


def median_us(function: Callable[[], object], repeat: int = 21) -> float:
    function()
    return statistics.median(timeit.repeat(function, number=1, repeat=repeat)) * 1e6


def training_step(loss: Callable[..., Any], leaf: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        leaf.grad = None
        loss(leaf, target).backward()

    return step


class _Nothing(torch.autograd.Function):
    """The least an autograd.Function step costs: no work in either direction."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ctx.shape = input.shape
        return input.new_zeros((), dtype=target.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.expand(ctx.shape), None


def _one_node(leaf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A step through one native node: the sum of `leaf` (`target` unused)."""
    del target
    return leaf.sum()


def _row(label: str, ours: float, theirs: float) -> str:
    return f"{label:48s} {ours:8.1f}us {theirs:8.1f}us {theirs / ours:8.2f}x"


def steps(shape: tuple[int, ...], target_ratio: float, generator: torch.Generator) -> list[str]:
    leaf = torch.randn(shape, generator=generator, requires_grad=True)
    target = torch.randn(shape, generator=generator)
    ours, theirs = training_step(mse_loss, leaf, target), training_step(F.mse_loss, leaf, target)
    label = f"{shape}, training step (target >= {target_ratio}x)"
    if shape[0] > 4096:
        return [_row(label, median_us(ours), median_us(theirs))]
    forward = [best_us(partial(loss, leaf, target), 2000) for loss in (mse_loss, F.mse_loss)]
    nothing = best_us(training_step(_Nothing.apply, leaf, target), 2000)
    one_node = best_us(training_step(_one_node, leaf, target), 2000)
    return [
        _row(label, best_us(ours, 2000), best_us(theirs, 2000)),
        _row(f"{shape}, forward (input requiring grad)", *forward),
        f"{shape}, floors: an autograd.Function doing nothing {nothing:.1f} us, one native node {one_node:.1f} us",
    ]


def transformed(exponent: int, generator: torch.Generator) -> list[str]:
    p = torch.randn((1 << exponent) // 16, 16, generator=generator)
    t = torch.randn((1 << exponent) // 16, 16, generator=generator)
    number = max(3, 1 << (23 - exponent))
    rows = []
    for name, transform in (("vmap(loss)", torch.func.vmap), ("vmap(grad(loss))", _per_sample_gradients)):
        times = [best_us(partial(transform(loss), p, t), number) for loss in (mse_loss, F.mse_loss)]
        rows.append(_row(f"2**{exponent} as (N, 16), {name}", *times))
    return rows


def _per_sample_gradients(loss: Callable[..., Any]) -> Callable[..., Any]:
    return torch.func.vmap(torch.func.grad(loss))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    threads = parser.parse_args().threads
    torch.set_num_threads(threads)
    fastmse.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    print(f"PyTorch {torch.__version__}, fastmse {fastmse.__version__}, {threads} threads, float32, CPU")
    print(f"{'':48s} {'fastmse':>10s} {'PyTorch':>10s} {'speed-up':>9s}")
    for shape, target_ratio in (((1 << 24,), 3.0), ((256, 10), 1.5)):
        print("\n".join(steps(shape, target_ratio, generator)))
    for exponent in (14, 18, 22):
        print("\n".join(transformed(exponent, generator)))


if __name__ == "__main__":
    main()
