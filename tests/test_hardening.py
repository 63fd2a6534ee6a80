"""Memory: no O(n) temporaries. (Calls from many threads at once: test_determinism.py.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Peak resident memory (VmHWM, KiB) around one call on 2 x 256 MiB inputs, in a fresh
# process. Not ru_maxrss: Linux carries into it the peak of the process that forked
# (pytest's, which may be larger than all of this), so it may not move at all.
_PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from fastmse import mse

    def peak_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    n = 64 * 2**20  # float32: 256 MiB per input
    p = np.full(n, 1.5, np.float32)
    t = np.full(n, 0.5, np.float32)
    expression = sys.argv[1]
    (mse(p[:10], t[:10]), np.mean((p[:10] - t[:10]) ** 2))  # imports and first-call costs
    before = peak_kib()
    value = float(mse(p, t)) if expression == "fastmse" else float(np.mean((p - t) ** 2))
    after = peak_kib()
    assert value == 1.0, value
    print(after - before)
    """
)


def _peak_growth_kib(expression: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, expression], capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip())


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/self/status")
def test_mse_on_512_mib_of_inputs_raises_peak_memory_by_less_than_4_mib():
    # Far below any O(n) temporary (64 MiB even for one byte per two elements). The OpenMP
    # team's stacks and the allocator's pages vary between runs: 60-136 KiB mostly, 1032
    # KiB in a few runs in a row on the 2-core VM.
    assert _peak_growth_kib("fastmse") < 4 * 1024
    # The measurement sees temporaries: NumPy's expression makes one of 256 MiB (and
    # reuses it for the square).
    assert _peak_growth_kib("numpy") > 200 * 1024
