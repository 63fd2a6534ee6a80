"""Backend choice, fallbacks, configuration report."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import fastmse
import ml_dtypes
import numpy as np
import pytest
from checks import assert_finishes_loss
from fastmse import _backends, _gpu


def _run(code: str, **env_update: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_update}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)


REPORT = "import fastmse, numpy as np; print(fastmse.mse(np.arange(3.0), np.zeros(3))); fastmse.show_config()"
# Hides a module from the import system, as on a machine where it is not installed.
BLOCK = "import sys; sys.modules[{!r}] = None\n"


def test_default_backend_is_the_compiled_one():
    result = _run(REPORT, FASTMSE_BACKEND="")
    assert result.returncode == 0, result.stderr
    assert "backend:            cpp" in result.stdout
    assert "openmp:             yes" in result.stdout
    assert result.stdout.startswith("1.666666666666666")


def test_environment_variable_chooses_numba():
    pytest.importorskip("numba")
    result = _run(REPORT, FASTMSE_BACKEND="numba")
    assert result.returncode == 0, result.stderr
    assert "backend:            numba" in result.stdout


def test_missing_compiled_module_falls_back_to_numba():
    pytest.importorskip("numba")
    result = _run(BLOCK.format("fastmse._core") + REPORT, FASTMSE_BACKEND="")
    assert result.returncode == 0, result.stderr
    assert "backend:            numba" in result.stdout
    assert result.stderr == ""


def test_without_compiled_module_or_numba_numpy_runs_with_one_warning():
    code = (
        BLOCK.format("fastmse._core") + BLOCK.format("numba") + "import warnings, numpy as np, fastmse\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    fastmse.mse(np.ones(2), np.zeros(2)); fastmse.mse(np.ones(2), np.zeros(2))\n"
        "print(len(caught), caught[0].category.__name__, fastmse._backends.current().name)\n"
        "print(caught[0].message)"
    )
    result = _run(code, FASTMSE_BACKEND="")
    assert result.returncode == 0, result.stderr
    first, message = result.stdout.splitlines()
    assert first == "1 RuntimeWarning numpy"
    assert "slow NumPy path" in message


def test_forcing_an_unavailable_backend_says_how_to_get_it():
    result = _run(BLOCK.format("fastmse._core") + REPORT, FASTMSE_BACKEND="cpp")
    assert result.returncode != 0
    assert "fastmse backend 'cpp' is unavailable" in result.stderr
    assert "pip install" in result.stderr


def test_unknown_backend_name_is_an_error():
    result = _run(REPORT, FASTMSE_BACKEND="fortran")
    assert result.returncode != 0
    assert "backend must be one of cpp, numba, numpy, not 'fortran'" in result.stderr


def test_thread_count_applies_to_backends_loaded_after_it():
    """set_num_threads before a backend's first use (the Numba backend under
    _backends.use, which loads it) is that backend's count too, not its default."""
    pytest.importorskip("numba")
    code = (
        "import fastmse; from fastmse import _backends\n"
        "fastmse.set_num_threads(1)\n"
        "with _backends.use('numba') as numba_backend: print(numba_backend.get_num_threads())\n"
        "fastmse.set_num_threads(2); print(numba_backend.get_num_threads(), fastmse.get_num_threads())"
    )
    result = _run(code, FASTMSE_BACKEND="cpp", NUMBA_NUM_THREADS="2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "2", "2"]


def test_config_reports_build_and_threads():
    config = fastmse._config.config()
    assert config["backend"] in _backends.NAMES
    assert config["threads"] == fastmse.get_num_threads() >= 1
    assert "cpp" in config["available backends"]
    assert config["compiler"]
    build = _backends.load("cpp").build
    if build["cuda"]:  # as built here: nvcc present (AUTO) or not
        minimum = _gpu.minimum_driver(build["cuda_version"])
        assert config["cuda"] == (
            f"{build['cuda_version']} for {', '.join(build['cuda_architectures'])}"
            f" (needs NVIDIA driver {minimum} or later)"
        )
        assert minimum[0].isdigit()  # a CUDA major version fastmse knows
        # No device on a CI machine: the reason is given, not an error.
        reason = _gpu.unusable_reason(_backends.load("cpp").core)
        assert config["cuda devices"] == (
            str(fastmse._core.cuda_device_count()) if reason is None else f"none usable: {reason}"
        )
        assert build["cuda_architectures"]
        assert all(a.split("-")[0].isdigit() for a in build["cuda_architectures"])
    else:
        assert config["cuda"] == "not built"
    assert fastmse.__version__ != "0+unknown"


def _cuda_core(cuda: bool = True, built: str = "13.0", devices: int = 0, driver: int = 0) -> SimpleNamespace:
    """A stand-in for fastmse._core's CUDA queries."""
    return SimpleNamespace(
        build_info=lambda: {"cuda": cuda, "cuda_version": built},
        cuda_device_count=lambda: devices,
        cuda_driver_version=lambda: driver,
    )


def test_why_the_cuda_kernels_cannot_run():
    assert _gpu.unusable_reason(_cuda_core(devices=1, driver=13000)) is None
    assert "built without the CUDA kernels" in str(_gpu.unusable_reason(_cuda_core(cuda=False)))
    assert _gpu.unusable_reason(_cuda_core()) == "no NVIDIA driver was found"
    old_driver = str(_gpu.unusable_reason(_cuda_core(driver=12080)))
    assert "supports CUDA 12.8, older than the CUDA 13.0 runtime" in old_driver
    assert "580.65.06 or later" in old_driver
    assert _gpu.unusable_reason(_cuda_core(built="12.8", driver=12080)) == "the CUDA runtime finds no device"
    assert _gpu.minimum_driver("12.8") == "525.60.13"
    with pytest.raises(ImportError, match="no NVIDIA driver"):
        _gpu.CudaBackend(_cuda_core())


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
@pytest.mark.parametrize("name", _backends.NAMES)
def test_every_backend_finishes_the_loss_it_is_asked_to(name, dtype):
    if name == "numba":
        pytest.importorskip("numba")
    assert_finishes_loss(_backends.load(name), dtype)


# (shape, weights' shape, axis) of weighted means with outputs, the weights varying along
# the summed axes (elsewhere they cancel: test_semantics.py).
WEIGHTED_MEANS = (
    ((37, 10), (37, 10), -1),  # short rows
    ((6, 4, 5), (1, 4, 5), 1),  # kept dimensions on both sides
    ((300, 7), (300, 7), 0),  # columns: summed across outputs
    ((4, 3, 2), (1, 3, 2), (1, 2)),  # several summed axes
    ((5, 3000), (1, 3000), -1),  # rows longer than a block, weights per column
    ((0, 5), (0, 1), -1),  # no outputs
)


# Numba on two dtypes: each other one compiles weighted kernels for 1-2 minutes, and its
# stores are those of test_every_backend_finishes_the_loss_it_is_asked_to.
@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        (name, dtype)
        for name in _backends.NAMES
        for dtype in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)
        if name != "numba" or dtype in (np.float16, np.float32)
    ],
)
def test_a_weighted_mean_per_output_is_its_partial_sums_divided(name, dtype):
    """The kernels finish a weighted mean per output themselves (one divisor per output):
    bit for bit the float64 sums and weight sums of partial_sums, divided and rounded
    once by finish_mean."""
    if name == "numba":
        pytest.importorskip("numba")
    from fastmse._compute import finish_mean, partial_sums

    rng = np.random.default_rng(5)
    for shape, weights_shape, axis in WEIGHTED_MEANS:
        p = rng.standard_normal(shape).astype(dtype)
        t = rng.standard_normal(shape).astype(dtype)
        w = rng.uniform(0.1, 2.0, weights_shape).astype(dtype)
        with _backends.use(name):
            loss = fastmse.mse(p, t, weights=w, axis=axis)
            part = partial_sums(p, t, w, axis)
        expected = finish_mean(part.sums, part.weight_sums, part.dtype, "mean")
        assert (loss.dtype, loss.shape) == (expected.dtype, expected.shape)
        assert loss.tobytes() == expected.tobytes(), (name, shape, axis, loss, expected)


