"""python -m fastmse eval: files on disk, streamed, equal to the in-memory call."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from checks import assert_matches
from fastmse import _eval, mse


def _eval_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastmse", "eval", *map(str, args)], capture_output=True, text=True, check=False
    )


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(7)
    p = rng.standard_normal((3000, 4)).astype(np.float32)
    t = rng.standard_normal((3000, 4)).astype(np.float32)
    w = rng.uniform(0.1, 1.0, (3000, 4))
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "w_columns.npy", w[0])
    np.save(tmp_path / "p_fortran.npy", np.asfortranarray(p))
    np.savez(tmp_path / "both.npz", p=p, t=t)
    np.savez_compressed(tmp_path / "t_only.npz", t)
    return tmp_path, p, t, w


@pytest.mark.parametrize("slab_bytes", [64, 4096, 1 << 24])
@pytest.mark.parametrize(
    ("pred", "targ", "extra", "kwargs"),
    [
        ("p.npy", "t.npy", [], {}),
        ("both.npz:p", "both.npz:t", [], {}),
        ("p_fortran.npy", "t_only.npz", [], {}),
        ("p.npy", "t.npy", ["--axis", "0"], {"axis": 0}),
        ("p.npy", "t.npy", ["--axis", "1"], {"axis": 1}),
        ("p.npy", "t.npy", ["--axis", "0", "--axis", "1", "--reduction", "sum"], {"axis": (0, 1), "reduction": "sum"}),
        ("p.npy", "t.npy", ["--weights", "w.npy"], {"weights": "w"}),
        ("p.npy", "t.npy", ["--weights", "w_columns.npy", "--axis", "0"], {"weights": "w0", "axis": 0}),
    ],
)
def test_eval_equals_the_in_memory_call(arrays, monkeypatch, slab_bytes, pred, targ, extra, kwargs):
    directory, p, t, w = arrays
    monkeypatch.setattr(_eval, "SLAB_BYTES", slab_bytes)
    kwargs = dict(kwargs)
    if "weights" in kwargs:
        kwargs["weights"] = w if kwargs["weights"] == "w" else w[0]
    expected = mse(p, t, **kwargs)
    weights = None
    if "--weights" in extra:
        weights = str(directory / extra[extra.index("--weights") + 1])
    axis = tuple(int(extra[i + 1]) for i, a in enumerate(extra) if a == "--axis") or None
    reduction = extra[extra.index("--reduction") + 1] if "--reduction" in extra else "mean"
    result, info = _eval.evaluate(
        str(directory / pred), str(directory / targ), weights=weights, axis=axis, reduction=reduction, progress=False
    )
    assert_matches(result, np.asarray(expected, np.float64), np.float32)
    assert info["shape"] == [3000, 4]


def test_eval_cli_prints_json(arrays):
    directory, p, t, _ = arrays
    result = _eval_cli(directory / "p.npy", directory / "t.npy", "--axis", "0", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["dtype"] == "float32"
    np.testing.assert_array_equal(np.float32(printed["loss"]), mse(p, t, axis=0))
    plain = _eval_cli(directory / "p.npy", directory / "t.npy")
    assert plain.returncode == 0
    assert float(plain.stdout) == pytest.approx(float(mse(p, t)), rel=1e-7)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.npy", "t.npy"], "PRED file not found"),
        (["p.npy", "w_columns.npy"], "PRED has shape (3000, 4) and TARGET (4,)"),
        (["both.npz", "t.npy"], "name one as"),
        (["both.npz:q", "t.npy"], "no member 'q'"),
        (["p.npy", "t.npy", "--axis", "2"], "axis 2 is out of bounds"),
        (["p.npy", "t.npy", "--weights", "bad.npy"], "WEIGHTS"),
        (["p.npy", "text.npy"], "TARGET"),
        (["p.npy", "strings.npy"], "dtype <U1"),
    ],
)
def test_eval_errors_exit_2(arrays, args, message):
    directory = arrays[0]
    (directory / "text.npy").write_text("not an array")
    np.save(directory / "strings.npy", np.array(["a"] * 4))
    np.save(directory / "bad.npy", np.ones((2, 4)))
    result = _eval_cli(*(str(directory / a) if a.endswith((".npy", ".npz")) or ".npz:" in a else a for a in args))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_eval_streams_in_bounded_memory(tmp_path):
    """Two 256 MiB files: the child's peak resident memory stays far below their size."""
    rows = 1 << 16
    for name, seed in (("p.npy", 1), ("t.npy", 2)):
        array = np.lib.format.open_memmap(tmp_path / name, mode="w+", dtype=np.float32, shape=(rows, 1024))
        rng = np.random.default_rng(seed)
        for start in range(0, rows, 8192):
            array[start : start + 8192] = rng.standard_normal((8192, 1024), dtype=np.float32)
        array.flush()
        del array
    script = (
        "import resource, sys, numpy, fastmse._eval as e\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"result, _ = e.evaluate({str(tmp_path / 'p.npy')!r}, {str(tmp_path / 't.npy')!r}, progress=False)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(float(result), (after - before) / 1024)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    value, grown_mib = map(float, run.stdout.split())
    assert value == pytest.approx(2.0, rel=1e-2)
    assert grown_mib < 96, f"peak RSS grew by {grown_mib:.0f} MiB reading 512 MiB of input"
