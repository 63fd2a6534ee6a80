"""Backend choice: the compiled module, else Numba, else NumPy (with a warning), for
host arrays; for GPU arrays the CUDA kernels, else CuPy's (:func:`gpu`).

Every backend has the same five kernel methods (``reduce``, ``grad``,
``reduce_and_grad``, ``squared_error``, ``reduce_difference``), each taking a
:class:`fastmse._plan.Plan`,
plus ``get_num_threads`` / ``set_num_threads``. ``FASTMSE_BACKEND`` (``cpp``,
``numba`` or ``numpy``) forces one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ._plan import Plan

NAMES = ("cpp", "numba", "numpy")


class Kernels(Protocol):
    """The five passes every backend runs, CPU or GPU; `rows_first`: whether ``reduce``
    and ``reduce_and_grad`` take :attr:`fastmse._plan.Plan.rows_first` (otherwise the
    caller sums the rows into an array, then the array)."""

    name: str
    rows_first: bool

    def reduce(self, plan: Plan) -> None: ...
    def grad(self, plan: Plan) -> None: ...
    def reduce_and_grad(self, plan: Plan) -> None: ...
    def squared_error(self, plan: Plan) -> None: ...
    def reduce_difference(self, plan: Plan) -> None: ...


class Backend(Kernels, Protocol):
    """A CPU backend: the passes and a thread count, and optionally a whole common call
    in one step (``small_call``: see :data:`small_call`)."""

    small_call: Callable[..., Any] | None

    def get_num_threads(self) -> int: ...
    def set_num_threads(self, n: int) -> None: ...


_loaded: dict[str, Backend] = {}
_gpu_backend: Kernels | None = None
_failures: dict[str, str] = {}
_current: Backend | None = None
_threads: int | None = None  # set_num_threads' count, for backends loaded after it
# The current backend's small_call, where it has one: (job, predictions, targets, weights,
# axis, reduction, keepdims, out) -> the result of mse (job JOB_MSE), mse_grad (JOB_MSE_GRAD)
# or mse_and_grad (JOB_MSE_AND_GRAD) for the common small call, bitwise what the general
# path gives, or NotImplemented for any other call. None until a backend is chosen (the
# first call takes the general path).
small_call: Callable[..., Any] | None = None
JOB_MSE, JOB_MSE_GRAD, JOB_MSE_AND_GRAD = range(3)


def load(name: str) -> Backend:
    """The backend `name`, importing it on first use.

    Raises
    ------
    ValueError
        If `name` is not one of ``cpp``, ``numba``, ``numpy``.
    ImportError
        If the backend cannot be loaded here; the message says how to get it.
    """
    if name not in NAMES:
        msg = f"backend must be one of {', '.join(NAMES)}, not {name!r}"
        raise ValueError(msg)
    if name in _loaded:
        return _loaded[name]
    backend: Backend
    try:
        if name == "cpp":
            from ._native import NativeBackend

            backend = NativeBackend(importlib.import_module("fastmse._core"))
        elif name == "numba":
            from ._numba import NumbaBackend

            backend = NumbaBackend()
        else:
            from ._numpy_backend import NumpyBackend

            backend = NumpyBackend()
    except ImportError as error:
        _failures[name] = str(error)
        hint = {
            "cpp": "the compiled module fastmse._core is missing: install a fastmse wheel, "
            "or build from source with a C++ compiler and CMake (pip install .)",
            "numba": "Numba is not installed: pip install 'fastmse[numba]'",
        }[name]
        msg = f"fastmse backend {name!r} is unavailable: {hint} ({error})"
        raise ImportError(msg) from error
    if _threads is not None:  # set_num_threads applies to backends loaded after it too
        backend.set_num_threads(_threads)
    _loaded[name] = backend
    return backend


def set_num_threads(count: int) -> None:
    """`count` threads for every backend: those loaded and those loaded later."""
    global _threads
    _threads = count
    for backend in _loaded.values():
        backend.set_num_threads(count)


def loaded() -> dict[str, Backend]:
    """The backends loaded so far, by name."""
    return dict(_loaded)


def available() -> list[str]:
    """Names of the backends that load on this machine."""
    names = []
    for name in NAMES:
        with contextlib.suppress(ImportError):
            load(name)
            names.append(name)
    return names


def _choose() -> Backend:
    forced = os.environ.get("FASTMSE_BACKEND", "").strip().lower()
    if forced and forced != "auto":
        return load(forced)
    for name in ("cpp", "numba"):
        with contextlib.suppress(ImportError):
            return load(name)
    warnings.warn(
        "fastmse: neither the compiled module nor Numba could be loaded; using the slow "
        "NumPy path. Install a fastmse wheel or 'fastmse[numba]'.",
        RuntimeWarning,
        stacklevel=3,
    )
    return load("numpy")


def current() -> Backend:
    """The backend that runs the next call."""
    global _current, small_call
    if _current is None:
        _current = _choose()
        small_call = _current.small_call
    return _current


@contextlib.contextmanager
def use(name: str) -> Iterator[Backend]:
    """Run the calls inside the ``with`` block on backend `name`."""
    global _current, small_call
    previous = _current
    _current = load(name)
    small_call = _current.small_call
    try:
        yield _current
    finally:
        _current = previous
        small_call = None if previous is None else previous.small_call


def gpu() -> Kernels:
    """The backend for GPU arrays: the CUDA kernels of fastmse._core where it was built
    with them, otherwise the same passes as CuPy kernels."""
    global _gpu_backend
    if _gpu_backend is None:
        from . import _gpu

        core = None
        with contextlib.suppress(ImportError):
            core = importlib.import_module("fastmse._core")
        _gpu_backend = _gpu.backend(core)
    return _gpu_backend
