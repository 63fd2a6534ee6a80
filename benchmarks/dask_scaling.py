"""Dask on a LocalCluster against one process: throughput per core of fastmse.mse.

    python benchmarks/dask_scaling.py [ELEMENTS] [WORKERS]

The inputs are generated on the workers and persisted there, so the timing is the
per-chunk kernels plus Dask's scheduling and tree reduction, not data transfer.
"""

from __future__ import annotations

import statistics
import sys
import time

import dask.array as da
import fastmse
import numpy as np
from distributed import Client, LocalCluster


def _median_seconds(run, repeat: int = 7) -> float:
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(elements: int = 1 << 26, workers: int = 2) -> None:
    chunk = 1 << 25
    nbytes = 2 * elements * 4
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        # one OpenMP thread per worker: a worker is a core
        client.run(fastmse.set_num_threads, 1)
        rng = da.random.default_rng(0)
        p = rng.standard_normal(elements, chunks=chunk, dtype=np.float32).persist()
        t = rng.standard_normal(elements, chunks=chunk, dtype=np.float32).persist()
        dask_s = _median_seconds(lambda: fastmse.mse(p, t).compute())
        dask_value = float(fastmse.mse(p, t).compute())
    rng_np = np.random.default_rng(0)
    p_np = rng_np.standard_normal(elements, dtype=np.float32)
    t_np = rng_np.standard_normal(elements, dtype=np.float32)
    fastmse.set_num_threads(workers)
    local_s = _median_seconds(lambda: fastmse.mse(p_np, t_np))
    print(f"{elements:,} float32 elements per input, {nbytes / 2**20:.0f} MiB read, chunks of {chunk:,}")
    print(f"one process, {workers} threads      {local_s * 1e3:8.2f} ms  {nbytes / local_s / 1e9:6.2f} GB/s")
    print(f"dask, {workers} worker processes   {dask_s * 1e3:8.2f} ms  {nbytes / dask_s / 1e9:6.2f} GB/s")
    print(f"dask throughput per core / one process's per core: {local_s / dask_s:.2f} (target >= 0.70)")
    print(f"loss: dask {dask_value!r}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
