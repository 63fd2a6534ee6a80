"""MSEAccumulator: the loss of data that arrives in batches, as one call would give it."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._compute import finish_mean, partial_sums
from ._gpu import current_device_of, is_gpu_array
from ._types import REDUCTIONS, Axis


class ExactSum:
    """A float64 sum kept as an unevaluated pair ``high + low`` (double-double), per
    position: adding thousands of float64 partial sums loses nothing a float64 result
    can show, in any order."""

    __slots__ = ("high", "low")

    def __init__(self, like: Any) -> None:
        """Zeros shaped like `like`, in its array module (CuPy's: on the current GPU)."""
        self.high = np.zeros_like(like)  # dispatches to CuPy for CuPy arrays
        self.low = np.zeros_like(like)

    def add(self, values: np.ndarray, low: np.ndarray | None = None) -> None:
        with np.errstate(invalid="ignore", over="ignore"):
            total = self.high + values
            # Knuth's TwoSum: the rounding error of high + values, exactly.
            back = total - self.high
            error = (self.high - (total - back)) + (values - back)
            self.high = total
            self.low = self.low + error if low is None else self.low + error + low

    def value(self) -> Any:
        with np.errstate(invalid="ignore"):
            total = self.high + self.low
        # inf or nan in high makes low nan: the sum is then high itself.
        return np.where(np.isfinite(self.high), total, self.high)


class MSEAccumulator:
    """The mean squared error of data that arrives in batches.

    ``update`` each batch, ``result()`` at the end: the same loss as one :func:`fastmse.mse`
    call on the batches concatenated along axis 0, to within 1 ulp of the result dtype
    (each batch is summed by the kernels in float64; the batch sums are added exactly).
    Accumulators filled on different processes or workers combine with ``merge``, in any
    order. Picklable.

    Batches of GPU arrays (CuPy, or any array :func:`fastmse.mse` takes as one) are summed
    on their device, and the sums stay there: ``result()`` is then a 0-d (or kept-shape)
    CuPy array, read from the device only when it is used (a weighted batch waits for the
    device once, to refuse negative weights, as :func:`fastmse.mse` does). The batches of one
    accumulator, and accumulators that merge, must all be on the host or all on one GPU.

    Parameters
    ----------
    axis : None, int or tuple of ints, optional
        The axes the loss is reduced over, of the concatenated array. None (default)
        reduces over all of them; otherwise the axes must include 0, the batch axis
        (``axis=0`` gives one loss per output column, like scikit-learn's
        ``multioutput="raw_values"``).
    reduction : {"mean", "sum"}, optional
        ``"mean"`` (default): ``sum(w * e) / sum(w)``; ``"sum"``: ``sum(w * e)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse import MSEAccumulator, mse
    >>> p, t = np.arange(10.0).reshape(5, 2), np.zeros((5, 2))
    >>> acc = MSEAccumulator()
    >>> for start in range(0, 5, 2):
    ...     acc.update(p[start:start + 2], t[start:start + 2])
    >>> float(acc.result()) == float(mse(p, t))
    True
    >>> per_output = MSEAccumulator(axis=0)
    >>> per_output.update(p, t)
    >>> per_output.result()
    array([24., 33.])
    """

    def __init__(self, *, axis: Axis = None, reduction: str = "mean") -> None:
        if not isinstance(reduction, str) or reduction not in REDUCTIONS[:2]:
            msg = f"reduction must be 'mean' or 'sum' for an accumulator, not {reduction!r}"
            raise ValueError(msg)
        self.axis = axis
        self.reduction = reduction
        self.reset()

    def reset(self) -> None:
        """Forget every batch; the accumulator is as new."""
        self._dtype: np.dtype | None = None
        self._ndim: int | None = None
        self._axes: tuple[int, ...] = ()
        self._kept_shape: tuple[int, ...] | None = None
        self._sums: ExactSum | None = None
        self._weight_sums: ExactSum | None = None
        self.batches = 0

    def update(self, predictions: ArrayLike, targets: ArrayLike, weights: ArrayLike | None = None) -> None:
        """Add one batch: arguments as :func:`fastmse.mse` takes them, batched along axis 0.

        Raises
        ------
        ValueError, TypeError
            Everything :func:`fastmse.mse` raises; a batch whose number of dimensions or
            non-batch extents differ from the first batch's; `axis` without 0.
        """
        part = partial_sums(predictions, targets, weights, self.axis if self._ndim is None else self._axes)
        if self._sums is None or self._weight_sums is None:  # the first batch
            if part.shape and 0 not in part.axes:
                msg = f"axis must include 0, the axis batches are stacked along, not {self.axis!r}"
                raise ValueError(msg)
            self._ndim, self._axes, self._kept_shape = len(part.shape), part.axes, part.kept_shape
            with current_device_of(part.sums):  # CuPy's zeros_like allocates on the current GPU
                self._sums, self._weight_sums = ExactSum(part.sums), ExactSum(part.sums)
        elif len(part.shape) != self._ndim or part.kept_shape != self._kept_shape:
            msg = (
                f"this batch has shape {part.shape}; earlier batches had {self._ndim} dimensions "
                f"and kept shape {self._kept_shape} after reducing axes {self._axes}"
            )
            raise ValueError(msg)
        elif _place(part.sums) != _place(self._sums.high):
            msg = (
                f"this batch is on {_place(part.sums)}, earlier batches were on {_place(self._sums.high)}: "
                "fastmse does not copy between them"
            )
            raise TypeError(msg)
        with current_device_of(part.sums):
            self._sums.add(part.sums)
            self._weight_sums.add(part.weight_sums)
        self._dtype = part.dtype if self._dtype is None else np.promote_types(self._dtype, part.dtype)
        self.batches += 1

    def merge(self, other: MSEAccumulator) -> MSEAccumulator:
        """Add everything `other` has seen into this accumulator; returns self.

        Raises
        ------
        TypeError
            `other` is not an MSEAccumulator.
        ValueError
            `other` reduces differently or saw batches of another shape.
        TypeError
            `other` keeps its sums elsewhere (the host or another GPU).
        """
        if not isinstance(other, MSEAccumulator):
            msg = f"merge takes an MSEAccumulator, not {type(other).__name__}"
            raise TypeError(msg)
        if (other.reduction, other.axis) != (self.reduction, self.axis):
            msg = (
                f"cannot merge an accumulator with reduction={other.reduction!r}, axis={other.axis!r} "
                f"into one with reduction={self.reduction!r}, axis={self.axis!r}"
            )
            raise ValueError(msg)
        if other._sums is None or other._weight_sums is None:
            return self
        if self._sums is None or self._weight_sums is None:
            self._ndim, self._axes, self._kept_shape = other._ndim, other._axes, other._kept_shape
            with current_device_of(other._sums.high):
                self._sums, self._weight_sums = ExactSum(other._sums.high), ExactSum(other._sums.high)
        elif (other._ndim, other._kept_shape) != (self._ndim, self._kept_shape):
            msg = f"cannot merge batches of kept shape {other._kept_shape} into {self._kept_shape}"
            raise ValueError(msg)
        elif _place(other._sums.high) != _place(self._sums.high):
            msg = (
                f"cannot merge sums kept on {_place(other._sums.high)} into sums kept on "
                f"{_place(self._sums.high)}: fastmse does not copy between them"
            )
            raise TypeError(msg)
        with current_device_of(self._sums.high):
            self._sums.add(other._sums.high, other._sums.low)
            self._weight_sums.add(other._weight_sums.high, other._weight_sums.low)
        assert other._dtype is not None
        self._dtype = other._dtype if self._dtype is None else np.promote_types(self._dtype, other._dtype)
        self.batches += other.batches
        return self

    def result(self) -> Any:
        """The loss of every batch so far: a NumPy scalar (``axis=None``) or an array of
        the kept shape, in the result dtype of the batches (a CuPy array for GPU batches).

        With no batches: nan (``"mean"``, with a RuntimeWarning, as ``np.mean([])``) or
        0.0 (``"sum"``) for ``axis=None``; a ValueError otherwise (the shape is unknown).
        """
        if self._sums is None or self._weight_sums is None or self._dtype is None:
            if self.axis is not None:
                msg = "result() before any update: the shape of a per-axis result is not known yet"
                raise ValueError(msg)
            return finish_mean(0.0, 0.0, np.dtype(np.float64), self.reduction)
        with current_device_of(self._sums.high):
            return finish_mean(self._sums.value(), self._weight_sums.value(), self._dtype, self.reduction)

    def __repr__(self) -> str:
        return (
            f"MSEAccumulator(axis={self.axis!r}, reduction={self.reduction!r}; "
            f"{self.batches} batches, dtype {self._dtype}"
            f"{'' if self._sums is None else ', on ' + _place(self._sums.high)})"
        )


def _place(sums: Any) -> str:
    """Where `sums` are: "the host", or "GPU n" for a CuPy array (found from the array each
    time: an unpickled CuPy array lands on the GPU current when it is loaded)."""
    return f"GPU {sums.device.id}" if is_gpu_array(sums) else "the host"
