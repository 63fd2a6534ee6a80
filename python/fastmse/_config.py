"""Threads, the package version and build information."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from . import _backends, _gpu
from ._native import NativeBackend
from ._resolve import as_integer

try:
    __version__ = version("fastmse")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"


def set_num_threads(n: int) -> None:
    """Use `n` threads in the following calls (every loaded backend).

    Results do not depend on the thread count. Without a call, fastmse follows OpenMP
    (``OMP_NUM_THREADS``, ``threadpoolctl``) for the compiled kernels and
    ``NUMBA_NUM_THREADS`` (by default the number of CPUs) for the Numba kernels.

    Parameters
    ----------
    n : int
        Number of threads, at least 1.

    Raises
    ------
    TypeError
        If `n` is not an integer.
    ValueError
        If `n` is smaller than 1.
    """
    count = as_integer(n, f"n must be an integer, not {n!r}")
    if count < 1:
        msg = f"n must be at least 1, not {count}"
        raise ValueError(msg)
    _backends.set_num_threads(count)


def get_num_threads() -> int:
    """Number of threads the next call of the current backend uses."""
    return _backends.current().get_num_threads()


def config() -> dict[str, Any]:
    """What :func:`show_config` prints, as a dictionary."""
    backend = _backends.current()
    info: dict[str, Any] = {
        "fastmse": __version__,
        "backend": backend.name,
        "threads": backend.get_num_threads(),
        "available backends": _backends.available(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
    }
    native = _backends.loaded().get("cpp")
    if isinstance(native, NativeBackend):
        build = native.build
        info["compiler"] = build["compiler"]
        info["kernels"] = f"{native.isa} (this CPU runs: {', '.join(native.runnable_isas)})"
        info["openmp"] = f"yes (OpenMP {build['openmp_version']})" if build["openmp"] else "no (one thread)"
        info["cuda"] = (
            f"{build['cuda_version']} for {', '.join(build['cuda_architectures'])}"
            f" (needs NVIDIA driver {_gpu.minimum_driver(build['cuda_version'])} or later)"
            if build["cuda"]
            else "not built"
        )
        if build["cuda"]:
            reason = _gpu.unusable_reason(native.core)
            info["cuda devices"] = str(native.core.cuda_device_count()) if reason is None else f"none usable: {reason}"
    numba_backend = _backends.loaded().get("numba")
    if numba_backend is not None:  # so Numba and _numba import
        from ._numba import NumbaBackend

        if isinstance(numba_backend, NumbaBackend):
            info["numba"] = numba_backend.version
    return info


def show_config() -> None:
    """Print the running backend, the build (compiler, OpenMP, CUDA) and the thread count."""
    for key, value in config().items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key + ':':20s}{value}")