def test_numba_compiles_no_other_copy_for_read_only_inputs_or_threads():
    """Read-only inputs and calls large enough for several threads run the kernels that
    a small call on writeable arrays compiled: each other copy would cost 10-30 s at its
    first call."""
    pytest.importorskip("numba")
    from fastmse import _numba
    from numba.core import event

    rng = np.random.default_rng(11)
    small_p, small_t = rng.random((300, 7), np.float32), rng.random((300, 7), np.float32)
    rows = _numba.PARALLEL_MIN // 7 + 1
    large_p, large_t = rng.random((rows, 7), np.float32), rng.random((rows, 7), np.float32)
    read_only = small_p.copy()
    read_only.flags.writeable = False
    with _backends.use("numba") as backend:
        threads = backend.get_num_threads()
        try:
            backend.set_num_threads(1)
            expected = (fastmse.mse(small_p, small_t, axis=-1), fastmse.mse(small_p, small_t))
            one_thread = fastmse.mse(large_p, large_t, axis=-1), fastmse.mse(large_p, large_t)
            backend.set_num_threads(2)
            with event.install_recorder("numba:compile") as compiles:
                again = (fastmse.mse(read_only, small_t, axis=-1), fastmse.mse(read_only, small_t))
                large = fastmse.mse(large_p, large_t, axis=-1), fastmse.mse(large_p, large_t)
        finally:
            backend.set_num_threads(threads)
    compiled = {record.data["dispatcher"].py_func.__name__ for _, record in compiles.buffer if record.is_start}
    # small_flat's and small_batch's copies for read-only arrays are their refusal (unfit)
    # alone, decided from the types; the workers' flags are read and set by two small
    # functions of their own.
    assert compiled <= {"small_flat", "small_batch", "unfit", "spin_until_set", "await_call"}
    np.testing.assert_array_equal(again[0], expected[0])
    assert again[1] == expected[1]
    np.testing.assert_array_equal(one_thread[0], large[0])
    assert one_thread[1] == large[1]


