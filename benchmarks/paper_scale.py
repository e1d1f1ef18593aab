"""The paper's scale on this machine: 5M x 30 -> 81 outputs, 1024 anchors, top_k=4.

``python benchmarks/paper_scale.py [--n 5000000] [--m 1024] [--k 4] [--data gaussian]
[--estimator]`` prints the time of each stage (anchors, softness, assignment,
accumulation, solve, predict on held-out rows), the test R^2, the stored anchor
pairs and the peak RSS next to the data's own size.

By default it drives the kernels directly (the estimator's pipeline for top-k is
being rewired): anchors by MiniBatchKMeans on a bounded subsample,
``auto_softness(top_k=k)``, :class:`BlockSparseStatistics` accumulation over
``top_k_assignments`` chunks, its solve, ``predict_top_k``. ``--estimator`` fits
``ARNRegressor(n_anchors=m, top_k=k)`` instead.
"""

import argparse
import os
import resource
import sys
import time

import numpy as np

# This checkout's package, not the installed one (as bench_kernels.py).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_data(n, d=30, t=81, kind="gaussian", seed=0, chunk=500_000):
    """``n`` rows, float64, built in chunks (no n-sized temporaries).

    ``gaussian``: X ~ N(0, I) as ``benchmarks/scale_target.py``; ``clustered``:
    200 overlapping Gaussian clusters, centres N(0, 9 I), unit noise (issue 19);
    ``separated``: 64 clusters with centres N(0, 100 I). Targets: ``t`` smooth
    mixtures of four non-linear functions of projections of ``X``.
    """
    rng = np.random.default_rng(seed)
    X = np.empty((n, d))
    Y = np.empty((n, t))
    V = rng.normal(size=(d, 4)) / np.sqrt(d)
    R = rng.normal(size=(4, t))
    n_clusters, spread = (64, 10.0) if kind == "separated" else (200, 3.0)
    centers = spread * rng.normal(size=(n_clusters, d))
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        Xc = rng.standard_normal(size=(e - s, d))
        if kind != "gaussian":
            Xc += centers[rng.integers(0, n_clusters, e - s)]
        X[s:e] = Xc
        P = Xc @ V
        F = np.stack([np.sin(2 * P[:, 0]), np.abs(P[:, 1]), P[:, 2] * np.tanh(P[:, 3]), P[:, 0]], 1)
        Y[s:e] = F @ R + 0.05 * rng.standard_normal(size=(e - s, t))
    return X, Y


