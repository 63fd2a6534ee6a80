"""Dask on a LocalCluster against one process: throughput per core of fastmse.mse.

    python benchmarks/dask_scaling.py [ELEMENTS] [WORKERS] [REPEAT]

The inputs are generated on the workers and persisted there, chunk k of predictions on
the same worker as chunk k of targets, so the timing is the per-chunk kernels plus
Dask's scheduling and tree reduction, not data transfer. The one-process and the Dask
timings alternate, so that both see the same state of a shared machine; the ratio
reported is the median of the per-pair ratios.
"""

from __future__ import annotations

import statistics
import sys
import time

import dask
import dask.array as da
import fastmse
import numpy as np
from distributed import Client, LocalCluster


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _pair(block: np.ndarray, block_info=None) -> np.ndarray:
    """Predictions and targets of one chunk, made together (so they live together)."""
    rng = np.random.default_rng(block_info[None]["chunk-location"][0])
    return rng.standard_normal((2, block.shape[-1]), dtype=np.float32)


def main(elements: int = 1 << 28, workers: int = 2, repeat: int = 9) -> None:
    chunk = 1 << 25
    nbytes = 2 * elements * 4
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        # one OpenMP thread per worker: a worker is a core
        client.run(fastmse.set_num_threads, 1)
        shape = da.empty(elements, chunks=chunk, dtype=np.float32)
        pairs = shape.map_blocks(_pair, new_axis=0, chunks=((2,), shape.chunks[0]), dtype=np.float32).persist()
        p, t = dask.persist(pairs[0], pairs[1])
        del pairs
        dask_value = float(fastmse.mse(p, t).compute())
        # copies: arrays gathered from workers may be misaligned, which fastmse copies per call
        p_np, t_np = (a.copy() for a in dask.compute(p, t))
        fastmse.set_num_threads(workers)
        local_value = float(fastmse.mse(p_np, t_np))
        local, distributed = [], []
        for _ in range(repeat):
            local.append(_seconds(lambda: fastmse.mse(p_np, t_np)))
            distributed.append(_seconds(lambda: fastmse.mse(p, t).compute()))
    local_s, dask_s = statistics.median(local), statistics.median(distributed)
    ratio = statistics.median(one / many for one, many in zip(local, distributed, strict=True))
    print(
        f"{elements:,} float32 elements per input, {nbytes / 2**20:.0f} MiB read, chunks of {chunk:,}, {repeat} pairs"
    )
    print(f"one process, {workers} threads      {local_s * 1e3:8.2f} ms  {nbytes / local_s / 1e9:6.2f} GB/s (median)")
    print(f"dask, {workers} worker processes   {dask_s * 1e3:8.2f} ms  {nbytes / dask_s / 1e9:6.2f} GB/s (median)")
    print(f"dask throughput per core / one process's per core: {ratio:.2f} (median of pairs; target >= 0.70)")
    print(f"loss: dask {dask_value!r}, one process {local_value!r}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