def test_numba_calling_range_sets_its_workers_flags():
    """The kernels' range on the calling thread sets the flags of the workers handed the
    other ranges (from compiled code, its GIL released), and no other."""
    numba = pytest.importorskip("numba")
    from fastmse import _numba

    @numba.njit
    def let_in(handed):
        _numba.let_workers_in(handed)

    flags = np.zeros(4, np.int64)
    let_in(flags[1:3])
    assert flags.tolist() == [0, 1, 1, 0]


def test_numba_workers_hand_back_a_kernels_error_and_serve_the_next_call():
    """An exception on a worker thread reaches the caller once every range has finished,
    and the workers take the next call; a call that finds them busy runs alone."""
    pytest.importorskip("numba")
    from fastmse._numba import NumbaBackend, max_threads

    if max_threads() < 2:
        pytest.skip("needs two threads (NUMBA_NUM_THREADS)")
    backend = NumbaBackend()
    backend.set_num_threads(2)
    ranges: list[tuple[int, int]] = []
    range_flags: dict[int, np.ndarray] = {}  # the flags each range was given, by its first task

    def failing_on_a_worker(flags, begin, end):
        ranges.append((begin, end))
        range_flags[begin] = flags
        if begin > 0:
            message = f"range {begin}-{end}"
            raise ValueError(message)

    with pytest.raises(ValueError, match="range 5-10"):
        backend._on_threads(failing_on_a_worker, 10, ())
    assert sorted(ranges) == [(0, 5), (5, 10)]
    # The calling thread's range gets the worker's own flag to set (let_workers_in); the worker's none.
    assert range_flags[5].size == 0
    assert range_flags[0].size == 1
    assert np.shares_memory(range_flags[0], backend._workers[0]._handed_flag)

    # Back to back (the worker still reading its flag for the next call) and after it has
    # gone to sleep: each call waits for the worker's range, which takes longer than its own.
    def slow_on_a_worker(handed, begin, end):
        handed[:] = 1  # as the kernels' let_workers_in: the worker, if still reading its flag, starts
        if begin > 0:
            time.sleep(0.002)
        ranges.append((begin, end))

    for pause in (0.0, 0.0, 0.02, 0.0, 0.02):
        time.sleep(pause)
        ranges.clear()
        backend._on_threads(slow_on_a_worker, 10, ())
        assert sorted(ranges) == [(0, 5), (5, 10)]

    ranges.clear()
    with backend._team:  # another thread's call holds the workers
        backend._on_threads(lambda handed, begin, end: ranges.append((begin, end)), 10, ())
    assert ranges == [(0, 10)]
