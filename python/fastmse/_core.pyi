from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

import numpy as np

_Arrays: TypeAlias = Sequence[np.ndarray | None]
_Strides: TypeAlias = Sequence[Sequence[int]]
_DeviceOperands: TypeAlias = Sequence[tuple[int, int] | None]  # (device pointer, a code of scalar_types)

class _HostPass(Protocol):
    def __call__(
        self,
        shape: Sequence[int],
        n_kept: int,
        arrays: _Arrays,
        strides: _Strides,
        loss_divisor: float | np.ndarray,  # or float64 laid out as the loss: one per output
        rows_first: bool,  # Plan.rows_first (a reducing pass over everything)
        /,
    ) -> None: ...

class _DevicePass(Protocol):
    def __call__(
        self,
        shape: Sequence[int],
        n_kept: int,
        operands: _DeviceOperands,
        strides: _Strides,
        loss_divisor: float | tuple[int, int],  # or a float64 operand laid out as the loss
        workspace: int,
        device: int,
        stream: int,
        /,
    ) -> None: ...

reduce: _HostPass
grad: _HostPass
reduce_and_grad: _HostPass
squared_error: _HostPass
reduce_difference: _HostPass
scalar_types: dict[str, int]  # dtype name -> the code a GPU operand carries

def isa() -> str: ...
def set_isa(name: str) -> bool: ...
def runnable_isas() -> list[str]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_parallel_asleep_min(positions: int) -> int: ...
def build_info() -> dict[str, Any]: ...
def stream_read(array: np.ndarray) -> int: ...

# Present only in builds with the CUDA kernels (build_info()["cuda"]).
cuda_reduce: _DevicePass
cuda_grad: _DevicePass
cuda_reduce_and_grad: _DevicePass
cuda_squared_error: _DevicePass
cuda_reduce_difference: _DevicePass
cuda_max_dims: int

def cuda_stream_read(data: int, bytes: int, sink: int, device: int, stream: int) -> None: ...
def cuda_device_count() -> int: ...
def cuda_driver_version() -> int: ...
def cuda_can_run(device: int) -> bool: ...
def cuda_workspace_bytes(shape: Sequence[int], n_kept: int, strides: Sequence[Sequence[int]]) -> int: ...