def make_patch_data(n, d=30, projection=None, offsets=None, seed=0):
    """``n`` x3 super-resolution rows of the scikit-image photographs (the paper's setting).

    A+ gradient features of the bicubic mid-resolution patches (taken every 3
    pixels), PCA to ``d`` dimensions and unit norm -> the 81 HR residual pixels
    over the feature norm (A+'s normalisation, as ``SuperResolver`` fits). Rows come from
    the photographs under 4 rotations x 2 flips, repeated at the 9 sub-pixel
    offsets of the HR crop until ``n`` rows are filled (5M rows need about 2 of
    the 9). Built image by image into preallocated arrays: no ``n``-sized raw
    feature matrix. ``projection`` (raw features -> ``d``) defaults to the PCA
    of the photographs; ``offsets`` (``(dy, dx)`` pairs), to all 9 in row-major
    order. Returns ``X, Y, projection``.
    """
    from arn_sklearn.superres import (
        TRAIN_IMAGES,
        build_training_set,
        degrade,
        extract_patches,
        gradient_patch_features,
        load_skimage_images,
        luminance,
        modcrop,
    )
    from arn_sklearn.superres._aplus import normalise_rows, target_scales

    photos = [luminance(im) for im in load_skimage_images(TRAIN_IMAGES).values()]
    if projection is None:
        features, _, _ = build_training_set(
            photos, 3, energy=0.99999, max_patches_per_image=20_000, random_state=seed
        )
        if features.n_components_ < d:
            raise RuntimeError(f"the patch PCA kept {features.n_components_} < {d} dimensions")
        projection = features.components_[:, :d]
    X = np.empty((n, d))
    Y = np.empty((n, 81))
    filled = 0
    for dy, dx in offsets or [(dy, dx) for dy in range(3) for dx in range(3)]:
        for photo in photos:
            for turn in range(8):
                hr = np.rot90(photo[dy:, dx:], turn % 4)
                hr = modcrop(hr[:, ::-1] if turn >= 4 else hr, 3)
                _, mid = degrade(np.ascontiguousarray(hr), 3)
                # Unit-norm features, targets over the same norm: as SuperResolver
                # (and A+) fit them, so that anchors see patch shape, not contrast.
                rows, norms = normalise_rows(gradient_patch_features(mid, 3) @ projection)
                take = min(len(rows), n - filled)
                X[filled : filled + take] = rows[:take]
                Y[filled : filled + take] = (
                    extract_patches(hr - mid, 3)[:take] / target_scales(norms[:take])[:, None]
                )
                filled += take
                if filled == n:
                    return X, Y, projection
    raise ValueError(f"the photographs give fewer than {n} patch rows ({filled})")


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_kernels(
    X,
    Y,
    X_test,
    Y_test,
    m,
    k,
    alpha,
    chunk,
    kmeans_rows,
    no_solve=False,
    seed=0,
    linear_solver=None,
):
    from array_api_compat import array_namespace
    from sklearn.cluster import MiniBatchKMeans

    from arn_sklearn._anchors._init import auto_softness
    from arn_sklearn._kernels._lifting import iter_chunks
    from arn_sklearn._kernels._solve import centered_rhs
    from arn_sklearn._kernels._topk import predict_top_k, top_k_assignments
    from arn_sklearn._model._blocksparse import BlockSparseStatistics

    xp = array_namespace(X)
    times = {}
    rng = np.random.RandomState(seed)
    tic = time.perf_counter()
    sub = np.sort(rng.choice(X.shape[0], size=min(kmeans_rows, X.shape[0]), replace=False))
    kmeans = MiniBatchKMeans(m, n_init=1, batch_size=8192, max_iter=20, random_state=seed)
    anchors = kmeans.fit(X[sub]).cluster_centers_
    times["anchors"] = time.perf_counter() - tic
    tic = time.perf_counter()
    softness = auto_softness(X, anchors, "euclidean", xp, rng, top_k=k)
    times["softness"] = time.perf_counter() - tic
    assign_time = [0.0]

    def assign(chunk_X):
        t0 = time.perf_counter()
        out = top_k_assignments(chunk_X, anchors, "euclidean", softness, k, xp)
        assign_time[0] += time.perf_counter() - t0
        return out

    tic = time.perf_counter()
    stats = BlockSparseStatistics.zeros(m, X.shape[1], Y.shape[1], xp).accumulate(
        iter_chunks(X, Y, np.ones(X.shape[0]), chunk), assign, xp
    )
    total = time.perf_counter() - tic
    times["assignment"] = assign_time[0]
    times["accumulation"] = total - assign_time[0]
    tic = time.perf_counter()
    info = {
        "pairs": stats.pair_keys.size,
        "pair share": round(stats.pair_keys.size / (m * (m + 1) / 2), 4),
        "solver": stats.choose_solver(alpha),
        "softness": round(softness, 4),
    }
    times["solver choice"] = time.perf_counter() - tic
    print(f"stages so far: {times}; {info}; peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    if no_solve:
        return times, None, info
    tic = time.perf_counter()
    if linear_solver is not None:
        stats.linear_solver = info["solver"] = linear_solver
    if info["solver"] == "iterative":
        factor = stats.factorize(alpha, xp)
        rhs, y_mean = centered_rhs(stats, xp)
        W = factor.solve(rhs)
        info["CG iterations"] = factor.n_iter_
    else:
        W, y_mean = stats.solve(alpha, xp)
    times["solve"] = time.perf_counter() - tic
    tic = time.perf_counter()
    parts = []
    for s in range(0, X_test.shape[0], chunk):
        Xc = X_test[s : s + chunk]
        idx, vals = top_k_assignments(Xc, anchors, "euclidean", softness, k, xp)
        parts.append(predict_top_k(Xc, idx, vals, W, xp) + y_mean)
    pred = np.concatenate(parts)
    times["predict"] = time.perf_counter() - tic
    return times, pred, info


def run_estimator(X, Y, X_test, m, k, alpha):
    from arn_sklearn import ARNRegressor

    model = ARNRegressor(n_anchors=m, top_k=k, alpha=alpha, random_state=0, verbose=1)
    tic = time.perf_counter()
    model.fit(X, Y)
    times = {"fit": time.perf_counter() - tic}
    tic = time.perf_counter()
    pred = model.predict(X_test)
    times["predict"] = time.perf_counter() - tic
    return times, pred, {}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000_000)
    parser.add_argument("--m", type=int, default=1024)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--d", type=int, default=30)
    parser.add_argument("--t", type=int, default=81)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--n-test", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=262_144)
    parser.add_argument("--kmeans-rows", type=int, default=65_536)
    parser.add_argument(
        "--data", choices=["gaussian", "clustered", "separated", "patches"], default="gaussian"
    )
    parser.add_argument("--estimator", action="store_true")
    parser.add_argument("--no-solve", action="store_true", help="stop after the accumulation")
    parser.add_argument(
        "--linear-solver", choices=["dense", "sparse", "iterative"], help="override the choice"
    )
    args = parser.parse_args()
    tic = time.perf_counter()
    if args.data == "patches":
        # Held-out rows: the last sub-pixel offset, which 5M training rows do not reach.
        X, Y, projection = make_patch_data(args.n, args.d, offsets=[(0, 0), (0, 1), (0, 2)])
        X_test, Y_test, _ = make_patch_data(args.n_test, args.d, projection, offsets=[(2, 2)])
    else:
        X, Y = make_data(args.n + args.n_test, args.d, args.t, args.data)
        X, Y, X_test, Y_test = X[: args.n], Y[: args.n], X[args.n :], Y[args.n :]
    data_gib = (X.nbytes + Y.nbytes + X_test.nbytes + Y_test.nbytes) / 2**30
    print(
        f"data {args.n} x {args.d} -> {args.t} ({args.data}): {data_gib:.2f} GiB, "
        f"made in {time.perf_counter() - tic:.1f} s; RSS after {peak_rss_gib():.2f} GiB"
    )
    rss_data = peak_rss_gib()
    if args.estimator:
        times, pred, info = run_estimator(X, Y, X_test, args.m, args.k, args.alpha)
    else:
        times, pred, info = run_kernels(
            X,
            Y,
            X_test,
            Y_test,
            args.m,
            args.k,
            args.alpha,
            args.chunk,
            args.kmeans_rows,
            args.no_solve,
            linear_solver=args.linear_solver,
        )
    if pred is None:
        print(f"peak RSS {peak_rss_gib():.2f} GiB; data {data_gib:.2f} GiB")
        return
    resid = ((Y_test - pred) ** 2).sum()
    r2 = 1 - resid / ((Y_test - Y_test.mean(axis=0)) ** 2).sum()
    fit = sum(v for name, v in times.items() if name != "predict")
    print(f"m={args.m} top_k={args.k}: " + ", ".join(f"{a} {b:.1f} s" for a, b in times.items()))
    print(f"fit {fit:.1f} s; test R^2 {r2:.4f}; " + ", ".join(f"{a} {b}" for a, b in info.items()))
    print(
        f"peak RSS {peak_rss_gib():.2f} GiB = data {data_gib:.2f} GiB "
        f"+ {peak_rss_gib() - rss_data:.2f} GiB over the RSS after building the data"
    )


if __name__ == "__main__":
    main()
