"""fastmse: the mean squared error loss and its gradient, fast and exact.

>>> from fastmse import mse, mse_grad, mse_and_grad

Drop-in for ``np.mean((p - t) ** 2)`` and ``2 * (p - t) / n``, computed by OpenMP C++
kernels with float64 accumulation and results that do not depend on the thread count.
"""

from __future__ import annotations

from ._accumulator import MSEAccumulator
from ._api import mse, mse_and_grad, mse_grad
from ._config import __version__, get_num_threads, set_num_threads, show_config

__all__ = [
    "MSEAccumulator",
    "__version__",
    "get_num_threads",
    "mse",
    "mse_and_grad",
    "mse_grad",
    "set_num_threads",
    "show_config",
]
