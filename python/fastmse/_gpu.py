"""GPU arrays: recognising them, taking them as CuPy arrays, and the two GPU backends.

Any array whose memory is on a CUDA device is computed where it is: CuPy arrays, objects
with ``__cuda_array_interface__`` (Numba device arrays, PyTorch CUDA tensors) and DLPack
tensors on a CUDA device are viewed as CuPy arrays without a copy, and results are CuPy
arrays on that device. Nothing here copies between host and device.

Backends, chosen by :func:`backend`: :class:`CudaBackend` runs the hand-written kernels
of ``cuda/`` when fastmse._core was built with them; :class:`CupyBackend` runs the same
passes as CuPy kernels otherwise. Both take the :class:`fastmse._plan.Plan` the CPU
backends take, with CuPy arrays in it.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from ._plan import Plan, kept_divisor, per_output

# Host values that may join GPU arrays: they become 0-d device arrays (a few bytes).
_SCALARS = (int, float, np.generic)
_KDL_CUDA, _KDL_CUDA_MANAGED = 2, 13  # DLPack device types whose memory a CUDA kernel can read
# The five passes; fastmse._core names their CUDA entry points cuda_<pass>.
_PASSES = ("reduce", "grad", "reduce_and_grad", "squared_error", "reduce_difference")


def is_gpu_array(value: Any) -> bool:
    """Whether `value` lives in CUDA device memory (checked without importing CuPy)."""
    if type(value).__module__.split(".")[0] == "cupy" and hasattr(value, "device"):
        return True
    if _has_cuda_interface(value):
        return True
    dlpack_device = getattr(value, "__dlpack_device__", None)
    if dlpack_device is None or isinstance(value, np.ndarray):
        return False
    try:
        kind = dlpack_device()[0]
    except Exception:  # noqa: BLE001 - a producer that cannot say is not a GPU array here
        return False
    return int(kind) in (_KDL_CUDA, _KDL_CUDA_MANAGED)


def _has_cuda_interface(value: Any) -> bool:
    """Whether `value` exports ``__cuda_array_interface__``. PyTorch defines it on every
    tensor and raises AttributeError for CPU ones; a CUDA tensor that requires grad raises
    RuntimeError, and is a GPU array all the same (as_cupy then says why it cannot be read)."""
    try:
        return hasattr(value, "__cuda_array_interface__")
    except Exception:  # noqa: BLE001
        return True


def cupy() -> ModuleType:
    """The cupy module, or a TypeError saying how to install it."""
    try:
        return importlib.import_module("cupy")
    except ImportError as error:
        msg = (
            "fastmse computes GPU arrays with CuPy, which is not installed: "
            "pip install 'fastmse[cuda12]' (or [cuda13]). fastmse never copies GPU data to the host."
        )
        raise TypeError(msg) from error


def as_cupy(value: Any, name: str) -> Any:
    """`value` (a GPU array) as a CuPy array viewing the same memory."""
    cp = cupy()
    if isinstance(value, cp.ndarray):
        return value
    try:
        if _has_cuda_interface(value):
            return cp.asarray(value)  # zero-copy; synchronises on the stream the producer names
        return cp.from_dlpack(value)
    except Exception as error:
        msg = f"{name} ({type(value).__module__}.{type(value).__name__}) could not be viewed as a CuPy array: {error}"
        raise TypeError(msg) from error


def device_arrays(named: list[tuple[str, Any]]) -> tuple[list[Any], Any, Any]:
    """The operands of a call with at least one GPU array, as CuPy arrays on one device.

    `named` holds (argument name, value) pairs; None values stay None, Python and NumPy
    scalars become 0-d arrays on the device. Returns the arrays, the CuPy Device and the
    producer's stream (:func:`producer_stream`; None where none is known).

    Raises
    ------
    TypeError
        A NumPy (or other host) array among GPU arrays.
    ValueError
        GPU arrays on different devices.
    """
    host = [
        name
        for name, value in named
        if value is not None and not isinstance(value, _SCALARS) and not is_gpu_array(value)
    ]
    if host:
        gpu = [name for name, value in named if value is not None and is_gpu_array(value)]
        msg = (
            f"{' and '.join(gpu)} {'is a GPU array' if len(gpu) == 1 else 'are GPU arrays'} but "
            f"{' and '.join(host)} {'is' if len(host) == 1 else 'are'} not: fastmse does not copy "
            "between host and device; move them to one place first"
        )
        raise TypeError(msg)
    cp = cupy()
    arrays: list[Any] = [
        None if value is None or isinstance(value, _SCALARS) else as_cupy(value, name) for name, value in named
    ]
    devices = {(name, array.device.id) for (name, _), array in zip(named, arrays, strict=True) if array is not None}
    ids = sorted({device for _, device in devices})
    if len(ids) > 1:
        listed = ", ".join(f"{name} on GPU {device}" for name, device in sorted(devices, key=lambda item: item[1]))
        msg = f"the arrays of one call must be on one GPU: {listed}"
        raise ValueError(msg)
    device = cp.cuda.Device(ids[0])
    stream = producer_stream([value for _, value in named], device.id)
    with placed(device, stream):
        for k, (_, value) in enumerate(named):
            if isinstance(value, _SCALARS):
                arrays[k] = cp.asarray(value)
    return arrays, device, stream


def producer_stream(values: list[Any], device_id: int) -> Any:
    """The stream that the producer of `values` queues its work on, as a CuPy stream, where
    one is known: PyTorch's current stream on the device for its tensors (PyTorch's
    ``__cuda_array_interface__`` names none), the ``stream`` of a version 3
    ``__cuda_array_interface__``. None otherwise: fastmse then runs on CuPy's current
    stream, and work queued on another stream must be finished, or ordered, by the caller."""
    cp = cupy()
    for value in values:
        if value is None or isinstance(value, cp.ndarray):
            continue
        if type(value).__module__.split(".")[0] == "torch":
            torch = sys.modules["torch"]
            return cp.cuda.ExternalStream(int(torch.cuda.current_stream(device_id).cuda_stream), device_id)
        interface: Any = None
        with contextlib.suppress(Exception):  # a producer that cannot say names no stream
            interface = getattr(value, "__cuda_array_interface__", None)
        stream = interface.get("stream") if isinstance(interface, dict) else None
        if stream:  # 1 and 2: the legacy and per-thread default streams, as CUDA numbers them
            return cp.cuda.ExternalStream(int(stream), device_id)
    return None


@contextlib.contextmanager
def placed(device: Any, stream: Any) -> Iterator[None]:
    """Makes `device` (a CuPy Device) current and, where given, `stream` (a CuPy stream)."""
    with device, stream if stream is not None else contextlib.nullcontext():
        yield


def array_module(value: Any) -> ModuleType:
    """NumPy for host values, CuPy for GPU arrays."""
    return cupy() if is_gpu_array(value) else np


def current_device_of(array: Any) -> contextlib.AbstractContextManager[Any]:
    """A context that makes the GPU holding `array` (a CuPy array) current, as CuPy computes
    on the current device; for a host value, one that does nothing."""
    return array.device if is_gpu_array(array) else contextlib.nullcontext()


def address(array: Any) -> int:
    """The device address of `array`'s first element."""
    return int(array.data.ptr)


