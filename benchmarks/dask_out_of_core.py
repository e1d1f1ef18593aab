"""Fit ARNRegressor on a Dask array larger than any worker's memory limit.

Run: ``python benchmarks/dask_out_of_core.py [n_rows]``. Starts a LocalCluster
of 2 single-threaded worker processes with a small ``memory_limit``, generates
the data lazily with ``dask.array.random`` (it never exists in one piece), fits,
and prints the time and the peak resident memory of each worker. Needs the
``dask`` extra: ``pip install arn-sklearn[dask]``.
"""

import resource
import sys
import time

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

from arn_sklearn import ARNRegressor

MEMORY_LIMIT = "400MiB"


def peak_rss_mib():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(n_rows=8_000_000, n_features=8, chunk_rows=100_000):
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, memory_limit=MEMORY_LIMIT, dashboard_address=None
    )
    with Client(cluster) as client:
        rs = da.random.RandomState(0)
        X = rs.normal(size=(n_rows, n_features), chunks=(chunk_rows, n_features))
        y = (
            da.abs(X[:, 0])
            + X[:, 1] * (X[:, 2] > 0)
            + 0.1 * rs.normal(size=n_rows, chunks=chunk_rows)
        )
        data_mib = (X.nbytes + y.nbytes) / 2**20
        print(
            f"data: {n_rows} x {n_features} float64 + y = {data_mib:.0f} MiB, "
            f"{X.numblocks[0]} blocks; 2 workers with memory_limit={MEMORY_LIMIT} each"
        )
        base = client.run(peak_rss_mib)
        tic = time.perf_counter()
        # A small batch_size bounds the lifted chunk (rows x 144 doubles) on each worker.
        model = ARNRegressor(16, alpha=1.0, batch_size=8192, random_state=0).fit(X, y)
        fit_s = time.perf_counter() - tic
        peaks = client.run(peak_rss_mib)
        print(f"fit: {fit_s:.1f} s ({n_rows / fit_s / 1e6:.2f} M rows/s)")
        for addr, peak in peaks.items():
            start = base.get(addr, float("nan"))  # nan: the worker was restarted
            print(f"  worker {addr}: peak RSS {peak:.0f} MiB (at start {start:.0f} MiB)")
        X_test = X[:200_000].compute()
        y_test = y[:200_000].compute()
        pred = model.predict(X[:200_000])
        print(
            f"R^2 on the first 200,000 rows: {model.score(X_test, y_test):.4f}; "
            f"lazy predict matches: {np.allclose(pred.compute(), model.predict(X_test))}"
        )
    cluster.close()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
