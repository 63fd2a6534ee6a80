"""The repository's own style rules (pyproject.toml's [tool.ruff]), checked with the suite
so that CI enforces them: `ruff format --check` and `ruff check` on the sources.
mypy --strict runs in tests/test_typing.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [str(ROOT / d) for d in ("python", "tests", "benchmarks", "docs/conf.py") if (ROOT / d).exists()]

# The ruff of this interpreter's environment, wherever PATH points.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None, reason="ruff is in the test extra; not installed here"
)


@pytest.mark.parametrize("command", [["format", "--check", "--diff"], ["check"]], ids=["format", "lint"])
def test_ruff(command):
    ruff = [sys.executable, "-m", "ruff"]
    result = subprocess.run([*ruff, *command, *SOURCES], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"ruff {' '.join(command)}:\n{result.stdout}{result.stderr}"