class DeviceMemory(Protocol):
    """Where :class:`CudaBackend`'s operands live: the device of an array, its address,
    the stream to queue on and scratch memory. :class:`CupyMemory` for GPU arrays; the
    tests give host memory to the same backend for the host-executed kernels
    (fastmse._cuda_host)."""

    def device(self, array: Any) -> int: ...
    def address(self, array: Any) -> int: ...
    def stream(self) -> int: ...
    def scratch(self, nbytes: int) -> Any: ...
    def mark(self) -> Any: ...
    def seconds(self, start: Any, end: Any) -> float: ...


class CupyMemory:
    """CuPy arrays: their device and address, CuPy's current stream, CuPy's memory pool."""

    def __init__(self) -> None:
        self._cp = cupy()

    def device(self, array: Any) -> int:
        return int(array.device.id)

    def address(self, array: Any) -> int:
        return address(array)

    def stream(self) -> int:
        return int(self._cp.cuda.get_current_stream().ptr)

    def scratch(self, nbytes: int) -> Any:
        # Back in CuPy's pool when freed, safely: the pool orders reuse by stream.
        return self._cp.empty(nbytes, np.uint8)

    def mark(self) -> Any:
        """An event recorded on the current stream now."""
        event = self._cp.cuda.Event()
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        """Device time between two marks (waits for the second)."""
        end.synchronize()
        return float(self._cp.cuda.get_elapsed_time(start, end)) / 1e3


# The oldest Linux driver each CUDA major version's runtime runs on (NVIDIA's CUDA
# compatibility table): the static runtime in fastmse._core needs at least this.
_MINIMUM_DRIVERS = {12: "525.60.13", 13: "580.65.06"}


