"""Memory and concurrency: no O(n) temporaries, and calls from many threads at once give
the results one thread gives."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from fastmse import mse, mse_and_grad, mse_grad

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/self/status")
def test_mse_on_512_mib_of_inputs_raises_peak_memory_by_less_than_1_mib():
    assert _peak_growth_kib("fastmse") < 1024
    # The measurement sees temporaries: NumPy's expression makes one of 256 MiB (and
    # reuses it for the square).
    assert _peak_growth_kib("numpy") > 200 * 1024


def test_eight_threads_of_mixed_calls_give_one_threads_results():
    rng = np.random.default_rng(8)
    cases = []
    for k, dtype in enumerate([np.float16, np.float32, np.float64] * 4):
        shape = (int(rng.integers(1, 300)), int(rng.integers(1, 700)))
        p = rng.standard_normal(shape).astype(dtype)
        t = rng.standard_normal(shape[-1:]).astype(dtype)  # broadcast along axis 0
        w = rng.uniform(0.5, 1.5, shape).astype(dtype) if k % 2 else None
        cases.append((p, t, {"weights": w, "axis": (None, -1, 0)[k % 3]}))
    expected = [(mse(p, t, **kw), mse_grad(p, t, **kw), mse_and_grad(p, t, **kw)) for p, t, kw in cases]
    failures: list[str] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        order = np.random.default_rng(seed).permutation(len(cases) * 20) % len(cases)
        start.wait()
        for i in order:
            p, t, kw = cases[i]
            loss, grad, (fused_loss, fused_grad) = mse(p, t, **kw), mse_grad(p, t, **kw), mse_and_grad(p, t, **kw)
            want = expected[i]
            same = (
                np.array_equal(loss, want[0])
                and np.array_equal(grad, want[1])
                and np.array_equal(fused_loss, want[2][0])
                and np.array_equal(fused_grad, want[2][1])
            )
            if not same:
                failures.append(f"case {i} differs in thread {seed}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:5]

