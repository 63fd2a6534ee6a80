"""PyTorch tensors as the arrays fastmse computes, and results back as tensors, and the
computation itself (small call, else general path): shared by :mod:`fastmse.compat.torch`
and :mod:`fastmse.compat.keras` (Keras's PyTorch backend), for arrays and tensors alike.

This module imports nothing of PyTorch at its own import: tensors arrive only where it is
already imported.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import numpy as np

from .. import _backends
from .._compute import gradient, loss
from .._resolve import Call, resolve

FLOATS = ("float16", "bfloat16", "float32", "float64")  # the tensor dtypes computed


def _torch() -> Any:
    return sys.modules["torch"]


def operands(input: Any, target: Any, weight: Any) -> tuple[Any, Any, Any]:
    """The tensors (`weight` may be None) as arrays fastmse computes, without a copy:
    NumPy views of CPU tensors (bfloat16 ones as ml_dtypes arrays); CUDA tensors as they
    are (fastmse reads them, on PyTorch's current stream). TypeError for other dtypes."""
    torch = _torch()
    floats = _float_dtypes(torch)
    for name, tensor in (("input", input), ("target", target)):
        if tensor.dtype not in floats:
            msg = f"{name} is a {tensor.dtype} tensor; fastmse computes float16, bfloat16, float32 and float64 ones"
            raise TypeError(msg)
    if input.is_cuda:
        arrays = tuple(None if t is None else t.detach() for t in (input, target, weight))
        if any(a is not None and a.dtype == torch.bfloat16 for a in arrays):
            msg = "bfloat16 CUDA tensors are not computed yet (CuPy, fastmse's GPU path, has no bfloat16 arrays)"
            raise TypeError(msg)
        return arrays[0], arrays[1], arrays[2]
    return _host_array(input), _host_array(target), None if weight is None else _host_array(weight)


_floats: frozenset[Any] = frozenset()


def _float_dtypes(torch: Any) -> frozenset[Any]:
    """The torch dtypes of FLOATS (looked up once: a dtype's name is slow to make)."""
    global _floats
    if not _floats:
        _floats = frozenset(getattr(torch, name) for name in FLOATS)
    return _floats


def _host_array(tensor: Any) -> np.ndarray:
    """A CPU tensor's NumPy view; bfloat16 through its bits, as ml_dtypes' bfloat16."""
    torch = _torch()
    tensor = tensor.detach()
    if tensor.dtype != torch.bfloat16:
        return tensor.numpy()  # type: ignore[no-any-return]
    return tensor.view(torch.int16).numpy().view(_bfloat16())  # type: ignore[no-any-return]


def _bfloat16() -> np.dtype:
    """ml_dtypes' bfloat16, imported only when a bfloat16 tensor arrives."""
    try:
        ml_dtypes = importlib.import_module("ml_dtypes")
    except ImportError:
        msg = "bfloat16 tensors need the ml_dtypes package: pip install 'fastmse[bfloat16]'"
        raise TypeError(msg) from None
    dtype: np.dtype = np.dtype(ml_dtypes.bfloat16)
    return dtype


def computed(
    input: Any, target: Any, weight: Any, reduction: str, with_gradient: bool, axis: int | tuple[int, ...] | None = None
) -> tuple[Any, Any]:
    """fastmse's loss of arrays over `axis`, and its gradient with respect to `input` where
    asked (else None), as the compat modules compute them: through the backend's small
    call where it takes the call (weights that are negative it leaves to the general path,
    which allows them here, as PyTorch does)."""
    small_call = _backends.small_call
    if small_call is not None and (weight is None or _same_dtype(weight, input)):
        job = _backends.JOB_MSE_AND_GRAD if with_gradient else _backends.JOB_MSE
        result = small_call(job, input, target, weight, axis, reduction, False, None)
        if result is not NotImplemented:
            return result if with_gradient else (result, None)
    call = _call(input, target, weight, reduction, axis)
    if with_gradient:
        value, grad = gradient(call, None, False, with_loss=True)
        return value, grad
    return loss(call, keepdims=False), None


def _same_dtype(weight: Any, input: Any) -> bool:
    """Whether `weight` is an array of `input`'s dtype: a wider one widens PyTorch's loss."""
    return isinstance(weight, np.ndarray) and isinstance(input, np.ndarray) and weight.dtype == input.dtype


def _call(input: Any, target: Any, weight: Any, reduction: str, axis: int | tuple[int, ...] | None) -> Call:
    """The fastmse call of PyTorch's loss: weights may be negative, and float64 weights
    make a float64 loss (PyTorch multiplies by them in their dtype)."""
    if weight is None:
        return resolve(input, target, None, axis, reduction)
    if not isinstance(weight, np.ndarray) and not is_tensor(weight):
        weight = np.asarray(weight)
    call = resolve(input, target, weight, axis, reduction, signed_weights=True)
    if isinstance(weight, np.ndarray) and weight.dtype.kind == "f" and weight.dtype.itemsize > call.dtype.itemsize:
        wider = weight.dtype
        call = resolve(input.astype(wider), target.astype(wider), weight, axis, reduction, signed_weights=True)
    return call


def is_tensor(value: Any) -> bool:
    """Whether `value` is a PyTorch tensor (PyTorch, where not imported, made none)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def as_tensor(value: Any, like: Any) -> Any:
    """A result of fastmse (NumPy, or a GPU array) as a tensor on `like`'s device, without a copy."""
    torch = _torch()
    if like.is_cuda:
        return torch.from_dlpack(value)
    array = np.asarray(value)
    if array.dtype.kind == "V":  # bfloat16 (the only such dtype fastmse returns): through its bits
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
