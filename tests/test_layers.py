"""The package's layers: each module imports only from layers below its own and takes no
private name of another module. Read from the installed sources with `ast`, so that an
import circle cannot come back unnoticed."""

from __future__ import annotations

import ast
from pathlib import Path

import fastmse
import pytest

# Lowest first. A module imports modules of lower layers only, at its top or lazily.
LAYERS: list[set[str]] = [
    {"_types", "_plan"},  # vocabulary: type aliases, the plan the kernels receive
    {"_gpu", "_native", "_numba", "_numpy_backend"},  # the backends' passes
    {"_backends"},  # which backend runs
    {"_resolve"},  # arguments checked into a Call
    {"_compute"},  # a Call -> plan -> backend; the loss finished
    {"compat._tensors"},  # PyTorch tensors as arrays and back, for the compat modules
    {"_config", "_dask", "_masked", "_accumulator", "compat.crysx", "compat.keras", "compat.sklearn", "compat.torch"},
    {"_eval", "compat"},  # files through the accumulator; the compat package's docstring
    {"_api"},  # the public functions
    {"__init__"},
    {"_bench", "_bench_shapes"},  # measure the public functions
    {"__main__"},  # the command line
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}
PACKAGE = Path(fastmse.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, list[str], int]]:
    """(fastmse module, names taken from it, line) for each import of fastmse in `path`."""
    package = list(path.relative_to(root).parent.parts)
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            names = [alias.name for alias in node.names]
            if node.module is None:  # `from . import _backends, mse`: modules, or the package's names
                for name in names:
                    module = ".".join([*base, name])
                    found.append((module, [], node.lineno) if module in RANK else (".".join(base), [name], node.lineno))
            else:
                found.append((".".join([*base, node.module]), names, node.lineno))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fastmse":
            target = (node.module or "").removeprefix("fastmse").lstrip(".") or "__init__"
            found.append((target, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [
                (a.name.removeprefix("fastmse").lstrip(".") or "__init__", [], node.lineno)
                for a in node.names
                if a.name.split(".")[0] == "fastmse"
            ]
    return [(target or "__init__", names, line) for target, names, line in found]


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    name = module_name(path, root)
    found = []
    for target, names, line in imports(path, root):
        if target not in RANK:
            found.append(f"{name}:{line} imports {target}, which has no layer")
        elif RANK[target] >= RANK[name]:
            found.append(f"{name}:{line} imports {target}, which is not in a lower layer")
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        if private:
            found.append(f"{name}:{line} takes private names {private} from {target}")
    modules = {
        a.asname or a.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level and node.module is None
        for a in node.names
    }
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
        ):
            found.append(f"{name}:{node.lineno} reads {node.value.id}.{node.attr}, a private name")
    return found


def test_every_module_has_a_layer():
    assert {module_name(p) for p in SOURCES} == set(RANK)


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_imports_go_down_the_layers(path):
    assert violations(path) == []


def test_the_check_finds_a_circle_and_a_private_name(tmp_path):
    (tmp_path / "compat").mkdir()
    (tmp_path / "_resolve.py").write_text("from ._api import mse\nfrom . import _backends\n_backends._loaded\n")
    (tmp_path / "compat" / "torch.py").write_text("from .._compute import _loss\n")
    assert violations(tmp_path / "_resolve.py", tmp_path) == [
        "_resolve:1 imports _api, which is not in a lower layer",
        "_resolve:3 reads _backends._loaded, a private name",
    ]
    assert violations(tmp_path / "compat" / "torch.py", tmp_path) == [
        "compat.torch:1 takes private names ['_loss'] from _compute"
    ]
