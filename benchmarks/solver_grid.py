"""The block-sparse solver choice checked on a grid of anchor graphs (issue 19).

For each data kind and number of anchors it accumulates the top-k statistics
(30 -> 81, ``top_k=4``, anchors by MiniBatchKMeans, ``auto_softness``), times
every solver that can run on ``G + alpha I`` (each in a forked child, killed
after ``--timeout`` seconds), and prints what ``choose_linear_solver`` picks,
its estimates, and the ratio of the pick's time to the best measured one (the
issue's rule: never more than 2x).

    python benchmarks/solver_grid.py                       # the whole grid, ~10 min
    python benchmarks/solver_grid.py --kinds clustered --anchors 1024 --rows-per-anchor 300
    python benchmarks/solver_grid.py --product numpy        # CG without the compiled kernel

``--product numpy`` runs CG's Gram product on numpy's path, as where the
compiled extension is not built, and the cost model estimates that product
(the default, ``compiled``, is what ``BlockRows`` runs here).

Kinds: ``separated`` (64 far-apart clusters), ``clustered`` (200 overlapping
clusters), ``gaussian`` (isotropic N(0, I)), both from ``paper_scale.py``, and
``patches`` (x3 patch features of the scikit-image training photographs, the
first 30 PCA dimensions, 81 residual pixels; ``arn_sklearn.superres``). A cell
whose statistics would not fit in ``--max-stats-gib`` (isotropic data: most
pairs are stored) is reported and skipped.
"""

import argparse
import multiprocessing
import os
import time

import numpy as np
from array_api_compat import array_namespace
from paper_scale import make_data

from arn_sklearn._anchors._init import auto_softness
from arn_sklearn._kernels import _block_cg
from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._topk import top_k_assignments
from arn_sklearn._model._blocksparse import (
    _COMPONENT_MAX_SIZE,
    BlockSparseStatistics,
    estimate_solver_seconds,
)

D, T, K = 30, 81, 4


