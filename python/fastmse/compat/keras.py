"""Keras 3's ``mean_squared_error`` loss, computed by fastmse.

Switch with one line::

    # from keras.losses import mean_squared_error
    from fastmse.compat.keras import mean_squared_error

One loss per sample: the mean over the last axis of ``(y_true - y_pred) ** 2``, as
``keras.losses.mean_squared_error`` computes it. As in Keras, ``y_true`` is cast to the
dtype of ``y_pred``; integer predictions give float32 losses (Keras's default float),
Python lists and scalars are float32 (``keras.backend.floatx()``); ranks that differ by
one with a trailing axis of 1 are squeezed or expanded, then the shapes broadcast.
Results are NumPy arrays (Keras returns tensors of its backend).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._compute import loss
from .._resolve import resolve

_FLOATX = np.dtype(np.float32)


def _as_tensor(value: Any, dtype: np.dtype | None = None) -> np.ndarray:
    if dtype is not None:
        return np.asarray(value).astype(dtype, copy=False)
    if hasattr(value, "dtype"):
        return np.asarray(value)
    array = np.asarray(value)  # Python numbers and lists: Keras's floatx, or int32
    return array.astype(_FLOATX if array.dtype.kind == "f" else np.int32, copy=False)


def _same_rank(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras's ``squeeze_or_expand_to_same_rank``: ranks that differ by one with a
    trailing axis of 1."""
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        if y_pred.ndim == 1:
            y_pred = y_pred[..., None]
        else:
            y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        if y_true.ndim == 1:
            y_true = y_true[..., None]
        else:
            y_pred = y_pred[..., 0]
    return y_true, y_pred


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[np.floating[Any]]:
    """Mean squared error over the last axis: one loss per sample.

    Parameters
    ----------
    y_true : array_like of shape (batch_size, d0, ... dN)
        Ground truth values; cast to the dtype of `y_pred`.
    y_pred : array_like of shape (batch_size, d0, ... dN)
        The predicted values.

    Returns
    -------
    ndarray of shape (batch_size, d0, ... dN-1)
        In the dtype of `y_pred` (float32 for integer predictions).

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse.compat.keras import mean_squared_error
    >>> mean_squared_error(np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [1.0, 0.0]]))
    array([0.5, 0.5])
    """
    predicted = _as_tensor(y_pred)
    truth = _as_tensor(y_true, predicted.dtype)
    truth, predicted = _same_rank(truth, predicted)
    if predicted.ndim == 0 and truth.ndim == 0:  # a mean over the last axis of a scalar: itself
        predicted, truth = predicted[None], truth[None]
    losses = np.asarray(loss(resolve(predicted, truth, None, -1, "mean"), keepdims=False))
    return losses if predicted.dtype.kind == "f" else losses.astype(_FLOATX)


__all__ = ["mean_squared_error"]
