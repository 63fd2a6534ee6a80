from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

import numpy as np

_Arrays: TypeAlias = Sequence[np.ndarray | None]
_Strides: TypeAlias = Sequence[Sequence[int]]
_DeviceOperands: TypeAlias = Sequence[tuple[int, int] | None]  # (device pointer, dtype code 0/1/2)

class _HostPass(Protocol):
    def __call__(self, shape: Sequence[int], n_kept: int, arrays: _Arrays, strides: _Strides, /) -> None: ...

class _DevicePass(Protocol):
    def __call__(
        self,
        shape: Sequence[int],
        n_kept: int,
        operands: _DeviceOperands,
        strides: _Strides,
        workspace: int,
        device: int,
        stream: int,
        /,
    ) -> None: ...

sum_squared_error: _HostPass
scaled_difference: _HostPass
sum_squared_error_and_scaled_difference: _HostPass
squared_error: _HostPass
sum_difference: _HostPass

def isa() -> str: ...
def set_isa(name: str) -> bool: ...
def runnable_isas() -> list[str]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def build_info() -> dict[str, Any]: ...
def stream_read(array: np.ndarray) -> int: ...

# Present only in builds with the CUDA kernels (build_info()["cuda"]).
cuda_sum_squared_error: _DevicePass
cuda_scaled_difference: _DevicePass
cuda_sum_squared_error_and_scaled_difference: _DevicePass
cuda_squared_error: _DevicePass
cuda_sum_difference: _DevicePass

def cuda_stream_read(data: int, bytes: int, sink: int, device: int, stream: int) -> None: ...
def cuda_device_count() -> int: ...
def cuda_can_run(device: int) -> bool: ...
def cuda_workspace_bytes(shape: Sequence[int], n_kept: int) -> int: ...
