"""Last-resort kernels in plain NumPy, for when neither fastmse._core nor Numba loads.

Same formulas in float64, but NumPy's own summation order (so results agree with the
other backends to rounding, not bitwise) and O(n) float64 temporaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._plan import Plan, kept_divisor


def _view(plan: Plan, k: int, ndim: int | None = None) -> np.ndarray:
    """Operand k (present) as an array over the plan's first `ndim` dimensions (default: all)."""
    array = plan.operands[k]
    ndim = len(plan.shape) if ndim is None else ndim
    strides = tuple(s * array.itemsize for s in plan.strides[k][:ndim])
    return np.lib.stride_tricks.as_strided(array, plan.shape[:ndim], strides)


def _round(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # Once, from float64 to `dtype`, nearest even: as the compiled kernels do.
    return values.astype(dtype)


class NumpyBackend:
    """Whole-array NumPy expressions over strided views of the plan. Like the compiled
    kernels, they give inf and nan silently (no floating-point warnings)."""

    name = "numpy"
    rows_first = False
    small_call: Callable[..., Any] | None = None  # every call takes the general path

    def _terms(self, plan: Plan) -> tuple[np.ndarray, np.ndarray | float]:
        p, t = _view(plan, 0), _view(plan, 1)
        w = None if plan.operands.weights is None else _view(plan, 2)  # weights are optional
        d = p.astype(np.float64) - t.astype(np.float64)
        weight = w.astype(np.float64) if w is not None else 1.0
        return d, weight

    def _store_sums(self, plan: Plan, values: np.ndarray) -> None:
        summed = tuple(range(plan.n_kept, len(plan.shape)))
        sums = np.sum(values, axis=summed)
        # Divided in float64, then rounded once to the loss's dtype by the assignment.
        divisor = kept_divisor(plan, np.lib.stride_tricks.as_strided)
        _view(plan, 4, plan.n_kept)[...] = sums if isinstance(divisor, float) and divisor == 1.0 else sums / divisor

    def _store_grad(self, plan: Plan, d: np.ndarray, weight: np.ndarray | float) -> None:
        out = _view(plan, 3)
        out[...] = _round(_view(plan, 5) * weight * d, out.dtype)

    @np.errstate(all="ignore")
    def reduce(self, plan: Plan) -> None:
        d, weight = self._terms(plan)
        self._store_sums(plan, weight * d * d)

    @np.errstate(all="ignore")
    def grad(self, plan: Plan) -> None:
        self._store_grad(plan, *self._terms(plan))

    @np.errstate(all="ignore")
    def reduce_and_grad(self, plan: Plan) -> None:
        d, weight = self._terms(plan)
        self._store_sums(plan, weight * d * d)
        self._store_grad(plan, d, weight)

    @np.errstate(all="ignore")
    def reduce_difference(self, plan: Plan) -> None:
        d, weight = self._terms(plan)
        self._store_sums(plan, weight * d)

    @np.errstate(all="ignore")
    def squared_error(self, plan: Plan) -> None:
        d, weight = self._terms(plan)
        out = _view(plan, 3)
        out[...] = _round(weight * d * d, out.dtype)

    def get_num_threads(self) -> int:
        return 1

    def set_num_threads(self, n: int) -> None:
        """NumPy's expressions run on one thread; nothing to set."""
