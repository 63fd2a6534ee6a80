"""crysx_nn's ``loss`` module, MSE part, computed by fastmse.

Switch with one line::

    # from crysx_nn.loss import MSE_loss, MSE_loss_grad
    from fastmse.compat.crysx import MSE_loss, MSE_loss_grad

For (N, k) predictions ``outi`` and targets ``out0``: ``MSE_loss`` is
``sum((outi - out0) ** 2) / k`` (averaged over the k outputs, summed over the N samples)
as a Python float, ``MSE_loss_grad`` is ``2 * (outi - out0) / k``. The ``_cupy`` twins
return what ``cupy.sum(...) / k`` returns: a 0-d array of the input dtype.

Where crysx_nn's Numba kernels fail to compile (not 2-D, lists) or read out of bounds
(shapes that differ), these raise ``ValueError``; float16 works here (Numba has no
float16 arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._api import mse_grad, partial_sums


def _check(outi: ArrayLike, out0: ArrayLike) -> tuple[NDArray[Any], NDArray[Any]]:
    outi, out0 = np.asarray(outi), np.asarray(out0)
    if outi.ndim != 2 or outi.shape != out0.shape:
        msg = f"predictions and targets must be (N, k) arrays of one shape, not {outi.shape} and {out0.shape}"
        raise ValueError(msg)
    return outi, out0


def _sum_over_outputs(outi: ArrayLike, out0: ArrayLike) -> tuple[float, np.dtype]:
    outi, out0 = _check(outi, out0)
    part = partial_sums(outi, out0)
    return float(part.sums) / outi.shape[1], part.dtype


def MSE_loss(outi: ArrayLike, out0: ArrayLike) -> float:
    """``sum((outi - out0) ** 2) / k`` for (N, k) arrays, as a Python float (float64).

    Parameters
    ----------
    outi : array_like, shape (N, k)
        Predictions.
    out0 : array_like, shape (N, k)
        Targets.

    Returns
    -------
    float
        The squared error summed over samples and averaged over the k outputs.
    """
    return _sum_over_outputs(outi, out0)[0]


def MSE_loss_grad(outi: ArrayLike, out0: ArrayLike) -> NDArray[Any]:
    """``2 * (outi - out0) / k`` for (N, k) arrays, in the inputs' result dtype.

    Parameters
    ----------
    outi, out0 : array_like, shape (N, k)
        Predictions and targets.

    Returns
    -------
    ndarray, shape (N, k)
    """
    return mse_grad(*_check(outi, out0), axis=-1)


def MSE_loss_cupy(outi: ArrayLike, out0: ArrayLike) -> Any:
    """``sum((outi - out0) ** 2) / k`` as a 0-d array of the input dtype (what
    ``cupy.sum(...) / k`` returns), rounded once from the float64 sum."""
    total, dtype = _sum_over_outputs(outi, out0)
    with np.errstate(over="ignore"):
        return np.asarray(total, dtype=dtype)


def MSE_loss_grad_cupy(outi: ArrayLike, out0: ArrayLike) -> NDArray[Any]:
    """``2 * (outi - out0) / k``, as :func:`MSE_loss_grad`."""
    return MSE_loss_grad(outi, out0)


__all__ = ["MSE_loss", "MSE_loss_cupy", "MSE_loss_grad", "MSE_loss_grad_cupy"]
