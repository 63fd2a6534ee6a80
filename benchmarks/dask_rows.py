"""A loss per sample on a Dask cluster: fastmse.mse(P, T, axis=-1) against the Dask
expression ((P - T) ** 2).mean(axis=-1), on the same persisted arrays.

    python benchmarks/dask_rows.py [ROWS] [COLUMNS] [CHUNK_ROWS] [WORKERS] [REPEAT]

Issue 14's case: (2**23, 16) float32 in chunks of 2**20 rows, 2 worker processes of one
thread; target: fastmse >= 1.5x faster. The inputs are made on the workers and persisted
there (chunk k of both on one worker), so both timings are the per-chunk work and Dask's
scheduling, and both gather the same (ROWS,) result. The two alternate; the speed-up
reported is the median of the per-pair ratios.
"""

from __future__ import annotations

import statistics
import sys

import dask
import dask.array as da
import fastmse
import numpy as np
from dask_scaling import _seconds
from distributed import Client, LocalCluster


def _pair(block: np.ndarray, block_info=None) -> np.ndarray:
    """Predictions and targets of one chunk of rows, made together (so they live together)."""
    rng = np.random.default_rng(block_info[None]["chunk-location"][0])
    return rng.standard_normal((2, *block.shape), dtype=np.float32)


def main(rows: int = 1 << 23, columns: int = 16, chunk_rows: int = 1 << 20, workers: int = 2, repeat: int = 9) -> None:
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(fastmse.set_num_threads, 1)  # a worker is a core
        shape = da.empty((rows, columns), chunks=(chunk_rows, columns), dtype=np.float32)
        pairs = shape.map_blocks(_pair, new_axis=0, chunks=((2,), *shape.chunks), dtype=np.float32).persist()
        p, t = dask.persist(pairs[0], pairs[1])
        del pairs
        ours_value = fastmse.mse(p, t, axis=-1).compute()
        theirs_value = ((p - t) ** 2).mean(axis=-1).compute()
        ours, theirs = [], []
        for _ in range(repeat):
            ours.append(_seconds(lambda: fastmse.mse(p, t, axis=-1).compute()))
            theirs.append(_seconds(lambda: ((p - t) ** 2).mean(axis=-1).compute()))
    speed_up = statistics.median(b / a for a, b in zip(ours, theirs, strict=True))
    print(f"({rows:,}, {columns}) float32, chunks of {chunk_rows:,} rows, {workers} worker processes, {repeat} pairs")
    print(f"fastmse.mse(P, T, axis=-1)          {statistics.median(ours) * 1e3:8.1f} ms (median)")
    print(f"((P - T) ** 2).mean(axis=-1)        {statistics.median(theirs) * 1e3:8.1f} ms (median)")
    print(f"speed-up: {speed_up:.2f}x (median of pairs; target >= 1.5)")
    worst = float(np.max(np.abs(ours_value.astype(np.float64) - theirs_value.astype(np.float64))))
    print(f"largest difference between the two losses: {worst:.3g}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:6]))