def minimum_driver(cuda_version: str) -> str:
    """The oldest NVIDIA driver (Linux) that runs kernels built with CUDA `cuda_version`."""
    major = int(cuda_version.split(".")[0])
    return _MINIMUM_DRIVERS.get(major, f"one for CUDA {major}")


def unusable_reason(core: ModuleType) -> str | None:
    """Why the CUDA kernels of `core` cannot run here (None where they can): not built,
    no driver, a driver older than the CUDA runtime they were built with, or no device."""
    build = core.build_info()
    if not build["cuda"]:
        return "fastmse._core was built without the CUDA kernels"
    if core.cuda_device_count() > 0:
        return None
    driver = int(core.cuda_driver_version())
    if driver == 0:
        return "no NVIDIA driver was found"
    built = build["cuda_version"]
    have = f"{driver // 1000}.{driver % 1000 // 10}"
    if [int(part) for part in have.split(".")] < [int(part) for part in built.split(".")]:
        return (
            f"the NVIDIA driver supports CUDA {have}, older than the CUDA {built} runtime fastmse's "
            f"kernels were built with (they need driver {minimum_driver(built)} or later): update the "
            "driver, or build fastmse with an older CUDA toolkit"
        )
    return "the CUDA runtime finds no device"


class CudaBackend:
    """The hand-written CUDA kernels of `core` (fastmse._core), queued on `memory`'s
    stream (CuPy's current one by default)."""

    name = "cuda"
    rows_first = False

    def __init__(self, core: ModuleType, memory: DeviceMemory | None = None) -> None:
        reason = unusable_reason(core)
        if reason is not None:
            raise ImportError(reason)
        self._core = core
        self._memory: DeviceMemory = CupyMemory() if memory is None else memory
        # The kernels' dtype codes and dimension limit, as the module defines them.
        self._dtype_codes: dict[str, int] = dict(core.scalar_types)  # by dtype name (bfloat16 needs ml_dtypes)
        self._max_dims = int(core.cuda_max_dims)
        self._entries = {name: getattr(core, f"cuda_{name}") for name in _PASSES}
        self._fallback: CupyBackend | None = None
        self._runs_on: dict[int, bool] = {}  # device -> whether the compiled code runs there
        self._marks: list[tuple[Any, Any]] | None = None  # around each launch, while timing_launches

    @contextlib.contextmanager
    def timing_launches(self) -> Iterator[list[float]]:
        """Times the kernels on the device, not the Python before them: within the block,
        each call's launches are bracketed by marks on the stream (CUDA events); the list
        yielded receives the seconds of each call's launches as the block ends."""
        marks: list[tuple[Any, Any]] = []
        seconds: list[float] = []
        self._marks = marks
        try:
            yield seconds
        finally:
            self._marks = None
            seconds.extend(self._memory.seconds(start, end) for start, end in marks)

    def _run(self, kernel: str, plan: Plan) -> None:
        memory = self._memory
        device = memory.device(plan.operands.predictions)
        if device not in self._runs_on:
            self._runs_on[device] = bool(self._core.cuda_can_run(device))
        # Dimensions that no merging could join, or a GPU this build has no code for.
        if len(plan.shape) > self._max_dims or not self._runs_on[device]:
            if self._fallback is None:
                self._fallback = CupyBackend()
            getattr(self._fallback, kernel)(plan)
            return
        codes = self._dtype_codes
        operands = [None if a is None else (memory.address(a), codes[a.dtype.name]) for a in plan.operands]
        divisor = plan.loss_divisor
        if per_output(divisor):
            divisor = (memory.address(divisor), codes["float64"])
        # Scratch for the outputs' partial sums.
        size = (
            self._core.cuda_workspace_bytes(plan.shape, plan.n_kept, plan.strides) if kernel.startswith("reduce") else 0
        )
        workspace = memory.scratch(size) if size else None
        marks = self._marks
        start = None if marks is None else memory.mark()
        self._entries[kernel](
            plan.shape,
            plan.n_kept,
            operands,
            plan.strides,
            divisor,
            0 if workspace is None else memory.address(workspace),
            device,
            memory.stream(),
        )
        if marks is not None:
            marks.append((start, memory.mark()))

    def reduce(self, plan: Plan) -> None:
        self._run("reduce", plan)

    def grad(self, plan: Plan) -> None:
        self._run("grad", plan)

    def reduce_and_grad(self, plan: Plan) -> None:
        self._run("reduce_and_grad", plan)

    def squared_error(self, plan: Plan) -> None:
        self._run("squared_error", plan)

    def reduce_difference(self, plan: Plan) -> None:
        self._run("reduce_difference", plan)


