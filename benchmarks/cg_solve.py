"""Time the block-sparse CG solve on cached statistics (issue 19, the solve stage).

``python benchmarks/cg_solve.py --data patches --n 300000`` accumulates the
statistics of ``paper_scale.py``'s data once (1024 anchors, top_k=4, 30 -> 81),
caches them under ``--cache`` (default /tmp/cg), then times the solve at
``--alpha`` (default 1) with each ``--method`` of
:class:`~arn_sklearn._model._blocksparse.IterativeFactor` and compares its
training predictions ``G W`` with the reference solve's (per-column CG at
``rtol=1e-10``, cached too) in the energy norm. Prints iterations, seconds (and
CPU seconds: on a shared machine, the steadier figure) and peak RSS over the
statistics. ``paper_scale.py`` is imported for its data.

``--product compiled numpy`` times each method with each Gram product in the
same run (the compiled kernel, when built, and numpy's path,
``BlockRows.use_compiled = False``), after one product of each over one-thread
dgemm per CPU-second.

``--trace`` prints, after each block-CG iteration, the stopping rule's
estimate of the squared energy-norm error next to the true one (against the
reference) and the training predictions' true relative error
``||Z e|| / ||Z w||`` (one more Gram product per iteration; the largest over
the targets). ``--rtol`` overrides the tolerance.
"""

import argparse
import os
import pickle
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_stats(data, n, m=1024, k=4, chunk=262_144, kmeans_rows=65_536, seed=0):
    from array_api_compat import array_namespace
    from paper_scale import make_data, make_patch_data
    from sklearn.cluster import MiniBatchKMeans

    from arn_sklearn._anchors._init import auto_softness
    from arn_sklearn._kernels._lifting import iter_chunks
    from arn_sklearn._kernels._topk import top_k_assignments
    from arn_sklearn._model._blocksparse import BlockSparseStatistics

    if data == "patches":
        X, Y, _ = make_patch_data(n, 30, offsets=[(0, 0), (0, 1), (0, 2)])
    else:
        X, Y = make_data(n, 30, 81, data)
    xp = array_namespace(X)
    rng = np.random.RandomState(seed)
    sub = np.sort(rng.choice(n, size=min(kmeans_rows, n), replace=False))
    kmeans = MiniBatchKMeans(m, n_init=1, batch_size=8192, max_iter=20, random_state=seed)
    anchors = kmeans.fit(X[sub]).cluster_centers_
    softness = auto_softness(X, anchors, "euclidean", xp, rng, top_k=k)
    return BlockSparseStatistics.zeros(m, X.shape[1], Y.shape[1], xp).accumulate(
        iter_chunks(X, Y, np.ones(n), chunk),
        lambda c: top_k_assignments(c, anchors, "euclidean", softness, k, xp),
        xp,
    )


def load_stats(data, n, cache):
    path = os.path.join(cache, f"stats_{data}_{n}.pkl")
    if not os.path.exists(path):
        tic = time.perf_counter()
        stats = build_stats(data, n)
        with open(path, "wb") as f:
            pickle.dump(stats, f, protocol=4)
        print(f"built {path} in {time.perf_counter() - tic:.1f} s", flush=True)
    with open(path, "rb") as f:
        return pickle.load(f)


def trace(reference, product, size_ref, alpha):
    """Block CG's callback: the estimate against the true error, per iteration."""
    count = [0]

    def callback(X, active, estimate):
        count[0] += 1
        E = X - reference[:, active]
        eG = np.einsum("ij,ij->j", E, product(E))
        eA = eG + alpha * np.einsum("ij,ij->j", E, E)
        print(
            f"{count[0]:9d}  {estimate.max():.2e}  {(eA / size_ref[active]).max():.2e}"
            f"  {np.sqrt(eG / size_ref[active]).max():.2e}",
            flush=True,
        )

    return callback


