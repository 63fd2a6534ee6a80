from __future__ import annotations

import os

import pytest
from fastmse import _backends
from hypothesis import HealthCheck, settings

# The backend fixture only chooses where calls go; sharing it across examples is intended.
_shared = {"deadline": None, "print_blob": True, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
settings.register_profile("ci", max_examples=60, **_shared)
settings.register_profile("dev", max_examples=25, **_shared)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _loadable(name: str) -> bool:
    try:
        _backends.load(name)
    except ImportError:
        return False
    return True


def backend_params() -> list:
    """Every backend, skipped (visibly, with the reason) only where it cannot load.
    The compiled backend is required unless FASTMSE_BACKEND names another."""
    params = []
    for name in _backends.NAMES:
        required = name == "cpp" and os.environ.get("FASTMSE_BACKEND", "cpp") == "cpp"
        marks = []
        if not required and not _loadable(name):
            marks.append(pytest.mark.skip(reason=f"backend {name} cannot load here"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


BACKENDS = backend_params()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs the test with the calls going to one backend."""
    with _backends.use(request.param) as chosen:
        yield chosen


@pytest.fixture
def threads_from_parallel_min(monkeypatch):
    """Calls of 2**16 positions or more (the compiled kernels' kParallelMin) run on every
    thread, in the compiled backend whether OpenMP's threads are awake or asleep, and in
    the Numba backend too: tests of the threads reach them with arrays of 2**16-2**18
    elements, which otherwise run on one thread where the team sleeps (or, in Numba,
    always)."""
    try:
        from fastmse import _numba
    except ImportError:
        pass
    else:
        monkeypatch.setattr(_numba, "PARALLEL_MIN", 1 << 16)
    try:
        from fastmse import _core
    except ImportError:
        yield
        return
    previous = _core.set_parallel_asleep_min(1 << 16)
    try:
        yield
    finally:
        _core.set_parallel_asleep_min(previous)
