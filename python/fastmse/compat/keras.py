"""Keras 3's ``mean_squared_error`` loss and ``MeanSquaredError``, computed by fastmse.

Switch with one line::

    # from keras.losses import MeanSquaredError, mean_squared_error
    from fastmse.compat.keras import MeanSquaredError, mean_squared_error

One loss per sample: the mean over the last axis of ``(y_true - y_pred) ** 2``, as
``keras.losses.mean_squared_error`` computes it. As in Keras, ``y_true`` is cast to the
dtype of ``y_pred``; integer predictions give float32 losses (Keras's default float),
Python lists and scalars are float32 (``keras.backend.floatx()``); ranks that differ by
one with a trailing axis of 1 are squeezed or expanded, then the shapes broadcast.

NumPy arrays (and lists and scalars) in give NumPy arrays out. Tensors of Keras's PyTorch
backend (``torch.Tensor``: float16, bfloat16, float32 and float64 ones, integer ones as
float32) in give tensors out, on their device and in the autograd graph, so that
``model.compile(loss=mean_squared_error)`` or ``loss=MeanSquaredError()`` trains: where
only `y_pred` requires grad, the forward runs fastmse's fused pass (the loss and its
gradient from one read of the data) and the backward scales that gradient by the incoming
one; ``create_graph=True``, a `y_true` that requires grad and a `y_pred` broadcast across
samples take PyTorch's expressions in the backward. The tensors are read as
:mod:`fastmse.compat.torch` reads them (CPU ones without a copy; bfloat16 ones on the CPU
only, with ``ml_dtypes``). Tensors of Keras's other backends are read as NumPy arrays,
outside their graph.

``MeanSquaredError`` is a ``keras.losses.Loss``, made on first use: importing this module
imports neither Keras nor PyTorch.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._resolve import is_bfloat16
from ._tensors import as_tensor, computed, operands

_FLOATX = np.dtype(np.float32)


def _as_array(value: Any, dtype: np.dtype | None = None) -> np.ndarray:
    if dtype is not None:
        return np.asarray(value).astype(dtype, copy=False)
    if hasattr(value, "dtype"):
        return np.asarray(value)
    array = np.asarray(value)  # Python numbers and lists: Keras's floatx, or int32
    return array.astype(_FLOATX if array.dtype.kind == "f" else np.int32, copy=False)


def _same_rank(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Keras's ``squeeze_or_expand_to_same_rank``: ranks that differ by one with a
    trailing axis of 1 (NumPy arrays or tensors)."""
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


def _torch_of(*values: Any) -> Any:
    """PyTorch, where one of `values` is a tensor; None otherwise. Asked of the modules
    already imported: no tensor exists before PyTorch is, and NumPy calls import nothing."""
    torch = sys.modules.get("torch")
    if torch is not None and any(isinstance(value, torch.Tensor) for value in values):
        return torch
    return None


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    """Mean squared error over the last axis: one loss per sample.

    Parameters
    ----------
    y_true : torch.Tensor or array_like of shape (batch_size, d0, ... dN)
        Ground truth values; cast to the dtype of `y_pred`.
    y_pred : torch.Tensor or array_like of shape (batch_size, d0, ... dN)
        The predicted values.

    Returns
    -------
    torch.Tensor or ndarray of shape (batch_size, d0, ... dN-1)
        In the dtype of `y_pred` (float32 for integer predictions). A tensor where `y_true`
        or `y_pred` is one (on `y_pred`'s device, in the autograd graph); otherwise a NumPy
        array.

    Raises
    ------
    ValueError
        Shapes that do not broadcast.
    TypeError
        Tensors of a dtype fastmse does not compute (complex; bfloat16 on CUDA or
        without ``ml_dtypes``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastmse.compat.keras import mean_squared_error
    >>> mean_squared_error(np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [1.0, 0.0]]))
    array([0.5, 0.5])
    """
    torch = _torch_of(y_true, y_pred)
    if torch is None:
        predicted = _as_array(y_pred)
        truth = _as_array(y_true, predicted.dtype)
    else:
        predicted, truth = _tensors(torch, y_true, y_pred)
    truth, predicted = _same_rank(truth, predicted)
    if predicted.ndim == 0 and truth.ndim == 0:  # a mean over the last axis of a scalar: itself
        predicted, truth = predicted[None], truth[None]
    if torch is not None:
        return _tensor_loss(torch, predicted, truth)
    losses = np.asarray(computed(predicted, truth, None, "mean", False, -1)[0])
    return losses if predicted.dtype.kind == "f" or is_bfloat16(predicted.dtype) else losses.astype(_FLOATX)


# Tensors of Keras's PyTorch backend.


