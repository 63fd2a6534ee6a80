"""The compiled OpenMP C++ kernels (cpp/), reached through fastmse._core."""

from __future__ import annotations

from types import ModuleType

from ._plan import Plan


class NativeBackend:
    """Runs each pass in fastmse._core with the GIL released."""

    name = "cpp"

    def __init__(self, core: ModuleType) -> None:
        self._core = core
        self.build = core.build_info()
        self._sum_squared_error = core.sum_squared_error  # looked up once: small calls count

    def reduce(self, plan: Plan) -> None:
        self._sum_squared_error(plan.shape, plan.n_kept, plan.arrays, plan.strides)

    def grad(self, plan: Plan) -> None:
        self._core.scaled_difference(plan.shape, plan.n_kept, plan.arrays, plan.strides)

    def reduce_and_grad(self, plan: Plan) -> None:
        self._core.sum_squared_error_and_scaled_difference(
            plan.shape, plan.n_kept, plan.arrays, plan.strides
        )

    def squared_error(self, plan: Plan) -> None:
        self._core.squared_error(plan.shape, plan.n_kept, plan.arrays, plan.strides)

    def reduce_difference(self, plan: Plan) -> None:
        self._core.sum_difference(plan.shape, plan.n_kept, plan.arrays, plan.strides)

    def get_num_threads(self) -> int:
        return int(self._core.get_num_threads())

    def set_num_threads(self, n: int) -> None:
        self._core.set_num_threads(n)
