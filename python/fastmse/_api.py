"""The public functions ``mse``, ``mse_grad`` and ``mse_and_grad``: their overloads and
docstrings, and the choice between the in-memory path (:mod:`fastmse._resolve` checks
the arguments, :mod:`fastmse._compute` runs them) and the lazy one for Dask arrays
(:mod:`fastmse._dask`, imported on first use).
"""

from __future__ import annotations

from typing import Any, Literal, overload

from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _backends, _compute, _masked
from ._backends import JOB_MSE, JOB_MSE_AND_GRAD, JOB_MSE_GRAD
from ._resolve import DaskInputError, MaskedInputError, resolve
from ._types import Axis, FloatArray, GpuOrDask, Reduction, Scalar


def _refuse_lazy_out(out: Any) -> None:
    if out is not None:
        msg = "out cannot be used with Dask inputs: the result is lazy; store it with dask.array.store"
        raise TypeError(msg)


# GPU or Dask arrays (predictions, targets or weights): a CuPy or a lazy Dask result.
@overload
def mse(
    predictions: GpuOrDask,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
) -> Any: ...
@overload
def mse(
    predictions: object,
    targets: GpuOrDask,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
) -> Any: ...
@overload
def mse(
    predictions: object,
    targets: object,
    *,
    weights: GpuOrDask,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
) -> Any: ...
# NumPy (host) inputs reduced over every axis: a NumPy scalar.
@overload
def mse(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: None = None,
    reduction: Literal["mean", "sum"] = "mean",
    keepdims: Literal[False] = False,
    dtype: DTypeLike | None = None,
) -> Scalar: ...
# Otherwise an array; a scalar where no axis is left (axis=0 of 1-D arrays, 0-d arrays).
@overload
def mse(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
) -> FloatArray | Scalar: ...
def mse(
    predictions: object,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
) -> Any:
    """Mean squared error, ``mean((predictions - targets) ** 2)``, summed in float64.

    Parameters
    ----------
    predictions, targets : array_like
        Real-valued arrays that broadcast together (NumPy's rules) to a shape ``S``.
    weights : array_like, optional
        Non-negative weights broadcasting to ``S``. With ``reduction="mean"`` the
        result is ``sum(w * e) / sum(w)`` over the reduced axes.
    axis : None, int or tuple of ints, optional
        Axes of ``S`` to reduce over; None (default) reduces over all of them.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` (default), ``"sum"`` of the weighted squared errors, or ``"none"``
        for the elementwise ``w * (p - t) ** 2`` of shape ``S`` (``axis`` must be None).
    keepdims : bool, optional
        Keep the reduced axes with length one, as NumPy does.
    dtype : dtype, optional
        The loss's dtype: float16, bfloat16 (``ml_dtypes``), float32 or float64. The
        float64 sums are rounded once to it (a float32 loss of bfloat16 inputs, a
        float64 one of float32 inputs). None (default): the result dtype below.

    Returns
    -------
    numpy scalar or ndarray
        In dtype ``np.result_type(predictions, targets)``, with bool and integers
        giving float64, or `dtype` where given. A NumPy scalar when everything is
        reduced (like ``np.mean``).

    Raises
    ------
    ValueError
        Shapes that do not broadcast, a bad `reduction`, `axis` with ``"none"``,
        negative weights, a repeated axis.
    numpy.exceptions.AxisError
        An axis out of range.
    TypeError
        Complex, object, string or datetime inputs; a non-integer `axis`; a `dtype`
        that is not one of the four floats.

    Warns
    -----
    RuntimeWarning
        A mean over zero elements, or over weights that sum to zero (the result is nan).

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse import mse
    >>> mse(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    np.float64(1.3333333333333333)
    >>> mse(np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32), axis=-1)
    array([1., 1.], dtype=float32)
    """
    small_call = _backends.small_call
    if small_call is not None and dtype is None:
        result = small_call(JOB_MSE, predictions, targets, weights, axis, reduction, keepdims, None)
        if result is not NotImplemented:
            return result
    try:
        call = resolve(predictions, targets, weights, axis, reduction, dtype=dtype)
    except DaskInputError:
        from . import _dask

        return _dask.mse(predictions, targets, weights, axis, reduction, keepdims, dtype)
    except MaskedInputError:
        return _masked.mse(predictions, targets, weights, axis, reduction, keepdims, dtype)
    return _compute.loss(call, keepdims)


