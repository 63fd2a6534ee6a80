"""Layout planning: from broadcast operands and reduced axes to the kernel problem.

A :class:`Plan` is what every backend's kernels receive: one shape (kept dimensions
first, then summed ones, each group ordered from the largest memory stride to the
smallest and with mergeable neighbours merged), and each operand's base array with its
element strides over that shape (zero along broadcast dimensions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

_FLOAT64 = np.dtype(np.float64)

NO_STRIDES: tuple[int, ...] = ()


class Operands(NamedTuple):
    """The six arrays of a pass, in the order the kernels read them (``Problem`` in
    cpp/kernels.hpp): NumPy arrays, or CuPy arrays for the GPU backends; None where
    absent. predictions, targets and weights broadcast to the call's shape; out is the
    elementwise result; loss (see :attr:`Plan.loss_divisor`) and scale (float64 gradient
    factors) hold one value per kept position."""

    predictions: Any
    targets: Any
    weights: Any = None
    out: Any = None
    loss: Any = None
    scale: Any = None


@dataclass(slots=True)
class Plan:
    """The kernels' view of one call.

    Attributes
    ----------
    shape : tuple of int
        Extents; ``shape[:n_kept]`` index the reduced result, the rest are summed.
    n_kept : int
        Number of leading kept dimensions.
    operands : Operands
        The arrays; the element at index ``(0, ..., 0)`` of the plan is each one's first.
    strides : sequence of tuple of int
        Element strides of each operand over ``shape``, in :class:`Operands` order; never
        read where the operand is absent.
    loss_divisor : float or array
        What the reducing passes divide each output's float64 sum by before storing it
        in ``loss``, rounded once to the loss's dtype: float64 with a divisor of 1 gives
        the exact sums (for callers that combine them), the result dtype with the count
        gives the finished mean, without a float64 array and a second pass over it. Or
        one divisor per output (a weighted mean's weight sums): a float64 array of the
        loss's shape and element strides (an array of the backend's kind), read where
        the loss is written.
    rows_first : bool
        For a sum over everything (``n_kept == 0``) whose last dimension holds rows of at
        most ``kBlock`` positions: each row summed alone, as a loss per row sums it, then
        the row sums, in C order, as a flat sum over a float64 array of them. The order
        in which rows of a broadcast operand (weights per sample) run as short rows;
        taken by backends whose ``rows_first`` is true (see
        :func:`fastmse._compute._two_stage` and :func:`fastmse._compute._reduce`).
    """

    shape: tuple[int, ...]
    n_kept: int
    operands: Operands
    strides: Sequence[tuple[int, ...]]
    loss_divisor: Any = 1.0
    rows_first: bool = False

    @property
    def size(self) -> int:
        """Number of positions in the plan."""
        return int(np.prod(self.shape, dtype=np.int64))


def scalar_loss(dtype: np.dtype, total: float) -> Any:
    """A loss over everything as mse returns it: the float64 `total` (the sum, divided for
    a mean) rounded once to a NumPy scalar of `dtype`; beyond its range, inf, silently."""
    if abs(total) < 6.0e4 or dtype is _FLOAT64:  # cannot overflow: skip errstate's cost
        return dtype.type(total)
    with np.errstate(over="ignore"):
        return dtype.type(total)


def per_output(loss_divisor: Any) -> bool:
    """Whether `loss_divisor` (:attr:`Plan.loss_divisor`) is one divisor per output (an
    array laid out as the loss) rather than one number for all."""
    return not isinstance(loss_divisor, (int, float))


def kept_divisor(plan: Plan, as_strided: Callable[..., Any]) -> Any:
    """:attr:`Plan.loss_divisor` as the sums over ``shape[:n_kept]`` are divided by it:
    the float, or the divisors viewed there with the loss's element strides."""
    divisor = plan.loss_divisor
    if not per_output(divisor):
        return float(divisor)
    strides = tuple(s * divisor.itemsize for s in plan.strides[4][: plan.n_kept])
    return as_strided(divisor, plan.shape[: plan.n_kept], strides)


def element_strides(array: np.ndarray, shape: Sequence[int]) -> list[int]:
    """Strides of `array` broadcast to `shape`, in elements (0 where broadcast)."""
    pad = len(shape) - array.ndim
    itemsize = array.itemsize
    strides = [0] * len(shape)
    for d in range(array.ndim):
        if array.shape[d] != 1:
            strides[d + pad] = array.strides[d] // itemsize
    return strides


def reduced_strides(array: np.ndarray, shape: Sequence[int], axes: Sequence[int]) -> list[int]:
    """Strides over `shape` of an array holding one value per kept position (C order)."""
    kept_strides = iter(element_strides(array, [shape[d] for d in range(len(shape)) if d not in axes]))
    return [0 if d in axes else next(kept_strides) for d in range(len(shape))]


# Strides of absent operands are never read, so one list serves every flat plan.
_FLAT_STRIDES: tuple[tuple[int, ...], ...] = ((1,), (1,), (1,), (1,), (0,), (0,))


