"""crysx_nn's ``loss`` module, MSE part, computed by fastmse.

Switch with one line::

    # from crysx_nn.loss import MSE_loss, MSE_loss_grad
    from fastmse.compat.crysx import MSE_loss, MSE_loss_grad

For (N, k) predictions ``outi`` and targets ``out0``: ``MSE_loss`` is
``sum((outi - out0) ** 2) / k`` (averaged over the k outputs, summed over the N samples)
as a Python float, ``MSE_loss_grad`` is ``2 * (outi - out0) / k``. The ``_cupy`` twins
take CuPy arrays (or NumPy ones) and return what ``cupy.sum(...) / k`` returns: a 0-d
array of the input dtype, on the inputs' device, computed there.

Where crysx_nn's Numba kernels fail to compile (not 2-D, lists) or read out of bounds
(shapes that differ), these raise ``ValueError``; float16 works here (Numba has no
float16 arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import _backends
from .._compute import gradient, partial_sums
from .._gpu import array_module, current_device_of, is_gpu_array
from .._plan import Operands, contiguous_plan
from .._resolve import is_dense, resolve
from .._types import FLOAT_DTYPES


def _check(outi: ArrayLike, out0: ArrayLike) -> tuple[Any, Any]:
    """Both as arrays (GPU arrays as they are), checked to be (N, k) of one shape."""
    # A NumPy array first: asking another kind whether it is on a GPU costs a small call's time.
    p: Any = outi if type(outi) is np.ndarray or is_gpu_array(outi) else np.asarray(outi)
    t: Any = out0 if type(out0) is np.ndarray or is_gpu_array(out0) else np.asarray(out0)
    if p.ndim != 2 or p.shape != t.shape:
        msg = f"predictions and targets must be (N, k) arrays of one shape, not {p.shape} and {t.shape}"
        raise ValueError(msg)
    return p, t


def _sum_over_outputs(outi: ArrayLike, out0: ArrayLike) -> tuple[Any, np.dtype]:
    """The float64 ``sum((outi - out0) ** 2) / k``, where the arrays are, and the result dtype."""
    p, t = _check(outi, out0)
    if _flat(p, t):
        # The flat plan resolve() would make (Call.flat), without resolving: on small arrays
        # resolving costs several times the kernel.
        sums = np.empty((), np.float64)
        _backends.current().reduce(contiguous_plan(Operands(p, t, loss=sums)))
        return sums / p.shape[1], p.dtype
    part = partial_sums(p, t)
    with current_device_of(part.sums):
        return part.sums / p.shape[1], part.dtype


def _flat(p: Any, t: Any) -> bool:
    """Whether `p` and `t` (of one shape) are NumPy arrays of one float dtype, not empty,
    C-contiguous and aligned."""
    if type(p) is not np.ndarray or type(t) is not np.ndarray or p.dtype != t.dtype or p.dtype not in FLOAT_DTYPES:
        return False
    return p.size > 0 and is_dense(p.flags) and is_dense(t.flags)


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
    return float(_sum_over_outputs(outi, out0)[0])


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
    p, t = _check(outi, out0)
    small_call = _backends.small_call
    if small_call is not None:  # the common small call in one step (NotImplemented for others)
        result: NDArray[Any] = small_call(_backends.JOB_MSE_GRAD, p, t, None, -1, "mean", False, None)
        if result is not NotImplemented:
            return result
    result = gradient(resolve(p, t, None, -1, "mean"), None, keepdims=False, with_loss=False)[1]
    return result


def MSE_loss_cupy(outi: Any, out0: Any) -> Any:
    """``sum((outi - out0) ** 2) / k`` as a 0-d array of the input dtype (what
    ``cupy.sum(...) / k`` returns), rounded once from the float64 sum: a CuPy array on the
    inputs' device for CuPy inputs (the host does not wait for it), a NumPy one otherwise."""
    total, dtype = _sum_over_outputs(outi, out0)
    with np.errstate(over="ignore"), current_device_of(total):
        return array_module(total).asarray(total, dtype=dtype)


def MSE_loss_grad_cupy(outi: Any, out0: Any) -> Any:
    """``2 * (outi - out0) / k``, as :func:`MSE_loss_grad`: a CuPy array on the inputs'
    device for CuPy inputs."""
    return MSE_loss_grad(outi, out0)


__all__ = ["MSE_loss", "MSE_loss_cupy", "MSE_loss_grad", "MSE_loss_grad_cupy"]