# GPU or Dask arrays: a CuPy array (`out` itself where given) or a lazy Dask array.
@overload
def mse_grad(
    predictions: GpuOrDask,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: object = None,
) -> Any: ...
@overload
def mse_grad(
    predictions: object,
    targets: GpuOrDask,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: object = None,
) -> Any: ...
@overload
def mse_grad(
    predictions: object,
    targets: object,
    *,
    weights: GpuOrDask,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: object = None,
) -> Any: ...
# NumPy (host) inputs: a NumPy array (`out` itself where given).
@overload
def mse_grad(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: NDArray[Any] | None = None,
) -> FloatArray: ...
def mse_grad(
    predictions: object,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    out: object = None,
) -> Any:
    """Gradient of ``sum(mse(...))`` with respect to `predictions`.

    ``2 * w * (p - t) / sum(w)`` over the reduced axes for ``"mean"`` (so
    ``2 * (p - t) / k`` for a mean over the last axis of an ``(N, k)`` batch), and
    ``2 * w * (p - t)`` for ``"sum"`` and ``"none"``. Computed in float64 and rounded
    once to the result dtype.

    Parameters
    ----------
    predictions, targets, weights, axis, reduction
        As in :func:`mse`.
    out : ndarray, optional
        Where to write the gradient: the shape of `predictions` and the result dtype,
        writable. May be `predictions` or `targets` itself. Nothing is written to it
        if any argument is wrong.

    Returns
    -------
    ndarray
        The gradient, shaped like `predictions`. Where targets or weights broadcast
        predictions to a larger shape, it is summed over those axes, as autograd does.

    Raises
    ------
    ValueError, TypeError
        As :func:`mse`, and for an `out` of the wrong shape, dtype or that is read-only.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse import mse_grad
    >>> mse_grad(np.array([[1.0, 3.0]]), np.array([[0.0, 0.0]]), axis=-1)
    array([[1., 3.]])
    """
    small_call = _backends.small_call
    if small_call is not None:
        result = small_call(JOB_MSE_GRAD, predictions, targets, weights, axis, reduction, False, out)
        if result is not NotImplemented:
            return result
    try:
        call = resolve(predictions, targets, weights, axis, reduction)
    except DaskInputError:
        from . import _dask

        _refuse_lazy_out(out)
        return _dask.mse_grad(predictions, targets, weights, axis, reduction)
    except MaskedInputError:
        return _masked.mse_grad(predictions, targets, weights, axis, reduction, out)
    return _compute.gradient(call, out, False, with_loss=False)[1]


# The loss as mse returns it, the gradient as mse_grad does.
@overload
def mse_and_grad(
    predictions: GpuOrDask,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
    out: object = None,
) -> tuple[Any, Any]: ...
@overload
def mse_and_grad(
    predictions: object,
    targets: GpuOrDask,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
    out: object = None,
) -> tuple[Any, Any]: ...
@overload
def mse_and_grad(
    predictions: object,
    targets: object,
    *,
    weights: GpuOrDask,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
    out: object = None,
) -> tuple[Any, Any]: ...
@overload
def mse_and_grad(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: None = None,
    reduction: Literal["mean", "sum"] = "mean",
    keepdims: Literal[False] = False,
    dtype: DTypeLike | None = None,
    out: NDArray[Any] | None = None,
) -> tuple[Scalar, FloatArray]: ...
@overload
def mse_and_grad(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
    out: NDArray[Any] | None = None,
) -> tuple[FloatArray | Scalar, FloatArray]: ...
def mse_and_grad(
    predictions: object,
    targets: object,
    *,
    weights: object = None,
    axis: Axis = None,
    reduction: Reduction = "mean",
    keepdims: bool = False,
    dtype: DTypeLike | None = None,
    out: object = None,
) -> tuple[Any, Any]:
    """Loss and gradient in one pass over memory.

    Returns exactly (bitwise) what ``mse(...)`` and ``mse_grad(...)`` return for the
    same arguments; see those functions for the parameters (`dtype` is the loss's, as
    in :func:`mse`; the gradient keeps the inputs' result dtype).

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`mse`.
    grad : ndarray
        As :func:`mse_grad`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse import mse_and_grad
    >>> loss, grad = mse_and_grad(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    >>> float(loss), grad
    (5.0, array([1., 3.]))
    """
    small_call = _backends.small_call
    if small_call is not None and dtype is None:
        both: tuple[Any, Any] = small_call(
            JOB_MSE_AND_GRAD, predictions, targets, weights, axis, reduction, keepdims, out
        )
        if both is not NotImplemented:
            return both
    try:
        call = resolve(predictions, targets, weights, axis, reduction, dtype=dtype)
    except DaskInputError:
        from . import _dask

        _refuse_lazy_out(out)
        return _dask.mse_and_grad(predictions, targets, weights, axis, reduction, keepdims, dtype)
    except MaskedInputError:
        return _masked.mse_and_grad(predictions, targets, weights, axis, reduction, keepdims, out, dtype)
    loss, grad = _compute.gradient(call, out, keepdims, with_loss=True)
    return loss, grad
