"""PyTorch's ``torch.nn.functional.mse_loss``, computed by fastmse on NumPy arrays.

Switch with one line::

    # from torch.nn.functional import mse_loss
    from fastmse.compat.torch import mse_loss

Same arguments and defaults: ``reduction`` ``"mean"``, ``"sum"`` or ``"none"``, the
deprecated ``size_average``/``reduce`` pair, and ``weight`` (the shape of `input`;
``"mean"`` is then ``sum(weight * e) / sum(weight)``, negative weights allowed as in
PyTorch). Targets of another shape broadcast, with PyTorch's ``UserWarning``. Results
are NumPy scalars (``"mean"``, ``"sum"``) or arrays in the inputs' result dtype; PyTorch
returns tensors. For tensors and autograd use PyTorch itself; :func:`fastmse.mse_and_grad`
gives the loss and its gradient together.
"""

from __future__ import annotations

import warnings
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import ArrayLike

from .._compute import loss
from .._resolve import resolve
from .._types import Reduction

_REDUCTIONS = ("none", "mean", "sum")


def _is_reduction(reduction: str) -> TypeGuard[Reduction]:
    """Whether `reduction` is one of PyTorch's (a check type checkers follow)."""
    return reduction in _REDUCTIONS


def _size(shape: tuple[int, ...]) -> str:
    return f"torch.Size({list(shape)})"


def _legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
        UserWarning,
        stacklevel=3,
    )
    return reduction


def mse_loss(
    input: ArrayLike,
    target: ArrayLike,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: ArrayLike | None = None,
) -> Any:
    """Element-wise mean squared error, optionally weighted, as PyTorch computes it.

    Parameters
    ----------
    input : array_like
        Predicted values.
    target : array_like
        Ground truth values; broadcast to `input` (with a ``UserWarning`` when the
        shapes differ, as in PyTorch).
    size_average, reduce : bool, optional
        Deprecated; they override `reduction` (with PyTorch's warning).
    reduction : {"mean", "sum", "none"}, optional
        As in PyTorch. Default ``"mean"``.
    weight : array_like, optional
        Weights of the shape of `input`.

    Returns
    -------
    numpy scalar or ndarray

    Raises
    ------
    ValueError
        An unknown `reduction`, a `weight` of another shape than `input`, shapes that do
        not broadcast.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse.compat.torch import mse_loss
    >>> mse_loss(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    np.float64(2.5)
    """
    input_shape, target_shape = np.shape(input), np.shape(target)
    if input_shape != target_shape:
        warnings.warn(
            f"Using a target size ({_size(target_shape)}) that is different to the input size "
            f"({_size(input_shape)}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            UserWarning,
            stacklevel=2,
        )
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    if weight is None:
        if not _is_reduction(reduction):
            msg = f"{reduction} is not a valid value for reduction"
            raise ValueError(msg)
        return loss(resolve(input, target, None, None, reduction), keepdims=False)
    if np.shape(weight) != input_shape:
        msg = "Weights and input must have the same size."
        raise ValueError(msg)
    if reduction not in _REDUCTIONS:
        msg = f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'."
        raise ValueError(msg)
    weight = np.asarray(weight)
    call = resolve(input, target, weight, None, reduction, signed_weights=True)
    if weight.dtype.kind == "f" and weight.dtype.itemsize > call.dtype.itemsize:
        # PyTorch multiplies by the weights in their dtype: float64 weights give float64 losses.
        wider = weight.dtype
        call = resolve(
            np.asarray(input, wider), np.asarray(target, wider), weight, None, reduction, signed_weights=True
        )
    return loss(call, keepdims=False)


__all__ = ["mse_loss"]
