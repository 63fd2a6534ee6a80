"""mypy --strict on the installed package, and on typed code that uses it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import fastmse
import pytest

mypy_api = pytest.importorskip("mypy.api")

PACKAGE = Path(fastmse.__file__).parent

# A user's view of the public types: assert_type pins each one, and a `type: ignore`
# on a line that must not type-check fails the run (--strict warns of unused ignores).
USAGE = """
from typing import Any

import numpy as np
from numpy.typing import NDArray
from typing_extensions import assert_type

from fastmse import MSEAccumulator, mse, mse_and_grad, mse_grad

FloatArray = NDArray[np.floating[Any]]
p: NDArray[np.float32] = np.ones((4, 3), np.float32)
t: np.ndarray = np.zeros((4, 3))

# NumPy inputs reduced over every axis: a NumPy scalar.
assert_type(mse(p, t), np.floating[Any])
assert_type(mse(p, t, weights=t, reduction="sum"), np.floating[Any])
total: float = float(mse([1.0, 2.0], [0.0, 0.5]))
# Over some axes (or none): an array, or a scalar where no axis is left (1-D input here).
assert_type(mse(p, t, axis=-1), FloatArray | np.floating[Any])
assert_type(mse(p, t, keepdims=True), FloatArray | np.floating[Any])
assert_type(mse(p, t, reduction="none"), FloatArray | np.floating[Any])
per_row: np.ndarray = np.asarray(mse(p, t, axis=-1))
v: NDArray[np.float64] = np.ones(3)
unsure: np.ndarray = mse(v, v, axis=0)  # type: ignore[assignment]
# Gradients: arrays shaped like predictions.
assert_type(mse_grad(p, t), FloatArray)
grad: np.ndarray = mse_grad(p, t, axis=-1, out=np.empty((4, 3)))
loss, gradient = mse_and_grad(p, t)
assert_type(loss, np.floating[Any])
assert_type(gradient, FloatArray)
assert_type(mse_and_grad(p, t, axis=0), tuple[FloatArray | np.floating[Any], FloatArray])
mse(p, t, reduction="average")  # type: ignore[call-overload]
mse(p, t, axis=1.5)  # type: ignore[call-overload]


class DeviceArray:  # what type checkers see of a CuPy array or a PyTorch CUDA tensor
    __cuda_array_interface__: dict[str, Any] = {}

    def __array__(self) -> np.ndarray:
        return np.zeros(0)


class LazyArray:  # and of a Dask array
    def __dask_graph__(self) -> dict[str, Any]:
        return {}

    def __array__(self) -> np.ndarray:
        return np.zeros(0)


# GPU and Dask arrays, wherever they are among the operands: CuPy or lazy Dask results.
gpu, lazy = DeviceArray(), LazyArray()
assert_type(mse(gpu, 0.0), Any)
assert_type(mse(p, lazy), Any)
assert_type(mse(p, t, weights=lazy), Any)
assert_type(mse_grad(gpu, gpu, out=gpu), Any)
assert_type(mse_and_grad(lazy, 0.0), tuple[Any, Any])

accumulator = MSEAccumulator(axis=0)
accumulator.update(p, t)
"""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One cache for both runs: the second reuses the analysis of NumPy's stubs.
    return tmp_path_factory.mktemp("mypy-cache")


def _mypy(cache_dir: Path, *targets: str) -> tuple[int, str]:
    stdout, stderr, status = mypy_api.run(["--strict", "--cache-dir", str(cache_dir), *targets])
    return status, stdout + stderr


def test_package_passes_mypy_strict(cache_dir):
    # By module name, as installed (py.typed): a path inside site-packages would make mypy
    # take the whole of site-packages for user code, and refuse modules there.
    status, output = _mypy(cache_dir, "-p", "fastmse")
    assert status == 0, f"mypy --strict -p fastmse ({PACKAGE}):\n{output}"


def test_public_types_as_users_see_them(cache_dir, tmp_path):
    sample = tmp_path / "usage.py"
    sample.write_text(textwrap.dedent(USAGE))
    status, output = _mypy(cache_dir, str(sample))
    assert status == 0, f"mypy --strict on the usage sample:\n{output}\n{USAGE}"
