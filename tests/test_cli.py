"""python -m fastmse info / bench."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def _fastmse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastmse", *args], capture_output=True, text=True, check=False)


def test_info_reports_the_configuration():
    result = _fastmse("info")
    assert result.returncode == 0, result.stderr
    for key in ("fastmse:", "backend:", "threads:", "compiler:", "openmp:", "cuda:"):
        assert key in result.stdout


def test_bench_times_every_peer_and_writes_json(tmp_path):
    path = tmp_path / "figures.json"
    result = _fastmse("bench", "--size", "40000", "--repeat", "2", "--json", str(path))
    assert result.returncode == 0, result.stderr
    figures = json.loads(path.read_text())
    names = {r["name"] for r in figures["results"]}
    assert {
        "fastmse.mse(p, t)",
        "np.mean((p - t) ** 2)",
        "read ceiling (stream both inputs once)",
        "fastmse.mse_grad(p, t, out=o)",
        "fastmse.mse_and_grad(p, t, out=o)",
    } <= names
    assert all(r["median_s"] > 0 for r in figures["results"])
    assert figures["ulps"]["fastmse.mse"] <= 1.0
    assert "targets (ratios measured in this run):" in result.stdout
    assert "fastmse.mse(p, t)" in result.stdout


def test_bench_rejects_bad_arguments():
    result = _fastmse("bench", "--size", "0")
    assert result.returncode == 2
    assert "must be at least 1, not 0" in result.stderr
    assert _fastmse("evaluate").returncode == 2


def test_gpu_bench_without_a_gpu_says_why():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the GPU bench may run here")
    result = _fastmse("bench", "--device", "gpu", "--size", "1000")
    assert result.returncode == 2
    assert "fastmse bench --device gpu: fastmse computes GPU arrays with CuPy, which is not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_shapes_reports_every_family():
    result = _fastmse("bench", "--shapes", "--size", "65536", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    for family in (
        "flat 2**16",
        "flat 2**16 float64",
        "(65536, 1) axis=-1",
        "(6553, 10) axis=-1",
        "(4096, 16) axis=0",
        "weights per sample",
        "weights per position",
        "(6553, 10) weights per position",
        "(256, 10) axis=-1",
        "(256, 10) weights per sample",
        "(6553, 10) a target per column",
        "(256, 10) a target per column",
        "float64",
    ):
        assert family in result.stdout, family
    rows = [line for line in result.stdout.splitlines() if line.split(" ")[0].startswith(("(", "flat"))]
    # Every family times all three calls.
    assert rows
    assert len(rows) % 3 == 0
    for call in ("mse ", "mse_grad(out=)", "mse_and_grad(out=)"):
        assert sum(call in line for line in rows) == len(rows) // 3


@pytest.mark.parametrize("option", [["--device", "gpu"], ["--dtype", "float64"], ["--json", "figures.json"]])
def test_bench_shapes_refuses_options_it_does_not_take(option):
    result = _fastmse("bench", "--shapes", *option)
    assert result.returncode == 2
    assert "--shapes" in result.stderr
    assert option[1] in result.stderr