# The arithmetic of a position, as in the C++ and CUDA kernels: d = p - t in float64;
# loss term (w * d) * d; gradient (scale * w) * d; difference term w * d.
_DIFFERENCE = "const double d = (double)p - (double)t;"


class CupyBackend:
    """The same passes as CuPy kernels, for builds without the CUDA kernels: float64
    sums, one rounding to the result dtype (float16 results pass through float32, so
    they may differ from the CUDA kernels' by one rounding). The fused pass is two."""

    name = "cupy"
    rows_first = False

    def __init__(self) -> None:
        cp = self._cp = cupy()
        no_fma = {"options": ("--fmad=false",)}  # the CPU kernels' arithmetic: no contraction
        self._reduce_kernel = cp.ReductionKernel(
            "T p, T t, W w",
            "float64 s",
            "((double)w * ((double)p - (double)t)) * ((double)p - (double)t)",
            "a + b",
            "s = a",
            "0",
            "fastmse_reduce",
            reduce_type="double",
            **no_fma,
        )
        self._reduce_difference_kernel = cp.ReductionKernel(
            "T p, T t, W w",
            "float64 s",
            "(double)w * ((double)p - (double)t)",
            "a + b",
            "s = a",
            "0",
            "fastmse_reduce_difference",
            reduce_type="double",
            **no_fma,
        )
        self._grad_kernel = cp.ElementwiseKernel(
            "T p, T t, W w, float64 scale",
            "T out",
            _DIFFERENCE + " out = (T)(double)((scale * (double)w) * d);",
            "fastmse_grad",
            **no_fma,
        )
        self._squared_error_kernel = cp.ElementwiseKernel(
            "T p, T t, W w",
            "T out",
            _DIFFERENCE + " out = (T)(double)(((double)w * d) * d);",
            "fastmse_squared_error",
            **no_fma,
        )

    def _views(self, plan: Plan) -> list[Any]:
        """Each operand as a view of the plan's shape (zero strides where broadcast);
        loss and scale over the kept dimensions only. Absent weights are a float64 one."""
        as_strided = self._cp.lib.stride_tricks.as_strided
        views: list[Any] = []
        for k, (array, strides) in enumerate(zip(plan.operands, plan.strides, strict=True)):
            if array is None:
                views.append(self._cp.ones((), np.float64) if k == 2 else None)
                continue
            dims = plan.n_kept if k >= 4 else len(plan.shape)
            views.append(as_strided(array, plan.shape[:dims], tuple(s * array.itemsize for s in strides[:dims])))
        return views

    def _summed_axes(self, plan: Plan) -> tuple[int, ...]:
        return tuple(range(plan.n_kept, len(plan.shape)))

    def reduce(self, plan: Plan) -> None:
        p, t, w, _, loss, _ = self._views(plan)
        self._store_loss(plan, loss, self._reduce_kernel(p, t, w, axis=self._summed_axes(plan)))

    def reduce_difference(self, plan: Plan) -> None:
        p, t, w, _, loss, _ = self._views(plan)
        self._store_loss(plan, loss, self._reduce_difference_kernel(p, t, w, axis=self._summed_axes(plan)))

    def _store_loss(self, plan: Plan, loss: Any, sums: Any) -> None:
        # Divided in float64, then rounded once to the loss's dtype by the assignment.
        divisor = kept_divisor(plan, self._cp.lib.stride_tricks.as_strided)
        loss[...] = sums if isinstance(divisor, float) and divisor == 1.0 else sums / divisor

    def grad(self, plan: Plan) -> None:
        p, t, w, out, _, scale = self._views(plan)
        scale = scale.reshape(scale.shape + (1,) * (len(plan.shape) - plan.n_kept))
        self._grad_kernel(p, t, w, scale, out)

    def reduce_and_grad(self, plan: Plan) -> None:
        self.reduce(plan)  # first: the gradient may overwrite an input (out=predictions)
        self.grad(plan)

    def squared_error(self, plan: Plan) -> None:
        p, t, w, out, _, _ = self._views(plan)
        self._squared_error_kernel(p, t, w, out)


def backend(core: ModuleType | None) -> CudaBackend | CupyBackend:
    """The compiled CUDA kernels where `core` has them and a device answers, else CuPy's."""
    if core is not None:
        with contextlib.suppress(ImportError):
            return CudaBackend(core)
    return CupyBackend()