def _tensors(torch: Any, y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """`y_pred` and `y_true` as tensors, as Keras converts them: an array or list `y_pred`
    as the NumPy path reads it (on `y_true`'s device), `y_true` in `y_pred`'s dtype and on
    its device; integer and bool tensors then as float32 (the dtype of their loss)."""
    if isinstance(y_pred, torch.Tensor):
        predicted = y_pred
    else:
        predicted = _from_array(torch, _as_array(y_pred), None, y_true.device)
    if isinstance(y_true, torch.Tensor):
        truth = y_true.to(device=predicted.device, dtype=predicted.dtype)
    else:
        truth = _from_array(torch, np.asarray(y_true), predicted.dtype, predicted.device)
    if not predicted.is_floating_point() and not predicted.is_complex():  # complex ones: refused by _operands
        predicted, truth = predicted.to(torch.float32), truth.to(torch.float32)
    return predicted, truth


def _from_array(torch: Any, array: np.ndarray, dtype: Any, device: Any) -> Any:
    """A tensor of `array`'s values (a copy of a read-only array, of which PyTorch warns)."""
    return torch.as_tensor(array if array.flags.writeable else array.copy(), dtype=dtype, device=device)


def _tensor_loss(torch: Any, y_pred: Any, y_true: Any) -> Any:
    """The losses of tensors of the same rank (at least 1): in the autograd graph where one
    requires grad, with the fused pass where the backward can use its gradient."""
    if not torch.is_grad_enabled() or not (y_pred.requires_grad or y_true.requires_grad):
        return _forward(y_pred, y_true, with_gradient=False)[0]
    # The fused gradient, summed by the kernels over the axes along which y_pred is
    # broadcast, is scaled by one incoming gradient per sample: y_pred must not be
    # broadcast across samples (it may be along the last axis, where that factor is one).
    shape = torch.broadcast_shapes(y_pred.shape, y_true.shape)
    fused = not y_true.requires_grad and tuple(y_pred.shape[:-1]) == tuple(shape[:-1])
    return _autograd_function(torch).apply(y_pred, y_true, fused)


def _forward(y_pred: Any, y_true: Any, with_gradient: bool) -> tuple[Any, Any]:
    """The losses, and the gradient of their sum with respect to `y_pred` where asked
    (one pass over the data), as tensors."""
    predictions, targets, _ = operands(y_pred, y_true, None)
    value, grad = computed(predictions, targets, None, "mean", with_gradient, -1)
    return as_tensor(value, y_pred), None if grad is None else as_tensor(grad, y_pred)


@functools.cache
def _autograd_function(torch: Any) -> Any:
    """The losses as a ``torch.autograd.Function`` of ``(y_pred, y_true, fused)``."""

    def forward(ctx: Any, y_pred: Any, y_true: Any, fused: bool) -> Any:
        value, ctx.fused = _forward(y_pred, y_true, with_gradient=fused)
        ctx.save_for_backward(y_pred, y_true)
        return value

    def backward(ctx: Any, grad_loss: Any) -> tuple[Any, Any, None]:
        """The fused gradient times the incoming gradient of each loss, where that is all
        that is asked (once: a second backward through the same graph, or one with
        create_graph, takes PyTorch's expressions, which are differentiable again)."""
        y_pred, y_true = ctx.saved_tensors
        fused, ctx.fused = ctx.fused, None
        per_loss = grad_loss[..., None]  # one factor per loss, over the last axis
        if fused is not None and not torch.is_grad_enabled():
            return fused.mul_(per_loss), None, None
        difference = y_pred - y_true
        factor = difference * per_loss * (2 / max(difference.shape[-1], 1))
        wants_pred, wants_true = ctx.needs_input_grad[:2]
        grad_pred = factor.sum_to_size(y_pred.shape) if wants_pred else None
        grad_true = (-factor).sum_to_size(y_true.shape) if wants_true else None
        return grad_pred, grad_true, None

    methods = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    return type("MeanSquaredErrorPerSample", (torch.autograd.Function,), methods)


# MeanSquaredError: a keras.losses.Loss, made (importing Keras) on first use.


def _loss_class() -> type:
    try:
        keras: Any = importlib.import_module("keras")
    except ImportError as error:
        msg = (
            "fastmse.compat.keras.MeanSquaredError is a keras.losses.Loss, and Keras 3 cannot be imported "
            f"(is KERAS_BACKEND set to an installed backend?): {error}"
        )
        raise ImportError(msg) from error

    @keras.saving.register_keras_serializable(package="fastmse")
    class MeanSquaredError(keras.losses.Loss):  # type: ignore[misc]
        """``keras.losses.MeanSquaredError`` computed by :func:`mean_squared_error`.

        Parameters
        ----------
        reduction : {"sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None}, optional
            How the losses of the samples (weighted by ``sample_weight``) are reduced, as
            in Keras. Default ``"sum_over_batch_size"``.
        name : str, optional
            The loss's name. Default ``"mean_squared_error"``.
        dtype : str or keras.DTypePolicy, optional
            The dtype the inputs are cast to; default ``keras.backend.floatx()``.
        """

        def __init__(
            self, reduction: str | None = "sum_over_batch_size", name: str = "mean_squared_error", dtype: Any = None
        ) -> None:
            super().__init__(name=name, reduction=reduction, dtype=dtype)

        def call(self, y_true: Any, y_pred: Any) -> Any:
            return mean_squared_error(y_true, y_pred)

    MeanSquaredError.__qualname__ = "MeanSquaredError"  # where pickle and repr find it
    return MeanSquaredError


def __getattr__(name: str) -> Any:
    """``MeanSquaredError``, made on first use (Keras is imported then)."""
    if name != "MeanSquaredError":
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    loss_class = globals()[name] = _loss_class()
    return loss_class


MeanSquaredError: Any  # made by __getattr__ on first use; declared for linters and type checkers

__all__ = ["MeanSquaredError", "mean_squared_error"]