def contiguous_plan(operands: Operands, loss_divisor: float = 1.0) -> Plan:
    """The plan :func:`make_plan` gives where predictions, targets and out (if any) are
    C-contiguous of one shape, without weights, summed over everything (loss and scale,
    where given, one value each); built without the general search, which costs more
    than the kernel on small arrays."""
    return Plan((operands.predictions.size,), 0, operands, _FLAT_STRIDES, loss_divisor)


def is_contiguous(plan: Plan) -> bool:
    """Whether `plan` is one that :func:`contiguous_plan` built (checked by identity: free)."""
    return plan.strides is _FLAT_STRIDES


def make_plan(
    shape: Sequence[int],
    axes: Sequence[int],
    operands: Operands,
    loss_divisor: Any = 1.0,
) -> Plan:
    """Plan a problem of broadcast `shape` summed over `axes`.

    Parameters
    ----------
    shape : sequence of int
        The broadcast shape of predictions, targets and weights.
    axes : sequence of int
        Normalised axes summed over.
    operands : Operands
        ``loss`` and ``scale`` hold one value per kept position (shape without `axes`, or
        broadcastable to it); the others broadcast to `shape`.
    loss_divisor : float or array
        See :attr:`Plan.loss_divisor`.
    """
    dense = _dense_plan(shape, axes, operands)
    if dense is not None:
        dense.loss_divisor = loss_divisor
        return dense
    ndim = len(shape)
    strides: list[list[int] | None] = []
    for k, array in enumerate(operands):
        if array is None:
            strides.append(None)
        elif k >= 4:
            strides.append(reduced_strides(array, shape, axes))
        else:
            strides.append(element_strides(array, shape))
    present = [s for s in strides if s is not None]

    def order(dims: list[int]) -> list[int]:
        # Outer to inner by memory distance, so the innermost loop is the densest one.
        # Only predictions, targets and weights count, so that a call with an `out` sums in
        # the same order as one without (mse_and_grad returns exactly mse's loss).
        def distance(d: int) -> int:
            return sum(abs(s[d]) for s in strides[:3] if s is not None)

        return sorted(dims, key=distance, reverse=True)

    kept = order([d for d in range(ndim) if d not in axes and shape[d] != 1])
    summed = order([d for d in axes if shape[d] != 1])

    def merge(dims: list[int]) -> list[tuple[int, list[int]]]:
        groups: list[tuple[int, list[int]]] = []
        for d in dims:
            if groups:
                extent, last = groups[-1]
                if all(s[last[-1]] == s[d] * shape[d] for s in present):
                    groups[-1] = (extent * shape[d], [*last, d])
                    continue
            groups.append((shape[d], [d]))
        return groups

    kept_groups = merge(kept)
    groups = kept_groups + merge(summed)
    plan_shape = tuple(extent for extent, _ in groups)
    plan_strides = [tuple(s[dims[-1]] for _, dims in groups) if s is not None else NO_STRIDES for s in strides]
    return Plan(plan_shape, len(kept_groups), operands, plan_strides, loss_divisor)


def _dense_plan(shape: Sequence[int], axes: Sequence[int], operands: Operands) -> Plan | None:
    """The plan :func:`make_plan` gives for C-contiguous operands of one shape, without
    weights, summed over a leading or a trailing run of axes (a loss per sample, per
    column): built without the general search, which costs more than a small kernel.
    None where the call is not of that kind."""
    p, t, w, out, loss, scale = operands
    if w is not None or not shape or p.shape != tuple(shape) or t.shape != p.shape or 0 in p.shape:
        return None
    if not (p.flags.c_contiguous and t.flags.c_contiguous) or (
        out is not None and not (out.shape == p.shape and out.flags.c_contiguous)
    ):
        return None
    ndim, n_axes = len(shape), len(axes)
    leading = tuple(axes) == tuple(range(n_axes))
    if not leading and tuple(axes) != tuple(range(ndim - n_axes, ndim)):
        return None
    kept_dims = range(n_axes, ndim) if leading else range(ndim - n_axes)
    kept = math.prod(shape[d] for d in kept_dims)
    for reduced in (loss, scale):  # one value per kept position, in C order, or one for all
        if reduced is not None and reduced.ndim and (reduced.size != kept or not reduced.flags.c_contiguous):
            return None
    summed = math.prod(shape) // kept
    # Extents of 1 leave the plan; what is left merges into one kept and one summed dimension.
    plan_shape = (kept,) * (kept > 1) + (summed,) * (summed > 1)
    n_kept = int(kept > 1)
    inputs = ((1, kept) if leading else (summed, 1))[1 - n_kept :][: len(plan_shape)]
    per_output = (1, 0)[1 - n_kept :][: len(plan_shape)]
    strides = [
        inputs,
        inputs,
        NO_STRIDES,
        inputs if out is not None else NO_STRIDES,
        per_output if loss is not None else NO_STRIDES,
        NO_STRIDES if scale is None else per_output if scale.ndim else (0,) * len(plan_shape),
    ]
    return Plan(plan_shape, n_kept, operands, strides)
