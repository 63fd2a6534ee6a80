"""Type aliases and literals of the public API. Imports nothing of fastmse: every other
module may import it."""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

Reduction = Literal["mean", "sum", "none"]
Axis = int | tuple[int, ...] | None
Scalar = np.floating[Any]  # float16, float32 or float64, as the result dtype
FloatArray = NDArray[np.floating[Any]]


class DaskArray(Protocol):
    """A Dask array, to type checkers: results from one are lazy Dask arrays."""

    def __dask_graph__(self) -> object: ...


class CudaArray(Protocol):
    """An array in CUDA memory, to type checkers: CuPy arrays, Numba device arrays, PyTorch
    tensors (CPU ones declare it too). Results from GPU arrays are CuPy arrays."""

    @property
    def __cuda_array_interface__(self) -> object: ...


# The public functions' overloads tell GPU and Dask arrays from host ones: one among the
# operands gives a result typed Any (a CuPy or a lazy Dask array). Those overloads come
# first, as such arrays are ArrayLike too (they have __array__), and no NumPy array
# matches them: a catch-all `object` overload would, and mypy answers Any where an
# argument containing Any (NDArray[Any]) matches overloads that return different types.
GpuOrDask = DaskArray | CudaArray

REDUCTIONS = ("mean", "sum", "none")
# The dtypes the kernels compute in (bfloat16 aside), in native byte order.
FLOAT_DTYPES = frozenset(np.dtype(name) for name in ("float16", "float32", "float64"))