def main():
    from array_api_compat import numpy as xp

    from arn_sklearn._kernels._block_cg import BlockRows
    from arn_sklearn._kernels._solve import centered_rhs
    from arn_sklearn._model._blocksparse import IterativeFactor
    from arn_sklearn._utils._threads import single_threaded_blas

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="patches")
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--cache", default="/tmp/cg")
    parser.add_argument(
        "--method", nargs="+", default=["auto"], choices=["auto", "block", "columns"]
    )
    parser.add_argument("--product", nargs="+", default=["compiled"], choices=["compiled", "numpy"])
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--rtol", type=float, default=None)
    args = parser.parse_args()
    stats = load_stats(args.data, args.n, args.cache)
    m = stats.n_anchors
    n_pairs = stats.pair_keys.size
    rss0 = peak_rss_gib()
    print(
        f"{args.data} {args.n} rows: {n_pairs} pairs ({n_pairs / (m * (m + 1) / 2):.1%}), "
        f"blocks {stats.blocks.nbytes / 2**30:.2f} GiB; RSS {rss0:.2f} GiB; "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rhs, _ = centered_rhs(stats, xp)
    evaluation = BlockRows(stats.pair_keys, stats.blocks, m)

    def product(W):
        # Training predictions' error: ||Z e||^2 = e^T G e.
        with single_threaded_blas():
            return evaluation.matmul(W, n_threads=2)

    rates = []
    with single_threaded_blas():
        A = np.random.default_rng(0).normal(size=(2000, 2000))
        cpu = time.process_time()
        A @ A
        dgemm1 = 2 * 2000**3 / (time.process_time() - cpu)
        V = np.random.default_rng(0).normal(size=(evaluation.shape[0], rhs.shape[1]))
        for path in args.product:
            evaluation.use_compiled = path == "compiled"
            tic, cpu = time.perf_counter(), time.process_time()
            evaluation.matmul(V, n_threads=2)
            tic, cpu = time.perf_counter() - tic, time.process_time() - cpu
            flops = evaluation.flops(V.shape[1])
            rates.append(f"{path} {tic:.2f} s, {flops / cpu / dgemm1:.2f} per CPU-second")
    evaluation.use_compiled = "compiled" in args.product
    print(f"Gram product of {V.shape[1]} columns over one-thread dgemm: {'; '.join(rates)}")
    reference = None
    if not args.no_reference:
        ref_path = os.path.join(args.cache, f"ref_{args.data}_{args.n}_{args.alpha}.npy")
        if os.path.exists(ref_path):
            reference = np.load(ref_path)
        else:
            stats.linear_solver = "iterative"
            factor = IterativeFactor(stats, args.alpha, xp=xp, rtol=1e-10, method="columns")
            reference = factor.solve(rhs)
            np.save(ref_path, reference)
        pred_ref = product(reference)
        size_ref = np.einsum("ij,ij->j", reference, pred_ref)
    if args.trace and reference is not None:
        print("iteration  estimate  true ||e||_A^2 (both over w^T G w)  predictions' error")
    for method, path in [(method, path) for method in args.method for path in args.product]:
        stats._block_rows_cache = None
        tic = time.perf_counter()
        factor = IterativeFactor(stats, args.alpha, xp=xp, method=method, rtol=args.rtol)
        factor.rows.use_compiled = path == "compiled"
        setup = time.perf_counter() - tic
        if args.trace and reference is not None:
            factor.callback = trace(reference, product, size_ref, args.alpha)
        tic, cpu = time.perf_counter(), time.process_time()
        W = factor.solve(rhs)
        solve, cpu = time.perf_counter() - tic, time.process_time() - cpu
        line = (
            f"{method} ({factor.method_used_} CG, {path} product): setup {setup:.1f} s, "
            f"{factor.n_iter_} iterations, {solve:.1f} s (CPU {cpu:.1f} s); "
            f"peak RSS +{peak_rss_gib() - rss0:.2f} GiB"
        )
        if reference is not None:
            pred = product(W)
            err = np.linalg.norm(pred - pred_ref, axis=0) / np.linalg.norm(pred_ref, axis=0)
            line += f"; predictions max rel. error {err.max():.1e}"
        print(line, f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
