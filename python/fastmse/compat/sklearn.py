"""scikit-learn's ``mean_squared_error``, computed by fastmse.

Switch with one line::

    # from sklearn.metrics import mean_squared_error
    from fastmse.compat.sklearn import mean_squared_error

Same arguments, defaults, results and input errors as ``sklearn.metrics.mean_squared_error``
(scikit-learn 1.6 and later): 1-D or 2-D ``y_true``/``y_pred`` (a column per output),
``sample_weight`` (negative weights allowed, as scikit-learn allows them),
``multioutput="uniform_average"`` (a Python float), ``"raw_values"`` (one loss per
output, in the inputs' floating dtype) or an array of output weights. The per-output
losses are summed in float64 by fastmse's kernels (scikit-learn sums in the input dtype),
so float32 results can differ from scikit-learn's in the last bits, towards the exact value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._compute import finish_mean, partial_sums

_MULTIOUTPUT = ("raw_values", "uniform_average")


class InvalidParameterError(ValueError, TypeError):
    """A parameter of the wrong type or value (scikit-learn's exception of that name)."""


def _is_array_like(value: Any) -> bool:
    return (hasattr(value, "__len__") or hasattr(value, "shape") or hasattr(value, "__array__")) and not isinstance(
        value, str
    )


def _floating_dtype(*values: Any) -> np.dtype:
    """scikit-learn's rule: the widest floating dtype among the inputs that have a dtype,
    else float64."""
    floating = [np.dtype(v.dtype) for v in values if hasattr(v, "dtype") and np.dtype(v.dtype).kind == "f"]
    return np.result_type(*floating) if floating else np.dtype(np.float64)


def _num_samples(value: Any) -> int:
    shape = getattr(value, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            msg = f"Input should have at least 1 dimension i.e. satisfy `len(x.shape) > 0`, got scalar `{value!r}` instead."
            raise TypeError(msg)
        return int(shape[0])
    return len(value)


def _check_array(value: Any, dtype: np.dtype, name: str | None, *, two_d_max: bool = True) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind == "c":
        msg = f"Complex data not supported\n{array}\n"
        raise ValueError(msg)
    if array.dtype.kind in "SU":
        msg = (
            "dtype='numeric' is not compatible with arrays of bytes/strings."
            "Convert your data to numeric values explicitly instead."
        )
        raise ValueError(msg)
    if array.dtype != dtype:
        array = array.astype(dtype)
    if two_d_max and array.ndim > 2:
        msg = f"Found array with dim {array.ndim}, while dim <= 2 is required."
        raise ValueError(msg)
    if array.ndim >= 1 and array.shape[0] == 0:
        msg = f"Found array with 0 sample(s) (shape={array.shape}) while a minimum of 1 is required."
        raise ValueError(msg)
    if array.ndim == 2 and array.shape[1] == 0:
        msg = f"Found array with 0 feature(s) (shape={array.shape}) while a minimum of 1 is required."
        raise ValueError(msg)
    _check_finite(array, name)
    return array


def _check_finite(array: np.ndarray, name: str | None) -> None:
    # One pass (a float64 sum is finite exactly when every term is, barring overflow,
    # which the exact test below then settles).
    if array.size and np.isfinite(np.sum(array, dtype=np.float64)):
        return
    where = "Input" if name is None else f"Input {name}"
    if np.isnan(array).any():
        msg = f"{where} contains NaN."
        raise ValueError(msg)
    if np.isinf(array).any():
        msg = f"{where} contains infinity or a value too large for {array.dtype!r}."
        raise ValueError(msg)


def mean_squared_error(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    multioutput: str | ArrayLike = "uniform_average",
) -> float | NDArray[np.floating[Any]]:
    """Mean squared error regression loss, as ``sklearn.metrics.mean_squared_error``.

    Parameters
    ----------
    y_true : array_like of shape (n_samples,) or (n_samples, n_outputs)
        Ground truth (correct) target values.
    y_pred : array_like of shape (n_samples,) or (n_samples, n_outputs)
        Estimated target values.
    sample_weight : array_like of shape (n_samples,), optional
        Sample weights.
    multioutput : {"raw_values", "uniform_average"} or array_like of shape (n_outputs,)
        How the outputs' losses are combined: returned one per output, averaged
        uniformly (default) or averaged with these weights.

    Returns
    -------
    float or ndarray
        A float, or with ``"raw_values"`` an array with one loss per output, in the
        widest floating dtype of the inputs (float64 if none is floating).

    Raises
    ------
    InvalidParameterError
        A parameter of the wrong type (not array-like, an unknown `multioutput`).
    ValueError
        Inconsistent numbers of samples or outputs, NaN or infinity, more than two
        dimensions, no samples, sample weights that are all zero or of the wrong shape.
    ZeroDivisionError
        Sample or output weights that sum to zero.

    Examples
    --------
    >>> from fastmse.compat.sklearn import mean_squared_error
    >>> mean_squared_error([3, -0.5, 2, 7], [2.5, 0.0, 2, 8])
    0.375
    >>> mean_squared_error([[0.5, 1], [-1, 1], [7, -6]], [[0, 2], [-1, 2], [8, -5]], multioutput="raw_values")
    array([0.41666667, 1.        ])
    """
    for name, value in (("y_true", y_true), ("y_pred", y_pred)):
        if not _is_array_like(value):
            msg = f"The {name!r} parameter of mean_squared_error must be an array-like. Got {value!r} instead."
            raise InvalidParameterError(msg)
    if sample_weight is not None and not _is_array_like(sample_weight):
        msg = (
            "The 'sample_weight' parameter of mean_squared_error must be an array-like or None. "
            f"Got {sample_weight!r} instead."
        )
        raise InvalidParameterError(msg)
    if (
        isinstance(multioutput, str)
        and multioutput not in _MULTIOUTPUT
        or not (isinstance(multioutput, str) or _is_array_like(multioutput))
    ):
        msg = (
            "The 'multioutput' parameter of mean_squared_error must be a str among "
            f"{{'raw_values', 'uniform_average'}} or an array-like. Got {multioutput!r} instead."
        )
        raise InvalidParameterError(msg)

    dtype = _floating_dtype(y_true, y_pred, sample_weight)
    lengths = [_num_samples(v) for v in (y_true, y_pred, sample_weight) if v is not None]
    if len(set(lengths)) > 1:
        msg = f"Found input variables with inconsistent numbers of samples: {lengths}"
        raise ValueError(msg)
    truth = _check_array(y_true, dtype, None)
    predicted = _check_array(y_pred, dtype, None)
    weights = None
    if sample_weight is not None:
        weights = _check_array(sample_weight, dtype, "sample_weight", two_d_max=False)
        if weights.ndim != 1:
            msg = (
                f"Sample weights must be 1D array or scalar, got {weights.ndim}D array. "
                f"Expected either a scalar value or a 1D array of length {truth.shape[0]}."
            )
            raise ValueError(msg)
        if not np.any(weights):
            msg = "Sample weights must contain at least one non-zero number."
            raise ValueError(msg)
    truth, predicted = truth.reshape(len(truth), -1), predicted.reshape(len(predicted), -1)
    outputs = truth.shape[1]
    if outputs != predicted.shape[1]:
        msg = f"y_true and y_pred have different number of output ({outputs}!={predicted.shape[1]})"
        raise ValueError(msg)
    output_weights = None
    if not isinstance(multioutput, str):
        output_weights = _check_array(multioutput, np.dtype(np.float64), None)
        if outputs == 1:
            msg = "Custom weights are useful only in multi-output cases."
            raise ValueError(msg)
        if output_weights.ndim != 1 or output_weights.shape[0] != outputs:
            msg = f"There must be equally many custom weights ({output_weights.shape[0]}) as outputs ({outputs})."
            raise ValueError(msg)

    part = partial_sums(predicted, truth, None if weights is None else weights[:, None], axis=0, signed_weights=True)
    if np.any(part.weight_sums == 0):
        msg = "Weights sum to zero, can't be normalized"
        raise ZeroDivisionError(msg)
    output_errors: NDArray[np.floating[Any]] = finish_mean(part.sums, part.weight_sums, dtype, "mean")  # per output
    if isinstance(multioutput, str) and multioutput == "raw_values":
        return output_errors
    return float(np.average(output_errors, weights=output_weights))


__all__ = ["InvalidParameterError", "mean_squared_error"]
