"""The compiled OpenMP C++ kernels (cpp/), reached through fastmse._core."""

from __future__ import annotations

import os
import warnings
from types import ModuleType

from ._plan import Plan


class NativeBackend:
    """Runs each pass in fastmse._core with the GIL released."""

    name = "cpp"
    rows_first = True

    def __init__(self, core: ModuleType) -> None:
        self._core = core
        self.core = core  # the module, for what reports on the build (show_config)
        self.build = core.build_info()
        self._reduce = core.reduce  # looked up once: small calls count
        self.small_call = core.small_call
        # The module holds its kernels once per instruction set and runs the most capable
        # one the CPU has; FASTMSE_ISA=baseline (or avx2) picks one, for tests and timing.
        requested = os.environ.get("FASTMSE_ISA", "").strip().lower()
        if requested and not core.set_isa(requested):
            warnings.warn(
                f"FASTMSE_ISA={requested!r} ignored: this build and CPU run "
                f"{', '.join(core.runnable_isas())}; using {core.isa()!r}",
                RuntimeWarning,
                stacklevel=2,
            )

    @property
    def isa(self) -> str:
        """Instruction set of the kernel copy that runs."""
        return str(self._core.isa())

    @property
    def runnable_isas(self) -> list[str]:
        """Instruction sets of the kernel copies this CPU runs, least capable first."""
        return list(self._core.runnable_isas())

    def reduce(self, plan: Plan) -> None:
        self._reduce(plan.shape, plan.n_kept, plan.operands, plan.strides, plan.loss_divisor, plan.rows_first)

    def grad(self, plan: Plan) -> None:
        self._core.grad(plan.shape, plan.n_kept, plan.operands, plan.strides, plan.loss_divisor, plan.rows_first)

    def reduce_and_grad(self, plan: Plan) -> None:
        self._core.reduce_and_grad(
            plan.shape, plan.n_kept, plan.operands, plan.strides, plan.loss_divisor, plan.rows_first
        )

    def squared_error(self, plan: Plan) -> None:
        self._core.squared_error(
            plan.shape, plan.n_kept, plan.operands, plan.strides, plan.loss_divisor, plan.rows_first
        )

    def reduce_difference(self, plan: Plan) -> None:
        self._core.reduce_difference(
            plan.shape, plan.n_kept, plan.operands, plan.strides, plan.loss_divisor, plan.rows_first
        )

    def get_num_threads(self) -> int:
        return int(self._core.get_num_threads())

    def set_num_threads(self, n: int) -> None:
        self._core.set_num_threads(n)
