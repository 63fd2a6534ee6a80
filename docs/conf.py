"""Sphinx configuration for fastmse's documentation.

Build (warnings are errors): ``python -m sphinx -W -b html docs docs/_build/html``
after ``pip install ".[docs]"``. The API pages import the installed ``fastmse``; the
throughput plot is drawn at build time from the recorded ``benchmarks/sizes.json``
into ``docs/_generated/`` (git-ignored), so it always shows the committed figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastmse

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SIZES_JSON = ROOT / "benchmarks" / "sizes.json"
SIZES_PNG = DOCS / "_generated" / "sizes.png"
SHAPES_PNG = DOCS / "_generated" / "shapes.png"

project = "fastmse"
author = "the fastmse contributors"
copyright = "the fastmse contributors"
release = fastmse.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "numpydoc"]
exclude_patterns = ["_build", "_generated"]
root_doc = "index"

# Signatures without annotations (ArrayLike expands to a long Union); the NumPy-style
# docstrings give the types.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # members are listed by autodoc's :members:
numpydoc_class_members_toctree = False

# CHANGELOG.md, CONTRIBUTING.md and benchmarks/RESULTS.md are included as Markdown
# source (no Markdown parser dependency). Their fenced code blocks are not handed to
# other lexers, which could fail (a warning, hence an error) on a snippet they reject.
highlight_options = {"markdown": {"handlecodeblocks": False}}

html_theme = "alabaster"
html_title = f"fastmse {release}"
html_theme_options = {"description": "Fast, exact MSE loss and gradient", "page_width": "1100px"}


def _sizes() -> dict[str, Any]:
    with SIZES_JSON.open() as handle:
        return json.load(handle)


def _describe(figures: dict[str, Any]) -> dict[str, str]:
    machine = figures["machine"]
    return {
        "sizes_command": figures["command"],
        "sizes_commit": figures.get("commit") or "unknown",
        "sizes_date": figures["date"],
        "sizes_machine": (
            f"{machine['system']}, {machine['cpu']}, {machine['cpus']}, {machine['threads']} threads, "
            f"backend {machine['backend']}" + (f" (kernels: {machine['kernels']})" if machine.get("kernels") else "")
        ),
        "sizes_versions": ", ".join(f"{name} {v}" for name, v in figures["versions"].items()),
    }


# |sizes_command|, |sizes_commit|, |sizes_date|, |sizes_machine|, |sizes_versions| in the pages.
def _substitution(key: str, value: str) -> str:
    text = f"``{value}``" if key in ("sizes_command", "sizes_commit") else value.replace("*", "\\*")
    return f".. |{key}| replace:: {text}"


rst_epilog = "\n".join(_substitution(key, value) for key, value in _describe(_sizes()).items())


def render_sizes_plot(app: Any) -> None:
    """GB/s against array size, log-log, from benchmarks/sizes.json (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figures = _sizes()
    size_at, gbps_at = figures["columns"].index("size"), figures["columns"].index("gbps")
    figure, axes = plt.subplots(figsize=(8, 5), dpi=120, layout="constrained")
    for name, rows in figures["results"].items():
        sizes = [row[size_at] for row in rows]
        gbps = [row[gbps_at] for row in rows]
        if name == figures["ceiling"]:
            axes.plot(sizes, gbps, color="black", linestyle="--", linewidth=1.5, label=name)
        else:
            axes.plot(sizes, gbps, marker="o", markersize=4, linewidth=1.5, label=name)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel(f"elements per input ({figures['dtype']})")
    axes.set_ylabel("GB/s (bytes of both inputs / seconds per call)")
    machine = figures["machine"]
    axes.set_title(
        f"mean squared error throughput: {machine['cpu']}, {machine['threads']} threads, {figures['date'][:10]}",
        fontsize=10,
    )
    axes.grid(True, which="major", alpha=0.4)
    axes.grid(True, which="minor", axis="y", alpha=0.15)
    axes.legend(fontsize=8, loc="best")
    SIZES_PNG.parent.mkdir(exist_ok=True)
    figure.savefig(SIZES_PNG)
    plt.close(figure)


# The shape families' lines: (call in sizes.json, label, style).
_FAMILY_LINES = [
    ("mse", "fastmse.mse", {"color": "C0", "linewidth": 1.8}),
    ("numpy loss", "NumPy expression", {"color": "C1", "linestyle": "--"}),
    ("torch loss", "PyTorch expression", {"color": "C2", "linestyle": ":"}),
]


def render_shapes_plot(app: Any) -> None:
    """GB/s of the loss against positions, one panel per shape family, from the families
    of benchmarks/sizes.json; the flat array's fastmse line is repeated in grey in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = _sizes()
    families = figures.get("families", {})
    if not families:
        return
    size_at, gbps_at = figures["columns"].index("size"), figures["columns"].index("gbps")
    columns = 4
    rows = (len(families) + columns - 1) // columns
    figure, panels = plt.subplots(
        rows, columns, figsize=(12, 2.6 * rows), dpi=110, sharex=True, sharey=True, layout="constrained"
    )
    flat = families.get("flat", {}).get("mse", [])
    for panel, (family, calls) in zip(panels.flat, families.items(), strict=False):
        if family != "flat" and flat:
            panel.plot(
                [r[size_at] for r in flat],
                [r[gbps_at] for r in flat],
                color="0.75",
                linewidth=3,
                label="fastmse.mse, flat",
            )
        for call, label, style in _FAMILY_LINES:
            if call in calls:
                panel.plot([r[size_at] for r in calls[call]], [r[gbps_at] for r in calls[call]], label=label, **style)
        panel.set_title(family, fontsize=9)
        panel.set_xscale("log", base=2)
        panel.set_yscale("log")
        panel.grid(True, alpha=0.3)
    for panel in list(panels.flat)[len(families) :]:
        panel.axis("off")
    with_reference = [p for p in panels.flat if p.get_title() != "flat" and p.lines]
    handles, labels = (with_reference or list(panels.flat))[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    figure.supylabel("GB/s (both inputs / seconds per call) against positions per input", fontsize=9)
    SHAPES_PNG.parent.mkdir(exist_ok=True)
    figure.savefig(SHAPES_PNG)
    plt.close(figure)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", render_sizes_plot)
    app.connect("builder-inited", render_shapes_plot)
    return {"parallel_read_safe": True}
