"""fastmse in the processes users make: a child forked after a parallel call in the parent
(a multiprocessing pool, a bare os.fork, a child that forks again) computes at once and
gives the parent's bits, on the compiled and the Numba backends. Each case runs in a
fresh interpreter with a timeout, so a hang fails the test instead of the run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import BACKENDS

# Imported by the parent script and by every worker, whatever the start method.
WORKER = '''
import numpy as np
import fastmse

def arrays(seed):
    rng = np.random.default_rng(seed)
    # Past the sizes from which the kernels run on several threads (C++ 2**18 positions
    # with its team asleep, Numba 2**20).
    p = rng.standard_normal((1 << 19, 3)).astype(np.float32)
    t = rng.standard_normal((1 << 19, 3)).astype(np.float32)
    return p, t

def results(seed):
    """Bytes of a loss, a per-row loss and a gradient: compared bitwise across processes."""
    p, t = arrays(seed)
    loss, grad = fastmse.mse_and_grad(p, t)
    rows = fastmse.mse(p, t, axis=-1)
    return np.asarray(loss).tobytes() + rows.tobytes() + grad.tobytes()

def in_child(seed):
    import os
    from fastmse import _backends
    return os.getpid(), results(seed), _backends.current().name
'''

PARENT = """
import multiprocessing, os, sys
import fastmse
from fastmse import _backends
from forkwork import results, in_child

seen = []

def check(got, seed, where):
    seen.append((got, seed, where))

def main(backend, order):
    assert _backends.current().name == backend  # FASTMSE_BACKEND, as users choose it
    fastmse.set_num_threads(2)
    if order == "parallel":  # parallel calls in the parent before any fork
        expected = {{seed: results(seed) for seed in range(3)}}
{body}
    if order != "parallel":  # the parent's own calls come after its children's
        expected = {{seed: results(seed) for seed in range(3)}}
    assert seen
    for got, seed, where in seen:
        assert got == expected[seed], f"{{where}}: result differs from the parent's"
    print("ok")

if __name__ == "__main__":  # forkserver and spawn workers import this file
    main(*sys.argv[1:])
"""

CASES = {
    "pool-fork": """
with multiprocessing.get_context("fork").Pool(4) as pool:
    for seed, (pid, got, name) in zip([0, 1, 2, 0, 1, 2, 0, 1], pool.map(in_child, [0, 1, 2, 0, 1, 2, 0, 1])):
        assert pid != os.getpid() and name == backend
        check(got, seed, "fork pool worker")
""",
    "os-fork": """
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    try:
        data = results(1)
        fastmse.set_num_threads(1)  # the thread settings keep working in the child
        assert fastmse.get_num_threads() == 1
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1):
            assert results(1) == data
        with os.fdopen(write, "wb") as pipe:
            pipe.write(data)
        os._exit(0)
    except BaseException as error:
        print("child failed:", repr(error), file=sys.stderr)
        os._exit(1)
os.close(write)
with os.fdopen(read, "rb") as pipe:
    got = pipe.read()
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, f"child exited with {status}"
check(got, 1, "os.fork child")
""",
    "fork-twice": """
def grandchild(queue):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        queue.put(pool.map(in_child, [2, 0]))

context = multiprocessing.get_context("fork")
queue = context.Queue()
child = context.Process(target=grandchild, args=(queue,))
child.start()
got = queue.get(timeout=120)
child.join()
assert child.exitcode == 0, child.exitcode
for seed, (_, data, _) in zip([2, 0], got):
    check(data, seed, "child of a forked child")
""",
    "pool-forkserver": """
with multiprocessing.get_context("forkserver").Pool(2) as pool:
    for seed, (_, got, _) in zip([0, 2], pool.map(in_child, [0, 2])):
        check(got, seed, "forkserver worker")
""",
    "pool-spawn": """
with multiprocessing.get_context("spawn").Pool(2) as pool:
    for seed, (_, got, _) in zip([1, 2], pool.map(in_child, [1, 2])):
        check(got, seed, "spawn worker")
""",
}

HOST_BACKENDS = [p for p in BACKENDS if p.id in ("cpp", "numba")]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="fork with threads is a POSIX matter; tested on Linux")
@pytest.mark.parametrize("order", ["parallel", "idle"], ids=["after-a-parallel-call", "parent-idle"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_children_compute_the_parents_bits(tmp_path, backend, case, order):
    (tmp_path / "forkwork.py").write_text(textwrap.dedent(WORKER))
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(body=textwrap.indent(textwrap.dedent(CASES[case]), "    ")))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FASTMSE_BACKEND": backend}
    try:
        result = subprocess.run(
            [sys.executable, str(script), backend, order],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{case} on {backend} hung (no result in {error.timeout} s)")
    assert result.returncode == 0, f"{case} on {backend}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip().endswith("ok")