def patch_data(n, seed=0):
    """``n`` x3 patch rows (30 PCA dims -> 81 residual pixels), with flips/rotations."""
    from arn_sklearn.superres import TRAIN_IMAGES, build_training_set, load_skimage_images

    images = list(load_skimage_images(TRAIN_IMAGES).values())
    images = [np.rot90(im, r) for im in images for r in range(4)]
    images += [im[:, ::-1] for im in images]
    per_image = -(-n // len(images))
    _, X, Y = build_training_set(
        images, 3, energy=0.99999, max_patches_per_image=per_image, random_state=seed
    )
    if X.shape[1] < D:
        raise RuntimeError(f"the patch PCA kept {X.shape[1]} < {D} dimensions")
    return np.ascontiguousarray(X[:n, :D]), np.ascontiguousarray(Y[:n])


def statistics(kind, n, m, max_bytes, seed=0):
    """Top-k statistics of ``n`` rows of ``kind`` on ``m`` anchors, or None if too big."""
    from sklearn.cluster import MiniBatchKMeans

    if kind == "patches":
        X, Y = patch_data(n, seed)
    else:
        X, Y = make_data(n, D, T, kind, seed=seed)
    rng = np.random.RandomState(seed)
    sub = rng.choice(X.shape[0], size=min(32_768, X.shape[0]), replace=False)
    kmeans = MiniBatchKMeans(m, n_init=1, batch_size=8192, max_iter=10, random_state=seed)
    anchors = kmeans.fit(X[sub]).cluster_centers_
    xp = array_namespace(X)
    softness = auto_softness(X, anchors, "euclidean", xp, rng, top_k=K)

    def assign(chunk):
        return top_k_assignments(chunk, anchors, "euclidean", softness, K, xp)

    # Pilot on a sample: the distinct pairs grow with the rows, so this is a lower bound.
    idx, _ = assign(X[sub[:8192]])
    idx = np.sort(np.asarray(idx), axis=1)
    upper_i, upper_j = np.triu_indices(K)
    keys = np.unique(idx[:, upper_i] * m + idx[:, upper_j])
    pilot_bytes = 3 * keys.size * (D + 1) ** 2 * 8
    if pilot_bytes > max_bytes:
        return None, f"{keys.size} pairs in a 8192-row pilot: {pilot_bytes / 2**30:.1f} GiB"
    stats = BlockSparseStatistics.zeros(m, D, T, xp).accumulate(
        iter_chunks(X, Y, np.ones(X.shape[0]), 131_072), assign, xp
    )
    return stats, None


def _time_child(stats, alpha, solver, queue):
    stats.linear_solver = solver
    tic = time.perf_counter()
    xp = array_namespace(stats.zty)
    factor = stats.factorize(alpha, xp)
    setup = time.perf_counter() - tic
    from arn_sklearn._kernels._solve import centered_rhs

    rhs, _ = centered_rhs(stats, xp)
    factor.solve(rhs)
    total = time.perf_counter() - tic
    iterations = getattr(factor, "n_iter_", None)
    label = type(factor).__name__.replace("Factor", "").lower()
    queue.put((total, setup, iterations, label))


def time_solver(stats, alpha, solver, timeout):
    """``(seconds, setup seconds, CG iterations, factor kind)``, or None past ``timeout``."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_time_child, args=(stats, alpha, solver, queue))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        return None
    return queue.get() if child.exitcode == 0 else ("error", child.exitcode)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kinds", nargs="+", default=["separated", "clustered", "gaussian", "patches"]
    )
    parser.add_argument("--anchors", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--rows-per-anchor", type=int, default=150)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--max-stats-gib", type=float, default=2.0)
    parser.add_argument(
        "--solvers",
        nargs="+",
        default=["dense", "sparse", "iterative"],
        choices=("dense", "sparse", "iterative"),
        help="the solvers to time (the others are reported by their estimate)",
    )
    parser.add_argument(
        "--max-dense-gib", type=float, default=8.0, help="dense p x p matrices above: not run"
    )
    parser.add_argument("--product", default="compiled", choices=("compiled", "numpy"))
    args = parser.parse_args()
    if args.product == "numpy":
        # As without the extension: BlockRows and the cost model both see numpy's product.
        _block_cg._block_cg_gram = None
    elif not _block_cg.compiled_product():
        parser.error("the compiled Gram product is not available here (build_ext --inplace?)")
    print(f"Gram product: {args.product}; load {os.getloadavg()[0]:.1f}", flush=True)
    print(
        "| data | anchors | rows | pairs/anchor | largest component | pick | estimates (s) "
        "| dense | sparse | iterative | pick / best |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for m in args.anchors:
            n = args.rows_per_anchor * m
            stats, why = statistics(kind, n, m, args.max_stats_gib * 2**30)
            if stats is None:
                print(f"| {kind} | {m} | {n} | skipped: {why} |", flush=True)
                continue
            stats.linear_solver = "auto"
            pick = stats.choose_solver(args.alpha)
            estimates = estimate_solver_seconds(
                m, D, T, stats.pair_keys.shape[0], args.alpha, stats._fill_and_flops
            )
            component = int(np.bincount(stats._components()).max())
            times = {}
            for solver in ("dense", "sparse", "iterative"):
                p = m * (D + 1)
                too_big = 8 * p * p > args.max_dense_gib * 2**30 or estimates["dense"] > 600
                if solver not in args.solvers or (solver == "dense" and too_big):
                    times[solver] = "skipped"
                    continue
                times[solver] = time_solver(stats, args.alpha, solver, args.timeout)
            ran = {s: r for s, r in times.items() if isinstance(r, tuple) and r[0] != "error"}
            measured = {s: r[0] for s, r in ran.items()}
            best = min(measured.values()) if measured else float("nan")
            ratio = measured.get(pick, float("inf")) / best

            def cell(solver, times=times, estimates=estimates):
                r = times[solver]
                if r is None:
                    return f"> {args.timeout:.0f} s"
                if r == "skipped":
                    guess = estimates.get(solver)
                    return "not run" + (f" (est. {guess:.0f} s)" if guess is not None else "")
                if r[0] == "error":
                    return f"failed ({r[1]})"
                extra = f", {r[2]} it." if r[2] is not None else ""
                kind_name = f" {r[3]}" if solver == "sparse" else ""
                return f"{r[0]:.2f}{kind_name} (setup {r[1]:.2f}{extra})"

            est = ", ".join(f"{s[0]} {v:.3g}" for s, v in sorted(estimates.items()))
            print(
                f"| {kind} | {m} | {n} | {stats.pair_keys.shape[0] / m:.1f} | "
                f"{component * (D + 1)} of {_COMPONENT_MAX_SIZE} | {pick} | {est} | "
                f"{cell('dense')} | {cell('sparse')} | {cell('iterative')} | {ratio:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
