"""Bitwise the same results for every thread count, every run, every compiled backend,
every compiled copy of the C++ kernels (instruction sets), and from many Python threads
at once."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np
import pytest
from checks import assert_same
from fastmse import (
    _backends,
    get_num_threads,
    mse,
    mse_and_grad,
    mse_grad,
    set_num_threads,
)
from fastmse._compute import gradient_with_denominator
from hypothesis import given
from strategies import calls

FLOATS = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)

# Layouts that reach each path of the engine: lanes over one long output, lanes over
# many outputs, tiles across outputs, several chunks per output, strided and broadcast.
rng = np.random.default_rng(8)
BIG = rng.standard_normal(3 * (1 << 15) + 1234).astype(np.float32)
MATRIX = rng.standard_normal((1500, 300)).astype(np.float32)
CASES = {
    "flat": (BIG, BIG[::-1].copy(), {}),
    "rows": (MATRIX, MATRIX[::-1].copy(), {"axis": -1}),
    "columns": (MATRIX, MATRIX[:, ::-1].copy(), {"axis": 0}),
    "weighted columns": (MATRIX, 0.5 * MATRIX, {"axis": 0, "weights": rng.uniform(size=(1500, 1))}),
    "strided": (MATRIX[::2, ::3], MATRIX[1::2, ::3], {"axis": (0, 1)}),
    "broadcast": (MATRIX, MATRIX[7], {"reduction": "sum"}),
    "broadcast, weighted per position": (
        MATRIX,
        MATRIX[7],
        {"reduction": "sum", "weights": rng.uniform(size=MATRIX.shape).astype(np.float32)},
    ),
    "tall": (rng.standard_normal((200_000, 3)), np.zeros(3), {"axis": 0}),
    # Narrow columns (up to 4 side by side, their width fixed), a chunk's end among
    # them, and one column left after 64.
    **{
        f"narrow columns k={k}": (Q[:, :k].copy(), Q[::-1, :k].copy(), {"axis": 0})
        for Q in [rng.standard_normal((70_001, 65)).astype(np.float32)]
        for k in (2, 3, 4, 65)
    },
    "narrow columns weighted per position": (
        MATRIX[:, :3].copy(),
        MATRIX[:, 3:6].copy(),
        {"axis": 0, "weights": rng.uniform(size=(1500, 3)).astype(np.float32)},
    ),
    # Narrow columns whose rows of targets or weights are one for all (read from copies of
    # that row; summed, since a mean drops weights per column that cannot cancel), and
    # columns summed over two axes that do not merge (lanes carried from one run of the
    # inner summed axis to the next; rows side by side within a run, or not).
    **{
        name: (Q[:, :3].copy(), targets, {"axis": 0, "reduction": "sum", "weights": weights})
        for Q in [rng.standard_normal((20_003, 8)).astype(np.float32)]
        for name, targets, weights in [
            ("narrow columns, a target per column", Q[9, 3:6].copy(), None),
            ("narrow columns weighted per column", Q[::-1, 3:6].copy(), rng.uniform(size=3).astype(np.float32)),
        ]
    },
    # Tasks taken chunk by chunk across the groups of outputs and an outer kept axis.
    "columns under an outer axis": (
        *rng.standard_normal((2, 2, 32_800, 65)).astype(np.float32),
        {"axis": 1},
    ),
    **{
        f"columns over two summed axes, rows {apart}": (X[0][:, :m, :k], X[1][:, :m, :k], {"axis": (0, 1)})
        for apart, k, m, shape in [("apart", 3, 21, (300, 40, 5)), ("side by side", 8, 17, (40, 20, 8))]
        for X in [rng.standard_normal((2, *shape)).astype(np.float32)]
    },
    # Short rows: a loss per sample over k outputs, unrolled for k <= 16 and not beyond,
    # with weights or targets per sample (constant along the row), weights per position,
    # strided rows, and outputs of one position (which either mode sums to 0 + the term).
    **{
        f"short rows k={k}": (Q[:, :k].copy(), Q[::-1, :k].copy(), {"axis": -1})
        for Q in [rng.standard_normal((70_000, 17)).astype(np.float32)]
        for k in (1, 3, 8, 10, 11, 16, 17)
    },
    "short rows weighted per sample": (  # summed: in a mean, weights per sample cancel
        MATRIX[:, :10].copy(),
        MATRIX[:, 10:20].copy(),
        {"axis": -1, "reduction": "sum", "weights": rng.uniform(size=(1500, 1)).astype(np.float32)},
    ),
    "short rows, a target per sample": (MATRIX[:, :10].copy(), MATRIX[:, 10:11].copy(), {"axis": -1}),
    "short rows, a target per column": (MATRIX[:, :10].copy(), MATRIX[3, 10:20].copy(), {"axis": -1}),
    # Rows summed in vectors along them read one row of targets converted once.
    **{
        f"short rows of {k}, a target per column": (Q[:, :k].copy(), Q[3, k : 2 * k].copy(), {"axis": -1})
        for Q in [rng.standard_normal((5_001, 32)).astype(np.float32)]
        for k in (4, 9, 12, 16)
    },
    "short rows, one target": (MATRIX[:, :10].copy(), np.float32(0.25), {"axis": -1}),
    "short rows float64 weights": (
        MATRIX[:, :10].copy(),
        MATRIX[:, 10:20].copy(),
        {"axis": -1, "weights": rng.uniform(size=(1500, 10))},
    ),
    # Weights per position: rows of their own (a loss weighted per sample and output), or
    # one row of them for every sample (weights per output column).
    **{
        name: (R[:, :10].copy(), R[::-1, 5:15].copy(), {"axis": -1, "weights": weights})
        for R in [rng.standard_normal((70_000, 16)).astype(np.float32)]
        for name, weights in [
            ("short rows weights per position", rng.uniform(size=(70_000, 10)).astype(np.float32)),
            ("short rows weights per column", rng.uniform(size=10).astype(np.float32)),
        ]
    },
    # Sums over everything of short rows that do not merge, an operand broadcast along
    # them, over many blocks and chunks of rows: in one stage (lane mode's blocks across
    # the rows) for a target per column, otherwise each row summed first, then the row
    # sums (Plan.rows_first).
    **{
        name: (R[:, :10].copy(), targets, {"weights": weights})
        for R in [rng.standard_normal((70_000, 16)).astype(np.float32)]
        for name, targets, weights in [
            ("weights per sample, over everything", R[::-1, 5:15].copy(), rng.uniform(size=(70_000, 1))),
            ("a target per column, over everything", R[7, 5:15].copy(), None),
            ("both, over everything", R[7, 5:15].copy(), rng.uniform(size=(70_000, 1)).astype(np.float32)),
            ("a target per sample, over everything", R[::-1, 5:6].copy(), None),
            ("weights per sample, one target", np.float32(0.5), rng.uniform(size=(70_000, 1))),
        ]
    },
    # Gradients of short rows with a target per column walk copies of the target row
    # (the Numba backend's row_tasks): rows of 1 to 129 positions, the rows ending within
    # a copy, and a row of targets per outer index.
    **{
        f"a target per column, rows of {k}": (S[:, :k].copy(), S[5, k : 2 * k].copy(), {})
        for S in [rng.standard_normal((20_001, 258)).astype(np.float32)]
        for k in (1, 3, 100, 128, 129)
    },
    "a row of targets per outer index": (
        rng.standard_normal((3, 9001, 6)).astype(np.float32),
        rng.standard_normal((3, 1, 6)).astype(np.float32),
        {"axis": -1},
    ),
    # Short rows of 0 to 8 groups of eight and a tail (the Numba backend sums rows of up
    # to 63 four at a time, and reads the last rows' tails one by one); weighted per
    # sample and per column (one row of weights for all, an inf among them); a target
    # per sample; rows walked backwards.
    **{
        f"rows of {k}": (R[:, :k].copy(), R[::-1, -k:].copy(), {"axis": -1})
        for R in [rng.standard_normal((4099, 65)).astype(np.float32)]
        for k in (2, 7, 8, 10, 16, 17, 23, 24, 63, 65)
    },
    "rows of 10 weighted per sample": (
        MATRIX[:, :10].copy(),
        MATRIX[:, 10:20].copy(),
        {"axis": -1, "reduction": "sum", "weights": rng.uniform(size=(1500, 1)).astype(np.float32)},
    ),
    "rows of 10 weighted per column, an inf": (
        MATRIX[:, :10].copy(),
        MATRIX[:, 10:20].copy(),
        {"axis": -1, "reduction": "sum", "weights": np.array([np.inf] + [0.5] * 9, np.float32)},
    ),
    # Infs in the weights that the row before reads whole past its end: dropped there by
    # a select; a multiplication by 0 would make them NaN.
    "rows of 10 weighted per position, an inf at each row's start": (
        MATRIX[:, :10].copy(),
        MATRIX[:, 10:20].copy(),
        {
            "axis": -1,
            "reduction": "sum",
            "weights": np.where(np.arange(10) == 0, np.inf, rng.uniform(size=(1500, 10))).astype(np.float32),
        },
    ),
    "rows of 3, a target per sample": (MATRIX[:, :3].copy(), MATRIX[:, 3:4].copy(), {"axis": -1}),
    # Rows of fewer than eight positions side by side (the Numba backend reads four rows
    # as one vector): weighted per sample and per position, a target per sample.
    **{
        f"rows of {k}, {name}": (R[:, :k].copy(), R[::-1, -k:].copy() if target is None else target, kwargs)
        for R in [rng.standard_normal((4099, 7)).astype(np.float32)]
        for k in (1, 4, 6)
        for name, target, kwargs in [
            ("weighted per sample", None, {"axis": -1, "weights": rng.uniform(size=(4099, 1)).astype(np.float32)}),
            ("weighted per position", None, {"axis": -1, "weights": rng.uniform(size=(4099, k)).astype(np.float32)}),
            ("a target per sample", R[::-1, :1].copy(), {"axis": -1}),
        ]
    },
    "rows of 5 backwards": (MATRIX[::-1, :5], MATRIX[:, 5:10], {"axis": -1}),
    "short strided rows": (MATRIX[:, :20:2], MATRIX[:, 1:21:2], {"axis": -1}),
    # Rows longer than a block (lane mode), unweighted and weighted per sample; columns
    # weighted per column (tiles across outputs, weights along them).
    **{
        name: (L, L[::-1].copy(), {"axis": -1, "reduction": "sum", "weights": weights})
        for L in [rng.standard_normal((7, 4099)).astype(np.float32)]
        for name, weights in [
            ("long rows", None),
            ("long rows weighted per sample", rng.uniform(size=(7, 1)).astype(np.float32)),
        ]
    },
    "columns weighted per column": (
        MATRIX[:, :21].copy(),
        MATRIX[::-1, 21:42].copy(),
        {"axis": 0, "weights": rng.uniform(size=21).astype(np.float32)},
    ),
    "one position per output": (MATRIX, MATRIX[::-1].copy(), {"axis": (), "reduction": "sum"}),
    "elementwise": (MATRIX, MATRIX[::-1].copy(), {"reduction": "none"}),
    # One target for every position, and weights per position over everything (whose sums
    # subtract one 0): the packed lanes with the target loaded once.
    "flat, one target": (BIG, np.float32(0.25), {}),
    "flat weights per position": (BIG, BIG[::-1].copy(), {"weights": rng.uniform(size=BIG.size).astype(np.float32)}),
    "flat float64, one target, float64 weights": (BIG.astype(np.float64), 0.5, {"weights": rng.uniform(size=BIG.size)}),
}


def _results(predictions, targets, kwargs):
    return (
        mse(predictions, targets, **kwargs),
        mse_grad(predictions, targets, **kwargs),
        mse_and_grad(predictions, targets, **kwargs),
    )


@pytest.fixture
def restore_threads(threads_from_parallel_min):
    before = get_num_threads()
    yield
    set_num_threads(before)


@pytest.mark.parametrize("name", list(CASES))
def test_thread_count_does_not_change_a_bit(backend, restore_threads, name):
    predictions, targets, kwargs = CASES[name]
    set_num_threads(1)
    first = _results(predictions, targets, kwargs)
    for threads in (2, 3, 4, 7, 16):
        set_num_threads(threads)
        again = _results(predictions, targets, kwargs)
        assert_same(again[0], first[0])
        assert_same(again[1], first[1])
        assert_same(again[2][0], first[2][0])
        assert_same(again[2][1], first[2][1])


def _compiled():
    names = [name for name in ("cpp", "numba") if name in _backends.available()]
    if len(names) < 2:
        pytest.skip("needs both the compiled module and Numba")
    return names


def _fused_in_place(predictions, targets):
    """mse_and_grad with out=predictions: the gradient overwrites what its loss reads."""
    loss, _ = mse_and_grad(predictions, targets, axis=-1, out=predictions)
    return loss, predictions


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 67])
def test_short_rows_agree_bitwise(width):
    # Rows of up to 16 positions are summed several at a time in the C++ kernels (each
    # SIMD lane a row); Numba sums them one by one, in the order each row must keep.
    # float64 results: a float32 rounding would hide a change of summation order.
    rng = np.random.default_rng(width)
    p = rng.standard_normal((4 * 37 + 3, width))
    t = rng.standard_normal((4 * 37 + 3, width))
    calls = [
        lambda: mse(p, t, axis=-1),
        lambda: mse(p, t, axis=-1, weights=rng_weights[: len(p), None]),
        lambda: mse(p, t, axis=-1, weights=rng_weights[: p.size].reshape(p.shape)),
        lambda: mse_grad(p[:, :1], t, axis=-1),  # predictions broadcast along the rows
        lambda: mse(p.astype(np.float32), t.astype(np.float32), axis=-1, reduction="sum"),
        # The fused pass: C++ sums four rows at a time and writes their gradient as one run.
        lambda: mse_and_grad(p, t, axis=-1),
        lambda: mse_and_grad(p.astype(np.float32), t.astype(np.float32), axis=-1),
        lambda: _fused_in_place(p.copy(), t),
        # Weights per row: four rows' gradient as one run, each row with its own factor.
        lambda: mse_grad(p, t, axis=-1, weights=rng_weights[: len(p), None]),
        lambda: mse_and_grad(p, t, axis=-1, weights=rng_weights[: len(p), None]),
        lambda: mse_and_grad(p, t, weights=rng_weights[: len(p), None]),
        lambda: mse_and_grad(p.astype(np.float32), t.astype(np.float32), weights=rng_weights[: len(p), None]),
        lambda: mse_grad(p.astype(np.float32), t.astype(np.float32), weights=rng_weights[: len(p), None] + 1),
        lambda: mse_grad(p, t, axis=-1, weights=rng_weights[: len(p), None] + 1, reduction="sum"),
        # Weights per position (of every sample, or one row of them for all): the
        # gradient of four rows as one run, each position with its own weight.
        lambda: mse_grad(p, t, axis=-1, weights=rng_weights[: p.size].reshape(p.shape)),
        lambda: mse_and_grad(p, t, axis=-1, weights=rng_weights[: p.size].reshape(p.shape)),
        lambda: mse_and_grad(p32, t32, axis=-1, weights=rng_weights[: p.size].reshape(p.shape).astype(np.float32)),
        lambda: mse_and_grad(p32, t32, axis=-1, weights=rng_weights[: p.size].reshape(p.shape)),
        lambda: mse(p32, t32, axis=-1, weights=rng_weights[: p.size].reshape(p.shape).astype(np.float32)),
        lambda: mse(p, t, axis=-1, weights=rng_weights[:width] + 0.5),
        lambda: mse_and_grad(p, t, axis=-1, weights=rng_weights[:width] + 0.5),
        lambda: mse_and_grad(p32, t32, axis=-1, weights=(rng_weights[:width] + 0.5).astype(np.float32)),
        # Rows of weights another step apart than the rows of data: backwards, and a view
        # of wider rows.
        lambda: mse_grad(p, t, axis=-1, weights=rng_weights[: p.size].reshape(p.shape)[::-1]),
        lambda: mse_and_grad(p, t, axis=-1, weights=wide_weights[:, :width]),
        # Sums over everything of rows with an operand broadcast along them: the rows
        # first, then their sums; with weights laid out across the samples (and rows of
        # at least 3), the rows are samples' columns and C++ sums them across outputs
        # into an array first. A row of targets of its own (a copy), so that a read past
        # its end would be one past the array.
        lambda: mse(p, t, weights=rng_weights[: len(p), None]),
        lambda: mse(p32, t32, weights=rng_weights[: len(p), None].astype(np.float32)),
        lambda: mse(p, t[0].copy()),
        lambda: mse_and_grad(p32, t32[0].copy()),
        lambda: mse(p, t[0].copy(), weights=np.asfortranarray(rng_weights[: p.size].reshape(p.shape))),
        lambda: mse_and_grad(p, t[0].copy(), weights=np.asfortranarray(rng_weights[: p.size].reshape(p.shape))),
        # One row of targets for every sample (a target per column).
        lambda: mse(p, t[0].copy(), axis=-1),
        lambda: mse(p32, t32[0].copy(), axis=-1),
        lambda: mse(p, t[0].copy(), axis=-1, weights=rng_weights[: len(p), None], reduction="sum"),
        lambda: mse(p, t[0].copy(), axis=-1, weights=rng_weights[: p.size].reshape(p.shape)),
        # C++ reads such a row (and one of weights per column) from copies laid out as rows
        # of their own: in runs of rows along a kept dimension before the samples', in
        # every pass, and in float16.
        lambda: mse_and_grad(p[:150].reshape(5, 30, width), t[0].copy(), axis=-1),
        lambda: mse_grad(p[:150].reshape(5, 30, width), t[0].copy(), axis=-1, weights=rng_weights[:width] + 0.5),
        lambda: mse_and_grad(p32, t32, axis=-1, weights=(rng_weights[:width] + 0.5)[::-1].copy(), reduction="sum"),
        lambda: mse(p.astype(np.float16), t[0].astype(np.float16), axis=-1),
        lambda: mse(p, t[0].copy(), axis=-1, weights=rng_weights[:width] + 0.5),
        lambda: mse_grad(p32, t32[0].copy(), axis=-1),
        lambda: mse_and_grad(p, t[0].copy(), axis=-1),
        lambda: mse_and_grad(p32, t32[0].copy(), axis=-1, weights=rng_weights[: len(p), None]),
        lambda: mse_and_grad(p32, t32[0].copy(), axis=-1, weights=rng_weights[:width] + 0.5),
        lambda: mse(p.astype(np.float16), t[0].astype(np.float16), axis=-1, weights=np.float16(rng_weights[:width])),
        # Runs of three rows: the row is read where it is.
        lambda: mse_and_grad(p[:150].reshape(50, 3, width), t[0].copy(), axis=-1),
        lambda: mse(p[:150].reshape(50, 3, width), t[0].copy(), axis=-1, weights=rng_weights[:width] + 0.5),
        # Lane mode runs blocks across contiguous rows with one row of targets for all,
        # repeated: over everything, and over each of several outputs, with a target row of
        # its own or one for all.
        lambda: mse(p[:150].reshape(5, 30, width), t[0].copy(), axis=(1, 2)),
        lambda: mse(p[:150].reshape(5, 30, width), t[:150].reshape(5, 30, width)[:, :1].copy(), axis=(1, 2)),
        lambda: mse_and_grad(p32[:150].reshape(5, 30, width), t32[0].copy(), axis=(1, 2)),
        lambda: mse(p, t[0].copy(), weights=rng_weights[: p.size].reshape(p.shape)),
        # ... and with weights per sample (two stages, beside one).
        lambda: mse(p, t[0].copy(), weights=rng_weights[: len(p), None]),
        lambda: mse_and_grad(p32, t32, weights=rng_weights[: len(p), None].astype(np.float32), reduction="sum"),
        lambda: mse(
            p[:150].reshape(5, 30, width),
            t[:150].reshape(5, 30, width),
            weights=rng_weights[:150].reshape(5, 30, 1),
            axis=(1, 2),
        ),
        lambda: mse(p.astype(np.float16), t.astype(np.float16), weights=np.float16(rng_weights[: len(p), None])),
        # A target per sample, or one for all: constant along the rows.
        lambda: mse(p, t[:, :1], axis=-1),
        lambda: mse(p, 0.5, axis=-1, weights=rng_weights[: p.size].reshape(p.shape)),
        lambda: mse_and_grad(p, t[:, :1], axis=-1, weights=rng_weights[: len(p), None], reduction="sum"),
        # Columns: C++ fixes the width of up to four neighbouring outputs.
        lambda: mse(p, t, axis=0),
        lambda: mse_and_grad(p, t, axis=0),
    ]
    p32, t32 = p.astype(np.float32), t.astype(np.float32)
    rng_weights = rng.uniform(0.0, 2.0, p.size) * (rng.random(p.size) > 0.1)  # zeros among them
    wide_weights = rng.uniform(0.0, 2.0, (len(p), 2 * width))
    results = []
    for backend in _compiled():
        with _backends.use(backend), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a weighted mean over weights that sum to zero
            results.append([call() for call in calls])
    for a, b in zip(*results, strict=True):
        for x, y in zip(*(r if isinstance(r, tuple) else (r,) for r in (a, b)), strict=True):
            assert_same(x, y)


@pytest.mark.parametrize("rows", [0, 1, 16, 17, 2048, 2049, 5000, 32768, 32769, 70_001, 120_000])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name", ["cpp", "numba"])
def test_rows_first_is_the_sum_of_the_row_sums(monkeypatch, name, rows, dtype):
    # The C++ and Numba kernels sum the rows of a sum over everything a block at a time
    # (Plan.rows_first); other backends fill an array of row sums, then sum it. Both must
    # give the same bits, at every block and chunk boundary, on one thread and on several
    # (120,000 rows), and for empty sums, also where the kernels finish the loss
    # themselves (a mean in the data's dtype).
    if name not in _backends.available():
        pytest.skip(f"needs the {name} backend")
    rng = np.random.default_rng(rows)
    p = rng.standard_normal((rows, 10)).astype(dtype)
    t = rng.standard_normal((rows, 10)).astype(dtype)
    w = rng.uniform(0.5, 2.0, (rows, 1)).astype(dtype)
    # Summed in two stages: weights per sample, a target per sample, weights per column
    # (a target per column is summed in one stage: see CASES).
    per_sample = t[:, :1].copy()
    per_column = rng.uniform(0.5, 2.0, 10).astype(dtype)
    calls = [
        lambda: mse(p, t, weights=w),
        lambda: mse(p, t, weights=w, reduction="sum"),
        lambda: mse_and_grad(p, t, weights=w),
        lambda: mse(p, 0.5, weights=w),
        lambda: mse(p, 0.5, weights=w, reduction="sum"),
        lambda: mse(p, per_sample),
        lambda: mse(p, t, weights=per_column),
        lambda: mse_grad(p, 0.5, weights=w),
        lambda: mse_and_grad(p, 0.5, weights=w),
        lambda: mse_and_grad(p, per_sample, reduction="sum"),
        # Every kept axis of extent 1: the plan keeps none, and the kernels finish the
        # mean in the data's dtype.
        lambda: mse(p[None], per_sample[None], axis=(1, 2)),
        lambda: mse(p[:, :0], t[:, :0], weights=w),
    ]
    with _backends.use(name), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # means over nothing
        assert _backends.current().rows_first
        results = [[call() for call in calls]]
        with monkeypatch.context() as patch:  # the general path's rows first, not the one-step call's
            patch.setattr(_backends, "small_call", None)
            results.append([call() for call in calls])
        if name == "numba":  # rows that it would not run as short rows: their sums in an array first
            from fastmse import _numba

            with monkeypatch.context() as patch:
                patch.setattr(_numba, "ROW_MODE", -1)
                results.append([call() for call in calls])
        with monkeypatch.context() as patch:  # two passes: the general path of a backend without rows first
            patch.setattr(_backends.current(), "rows_first", False)
            patch.setattr(_backends, "small_call", None)
            two_passes = [call() for call in calls]
    for rows_first in results:
        for a, b in zip(rows_first, two_passes, strict=True):
            for x, y in zip(*(r if isinstance(r, tuple) else (r,) for r in (a, b)), strict=True):
                assert_same(x, y)


@pytest.mark.parametrize("name", list(CASES))
def test_cpp_and_numba_agree_bitwise_on_large_layouts(name):
    predictions, targets, kwargs = CASES[name]
    results = []
    for backend in _compiled():
        with _backends.use(backend):
            results.append(_results(predictions, targets, kwargs))
    for a, b in zip(results[0], results[1], strict=True):
        if isinstance(a, tuple):
            assert_same(a[0], b[0])
            assert_same(a[1], b[1])
        else:
            assert_same(a, b)


@given(case=calls(dtypes=FLOATS, max_side=9))
def test_cpp_and_numba_agree_bitwise(case):
    predictions, targets, kwargs = case
    kwargs = {**kwargs, "reduction": "sum" if kwargs["reduction"] == "mean" else kwargs["reduction"]}
    results = []
    for backend in _compiled():
        with _backends.use(backend):
            results.append((mse(predictions, targets, **kwargs), mse_grad(predictions, targets, **kwargs)))
    assert_same(results[0][0], results[1][0])
    assert_same(results[0][1], results[1][1])


def _kernel_copies():
    """The compiled module and the instruction sets its kernel copies run here."""
    if "cpp" not in _backends.available():
        pytest.skip("needs the compiled module")
    from fastmse import _core

    names = _core.runnable_isas()
    if len(names) < 2:
        pytest.skip(f"this build and CPU run one copy of the kernels only: {names}")
    return _core, names


def _results_per_copy(predictions, targets, kwargs):
    core, names = _kernel_copies()
    before = core.isa()
    results = []
    try:
        with _backends.use("cpp"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # means over nothing are nan
            for name in names:
                assert core.set_isa(name)
                results.append(_results(predictions, targets, kwargs))
    finally:
        core.set_isa(before)
    return results


def _assert_all_same(results):
    first = results[0]
    for other in results[1:]:
        assert_same(other[0], first[0])
        assert_same(other[1], first[1])
        assert_same(other[2][0], first[2][0])
        assert_same(other[2][1], first[2][1])


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_copies_agree_bitwise_on_large_layouts(name):
    _assert_all_same(_results_per_copy(*CASES[name]))


@given(case=calls(dtypes=FLOATS, max_side=9))
def test_kernel_copies_agree_bitwise(case):
    _assert_all_same(_results_per_copy(*case))


def test_fastmse_isa_chooses_the_kernel_copy():
    _, names = _kernel_copies()
    code = "import fastmse._native, fastmse._core as c; fastmse.mse([1.0], [2.0]); print(c.isa())"
    for name in names:
        assert _threads_in_subprocess({"FASTMSE_ISA": name}, code) == name
    env = {**os.environ, "FASTMSE_ISA": "no-such-isa"}
    env.pop("FASTMSE_BACKEND", None)
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "FASTMSE_ISA='no-such-isa' ignored" in result.stderr


def _flat(results):
    loss, grad, (fused_loss, fused_grad) = results
    return loss, grad, fused_loss, fused_grad


def test_concurrent_calls_from_python_threads(backend):
    # The engine's layouts above, and small mixed calls: every dtype, weights, each axis,
    # targets broadcast along axis 0.
    cases = list(CASES.values())
    mixed = np.random.default_rng(8)
    for k, dtype in enumerate(FLOATS * 3):
        shape = (int(mixed.integers(1, 300)), int(mixed.integers(1, 700)))
        p = mixed.standard_normal(shape).astype(dtype)
        t = mixed.standard_normal(shape[-1:]).astype(dtype)
        w = mixed.uniform(0.5, 1.5, shape).astype(dtype) if k % 2 else None
        cases.append((p, t, {"weights": w, "axis": (None, -1, 0)[k % 3]}))
    expected = [_flat(_results(*case)) for case in cases]
    start = threading.Barrier(8, timeout=60)

    def work(seed):
        order = np.random.default_rng(seed).permutation(len(cases) * 2) % len(cases)
        start.wait()  # all eight threads call at once, each in its own order
        for i in order:
            for got, want in zip(_flat(_results(*cases[i])), expected[i], strict=True):
                assert_same(got, want)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(work, seed) for seed in range(8)]:
            future.result()  # re-raises a thread's failure here


def _threads_in_subprocess(env_update: dict, code: str) -> str:
    env = {**os.environ, **env_update}
    env.pop("FASTMSE_BACKEND", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_omp_num_threads_is_honoured():
    code = "import fastmse; print(fastmse.get_num_threads())"
    assert _threads_in_subprocess({"OMP_NUM_THREADS": "3"}, code) == "3"
    assert _threads_in_subprocess({"OMP_NUM_THREADS": "1"}, code) == "1"


def test_threadpoolctl_limits_are_honoured():
    code = (
        "import fastmse, numpy as np\n"
        "from threadpoolctl import threadpool_limits\n"
        "fastmse.mse(np.ones(3), np.ones(3))\n"
        "with threadpool_limits(limits=1, user_api='openmp'):\n"
        "    inside = fastmse.get_num_threads()\n"
        "print(inside, fastmse.get_num_threads())"
    )
    inside, outside = _threads_in_subprocess({"OMP_NUM_THREADS": "4"}, code).split()
    assert (inside, outside) == ("1", "4")


@pytest.mark.parametrize(
    ("dtype", "payloads"),
    [(np.float16, [0x7D55, 0xFE01, 0x3C00]), (ml_dtypes.bfloat16, [0x7F85, 0xFFA1, 0x3F80])],
    ids=["float16", "bfloat16"],
)
def test_16_bit_nan_payloads_do_not_split_the_backends(dtype, payloads):
    values = np.array(payloads, np.uint16).view(dtype)
    bits = []
    for backend in _compiled():
        with _backends.use(backend):
            bits.append(mse(values, np.zeros(3, dtype), reduction="none").view(np.uint16))
    np.testing.assert_array_equal(bits[0], bits[1])


@pytest.mark.parametrize("shape", [(35,), (7, 5), (300, 17)])
def test_a_negative_zero_factor_keeps_its_sign(shape):
    # A mean over a piece of a larger array takes the whole's denominator (Dask's chunks):
    # -inf there makes the factor -0, and each gradient element a zero of the sign of
    # -(p - t), on every path of the kernels: whole sets of lanes, their tails, short rows.
    rng = np.random.default_rng(len(shape))
    p, t = rng.standard_normal(shape), rng.standard_normal(shape)
    results = []
    for backend in _compiled():
        with _backends.use(backend):
            gradient, sums = gradient_with_denominator(p, t, None, -1, "mean", -math.inf, with_sums=True)
            results.append((gradient, sums))
    assert_same(*(gradient for gradient, _ in results))
    assert_same(*(sums for _, sums in results))
    np.testing.assert_array_equal(np.signbit(results[0][0]), p > t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target", [-0.0, 0.0])
@pytest.mark.parametrize("prediction", [-0.0, 0.0])
def test_a_zero_difference_has_numpys_sign(backend, dtype, target, prediction):
    # -0 - -0 is +0, and -0 - +0 is -0: each position's p - t as NumPy computes it, the
    # target one for all (a scalar, loaded once into vectors) or per position, through
    # whole sets of lanes and their tails (37 positions).
    p = np.full(37, prediction, dtype)
    for t in (dtype(target), np.full(37, target, dtype)):
        expected = np.signbit(np.subtract(p, t))
        for gradient in (mse_grad(p, t, reduction="sum"), mse_and_grad(p, t, reduction="sum")[1]):
            np.testing.assert_array_equal(np.signbit(gradient), expected)
        np.testing.assert_array_equal(np.signbit(mse(p, t, reduction="none")), np.signbit(np.subtract(p, t) ** 2))
