"""Ratios of the issue-12 kernels against BLAS/LAPACK, each measured in this one run.

``python benchmarks/bench_kernels.py [section ...]`` with sections ``blas``,
``assign``, ``accumulate``, ``dense``, ``sparse``, ``cg`` (default: all). Prints:

- a small dense solve right after a large GEMM, on numpy's LAPACK (ours) and on
  SciPy's (a second OpenBLAS and thread pool);

- assignment of a chunk (65,536 x 30 rows, 1024 anchors) over the time of its
  similarity GEMM ``X @ C.T`` alone: dense softmax, top-4, top-4 + predict; then
  the fit's anchors, softness and top-4 assignment stages on 1M rows of
  ``paper_scale.py``'s ``patches``, ``clustered`` and ``gaussian`` data, the
  assignment over one dgemm of its flops (``ARN_BENCH_KINDS``, ``ARN_BENCH_N``
  and ``ARN_BENCH_REFERENCE`` as below);
- block-sparse pair accumulation GFLOP/s on its ``n k^2 (d + 1)^2`` useful
  multiply-adds (x2 flops) over one large dgemm's GFLOP/s, on 1M rows of
  ``paper_scale.py``'s ``separated``, ``clustered``, ``gaussian`` and
  ``patches`` data (``ARN_BENCH_KINDS`` to choose, ``ARN_BENCH_N`` for the rows,
  ``ARN_BENCH_REFERENCE`` to time another checkout in the same run);
- the dense solve (``solve_ridge(..., overwrite=True)``) rate over a bare LAPACK
  ``dpotrf`` of the same size, and over the former blocked Cholesky;
- the sparse solve against the dense Cholesky of the same statistics: time and
  agreement, plus SuperLU's effective GFLOP/s over dpotrf's (the calibration of
  ``_SUPERLU_SLOWDOWN``).

Timings on a shared machine are noisy: each ratio is the best of a few repeats
of both of its terms, taken back to back.
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arn_sklearn._kernels._pair_gram as pair_gram
from arn_sklearn._kernels._assignment import similarity, soft_assignments
from arn_sklearn._kernels._block_cg import BlockRows
from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._solve import (
    _potrf_lower_inplace,
    blocked_cholesky_solve,
    centered_rhs,
    solve_ridge,
)
from arn_sklearn._kernels._topk import predict_top_k, top_k_assignments
from arn_sklearn._model._blocksparse import BlockSparseStatistics
from arn_sklearn._model._statistics import SufficientStatistics
from arn_sklearn._utils._threads import single_threaded_blas

XP = np  # numpy is its own array namespace for these kernels (array_api_compat wraps it)


def best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def clustered(n, d=30, t=81, n_clusters=300, seed=0, spread=3.0):
    """Gaussian clusters in ``d`` dimensions; ``t`` smooth targets."""
    rng = np.random.default_rng(seed)
    centers = spread * rng.normal(size=(n_clusters, d))
    X = centers[rng.integers(0, n_clusters, n)] + rng.normal(size=(n, d))
    V = rng.normal(size=(d, 4)) / np.sqrt(d)
    P = X @ V
    base = np.stack([np.sin(P[:, 0]), np.abs(P[:, 1]), P[:, 2] * np.tanh(P[:, 3])], 1)
    Y = base @ rng.normal(size=(3, t)) + 0.05 * rng.normal(size=(n, t))
    return X, Y


def dgemm_gflops(size=3000):
    A = np.random.default_rng(0).normal(size=(size, size))
    return 2 * size**3 / best(lambda: A @ A) / 1e9


def assign_section(n=65_536, m=1024, d=30, k=4):
    X, _ = clustered(n + m, d, 1)
    X, C = X[:n], X[n:]
    W = np.random.default_rng(1).normal(size=(m * (d + 1), 81))
    idx, vals = top_k_assignments(X, C, "euclidean", 0.5, k, XP)
    gemm = best(lambda: X @ C.T)
    rows = [
        ("similarity (euclidean)", lambda: similarity(X, C, "euclidean", XP)),
        ("dense soft_assignments", lambda: soft_assignments(X, C, "euclidean", 0.5, XP)),
        ("top-4 assignments", lambda: top_k_assignments(X, C, "euclidean", 0.5, k, XP)),
        ("predict_top_k (81 outputs)", lambda: predict_top_k(X, idx, vals, W, XP)),
    ]
    print(f"\n[assign] chunk {n} x {d}, {m} anchors; GEMM X @ C.T {gemm * 1e3:.1f} ms")
    for name, fn in rows:
        t = best(fn)
        print(f"  {name:28s} {t * 1e3:8.1f} ms  = {t / gemm:5.2f} x GEMM")
    assign_stages()


def assign_stages(n=1_000_000, m=1024, d=30, k=4, chunk=262_144, kinds=None):
    """The fit's first three stages on ``paper_scale.py``'s data, next to one dgemm.

    Per data kind (``ARN_BENCH_KINDS``, default patches, clustered, gaussian;
    ``ARN_BENCH_N`` rows): anchors as ``paper_scale.py`` (MiniBatchKMeans on
    65,536 rows), ``auto_softness(top_k=k)``, and ``top_k_assignments`` over
    ``chunk``-row chunks; the assignment's time over that of its flops
    (``2 n (d + 2) m``) at the rate of one large dgemm measured in the same run.
    ``ARN_BENCH_REFERENCE=/path/to/checkout`` also times that checkout's
    softness and assignment, back to back, and checks that they agree.
    """
    kinds = kinds or os.environ.get("ARN_BENCH_KINDS", "patches,clustered,gaussian").split(",")
    n = int(os.environ.get("ARN_BENCH_N", n))
    reference = os.environ.get("ARN_BENCH_REFERENCE")
    print(f"\n[assign] stages at {n} x {d}, {m} anchors, top_k={k}, chunks of {chunk} rows")
    for kind in kinds:
        _assign_stages_kind(kind, n, m, d, k, chunk, reference)


def _assign_stages_kind(kind, n, m, d, k, chunk, reference):
    import importlib

    from array_api_compat import array_namespace
    from paper_scale import make_data, make_patch_data
    from sklearn.cluster import MiniBatchKMeans

    from arn_sklearn._anchors._init import auto_softness

    if kind == "patches":
        X, _, _ = make_patch_data(n, d, offsets=[(0, 0), (0, 1), (0, 2)])
    else:
        X, _ = make_data(n, d, 1, kind)
    xp = array_namespace(X)
    tic = time.perf_counter()
    sub = np.sort(np.random.RandomState(0).choice(n, size=min(65_536, n), replace=False))
    kmeans = MiniBatchKMeans(m, n_init=1, batch_size=8192, max_iter=20, random_state=0)
    C = kmeans.fit(X[sub]).cluster_centers_
    anchors = time.perf_counter() - tic
    versions = {"ours": (auto_softness, top_k_assignments)}
    if reference:
        _reference_package(reference)
        versions["reference"] = (
            importlib.import_module("arn_reference._anchors._init").auto_softness,
            importlib.import_module("arn_reference._kernels._topk").top_k_assignments,
        )
    out = {}
    # Versions alternate, twice; the best wall time of each stage is kept (with
    # its CPU time): on a shared machine the load moves every term.
    for _ in range(2):
        for name, (softness_fn, assign_fn) in versions.items():
            tic, cpu = time.perf_counter(), time.process_time()
            K = softness_fn(X, C, "euclidean", xp, np.random.RandomState(0), top_k=k)
            softness = (time.perf_counter() - tic, time.process_time() - cpu)
            tic, cpu = time.perf_counter(), time.process_time()
            idx = [
                assign_fn(X[s : s + chunk], C, "euclidean", K, k, XP)[0] for s in range(0, n, chunk)
            ]
            assign = (time.perf_counter() - tic, time.process_time() - cpu)
            if name in out:
                softness, assign = min(softness, out[name][2]), min(assign, out[name][3])
            out[name] = (K, np.concatenate(idx), softness, assign)
    gemm = 2.0 * n * (d + 2) * m / (max(dgemm_gflops(), dgemm_gflops()) * 1e9)
    for name, (K, idx, softness, assign) in out.items():
        agree = ""
        if name != "ours":
            ours = out["ours"]
            rows = int(np.sum(np.any(idx != ours[1], axis=1)))
            agree = f"; softness equal: {K == ours[0]}, rows with other anchors: {rows}"
        print(
            f"  {kind:9s} {name:9s}: anchors {anchors:.2f} s, softness {softness[0]:.2f} s "
            f"(CPU {softness[1]:.2f}), assignment {assign[0]:.2f} s (CPU {assign[1]:.2f}) "
            f"= {assign[0] / gemm:.2f} x dgemm of its flops ({gemm:.2f} s); "
            f"stages {anchors + softness[0] + assign[0]:.2f} s{agree}",
            flush=True,
        )


def _reference_package(path):
    """The ``arn_sklearn`` package of another checkout, imported as ``arn_reference``."""
    import importlib.util

    init = os.path.join(path, "arn_sklearn", "__init__.py")
    spec = importlib.util.spec_from_file_location(
        "arn_reference", init, submodule_search_locations=[os.path.dirname(init)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["arn_reference"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("arn_reference._model._blocksparse").BlockSparseStatistics


def accumulate_section(n=1_000_000, m=1024, d=30, t=81, k=4, chunk=262_144, kinds=None):
    """Pair accumulation of ``paper_scale.py``'s data over one dgemm of its flop count.

    Per data kind: anchors and softness as ``paper_scale.py`` (MiniBatchKMeans on
    65,536 rows, ``auto_softness``), the top-k assignments computed once, then
    the accumulation alone timed. The environment variable
    ``ARN_BENCH_REFERENCE=/path/to/checkout`` also times that checkout's
    accumulation in the same run (e.g. ``main``, for a before/after ratio);
    ``ARN_BENCH_NUMPY=1`` also times this checkout's numpy path where the
    compiled pair kernel is built (its private switch ``_pair_gram.COMPILED``).
    """
    default = "separated,clustered,gaussian,patches"
    kinds = kinds or os.environ.get("ARN_BENCH_KINDS", default).split(",")
    n = int(os.environ.get("ARN_BENCH_N", n))
    reference = os.environ.get("ARN_BENCH_REFERENCE")
    versions = {"ours": BlockSparseStatistics}
    if os.environ.get("ARN_BENCH_NUMPY") == "1" and pair_gram.COMPILED:
        versions["ours, numpy path"] = "numpy"
    if reference:
        versions[f"reference {reference}"] = _reference_package(reference)
    print(f"\n[accumulate] {n} x {d} -> {t}, {m} anchors, top_k={k}, chunks of {chunk} rows")
    for kind in kinds:
        _accumulate_kind(kind, versions, n, m, d, t, k, chunk)


def _accumulate_kind(kind, versions, n, m, d, t, k, chunk):
    from array_api_compat import array_namespace
    from paper_scale import make_data, make_patch_data
    from sklearn.cluster import MiniBatchKMeans

    from arn_sklearn._anchors._init import auto_softness

    if kind == "patches":
        # paper_scale.py --data patches: x3 patch features of the photographs.
        X, Y, _ = make_patch_data(n, d, offsets=[(0, 0), (0, 1), (0, 2)])
    else:
        X, Y = make_data(n, d, t, kind)
    rng = np.random.RandomState(0)
    sub = np.sort(rng.choice(n, size=min(65_536, n), replace=False))
    kmeans = MiniBatchKMeans(m, n_init=1, batch_size=8192, max_iter=20, random_state=0)
    C = kmeans.fit(X[sub]).cluster_centers_
    softness = auto_softness(X, C, "euclidean", array_namespace(X), rng, top_k=k)
    assigned = [
        top_k_assignments(X[s : s + chunk], C, "euclidean", softness, k, XP)
        for s in range(0, n, chunk)
    ]
    w = np.ones(n)

    def run(cls):
        parts = iter(assigned)
        compiled = pair_gram.COMPILED
        if cls == "numpy":
            cls, pair_gram.COMPILED = BlockSparseStatistics, False
        try:
            return cls.zeros(m, d, t, XP).accumulate(
                iter_chunks(X, Y, w, chunk), lambda _: next(parts), XP
            )
        finally:
            pair_gram.COMPILED = compiled

    useful = 2.0 * n * k * k * (d + 1) ** 2
    # Back to back, best of two each: the load of a shared machine moves both.
    gflops = dgemm_gflops()
    rates = {}
    for name, cls in versions.items():
        rates[name] = useful / best(lambda c=cls: run(c), repeat=2) / 1e9
    gflops = max(gflops, dgemm_gflops())
    pairs = run(BlockSparseStatistics).pair_keys.size
    for name, rate in rates.items():
        print(
            f"  {kind:9s} {name}: {useful / rate / 1e9:.2f} s, {pairs} pairs; "
            f"{rate:.1f} GFLOP/s on n k^2 (d+1)^2 vs dgemm {gflops:.1f} GFLOP/s "
            f"= {rate / gflops:.2f} of dgemm",
            flush=True,
        )


def dense_section(p=8192, t=81):
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(p + 100, p)) / np.sqrt(p)
    gram = Z.T @ Z
    del Z
    stats = SufficientStatistics(
        gram=gram,
        zty=rng.normal(size=(p, t)),
        z_sum=np.zeros(p),
        y_sum=np.zeros(t),
        y_sq_sum=np.ones(t),
        weight_sum=1.0,
        n_samples=1,
    )
    flops = p**3 / 3

    def raw():
        A = np.array(gram, order="F")
        A.flat[:: p + 1] += 1e-1
        tic = time.perf_counter()
        _potrf_lower_inplace(A)
        return time.perf_counter() - tic

    def ours():
        s = stats.map_arrays(lambda a: np.array(a, order="F"))
        tic = time.perf_counter()
        solve_ridge(s, 1e-1, XP, overwrite=True)
        return time.perf_counter() - tic

    def old():
        A = np.array(gram, order="F")
        A.flat[:: p + 1] += 1e-1
        rhs, _ = centered_rhs(stats, XP)
        tic = time.perf_counter()
        blocked_cholesky_solve(A, rhs)
        return time.perf_counter() - tic

    t_raw = min(raw() for _ in range(2))
    t_ours = min(ours() for _ in range(2))
    t_old = old()
    print(
        f"\n[dense] p={p}: dpotrf {flops / t_raw / 1e9:.1f} GFLOP/s ({t_raw:.2f} s); "
        f"solve_ridge(overwrite=True) {flops / t_ours / 1e9:.1f} GFLOP/s ({t_ours:.2f} s, "
        f"incl. potrs of {t} targets) = {t_raw / t_ours:.2f} of dpotrf; former blocked "
        f"Cholesky {flops / t_old / 1e9:.1f} GFLOP/s = {t_raw / t_old:.2f} of dpotrf"
    )


def sparse_section(n=200_000, m=256, d=30, t=81, k=4, n_clusters=300, spread=3.0):
    import arn_sklearn._model._blocksparse as bs

    X, Y = clustered(n + 20_000, d, t, n_clusters=n_clusters, spread=spread)
    from sklearn.cluster import MiniBatchKMeans

    C = MiniBatchKMeans(m, n_init=1, random_state=0, batch_size=4096).fit(X[n:]).cluster_centers_
    X, Y = X[:n], Y[:n]
    stats = BlockSparseStatistics.zeros(m, d, t, XP).accumulate(
        iter_chunks(X, Y, np.ones(n), 100_000),
        lambda c: top_k_assignments(c, C, "euclidean", 0.5, k, XP),
        XP,
    )
    p = stats.n_lifted
    perm, sparse_flops = stats._anchor_ordering()
    tic = time.perf_counter()
    factor = bs.SparseFactor(stats._sparse_matrix(1e-1), 1e-1, like=stats.zty, xp=XP, perm=perm)
    rhs, _ = centered_rhs(stats, XP)
    W = factor.solve(rhs)
    t_sparse = time.perf_counter() - tic
    print(
        f"\n[sparse] m={m}, {n_clusters} clusters (spread {spread}): p={p}, "
        f"{stats.pair_keys.size} pairs, sparse factor+solve {t_sparse:.2f} s, estimated "
        f"{sparse_flops / 1e9:.1f} GFLOP = {sparse_flops / t_sparse / 1e9:.2f} GFLOP/s",
        flush=True,
    )
    dense = stats.to_dense()
    A = np.array(dense.gram, order="F")
    A.flat[:: p + 1] += 1e-1
    tic = time.perf_counter()
    _potrf_lower_inplace(A)
    t_potrf = time.perf_counter() - tic
    tic = time.perf_counter()
    W_dense, _ = solve_ridge(dense, 1e-1, XP)
    t_dense = time.perf_counter() - tic
    rel = np.linalg.norm(W - W_dense) / np.linalg.norm(W_dense)
    superlu_rate = sparse_flops / t_sparse / 1e9
    potrf_rate = p**3 / 3 / t_potrf / 1e9
    print(
        f"\n[sparse] m={m}, d={d}, top_k={k}, {n} rows, {n_clusters} clusters (spread "
        f"{spread}): p={p}, {stats.pair_keys.size} pairs "
        f"({stats.pair_keys.size / (m * (m + 1) / 2):.1%} of the upper triangle); sparse "
        f"factor+solve {t_sparse:.2f} s vs dense solve_ridge {t_dense:.2f} s "
        f"(= {t_dense / t_sparse:.1f}x); relative difference {rel:.1e}; SuperLU "
        f"{superlu_rate:.2f} GFLOP/s (estimated flops) vs dpotrf {potrf_rate:.1f} = slowdown "
        f"{potrf_rate / superlu_rate:.1f}; rule picks "
        f"{stats.choose_solver(1e-1)}"
    )


def blas_section(p=1344, t=81, size=3000, repeat=5):
    """A small solve right after a large GEMM: numpy's LAPACK against SciPy's.

    numpy and SciPy wheels each bundle an OpenBLAS; the fit's GEMMs run on
    numpy's, so a solve on SciPy's wakes a second thread pool on the same cores.
    """
    from scipy import linalg

    rng = np.random.default_rng(0)
    A = rng.normal(size=(size, size))
    Zs = rng.normal(size=(4 * p, p))
    stats = SufficientStatistics(
        gram=Zs.T @ Zs,
        zty=rng.normal(size=(p, t)),
        z_sum=np.zeros(p),
        y_sum=np.zeros(t),
        y_sq_sum=np.ones(t),
        weight_sum=1.0,
        n_samples=1,
    )

    def after_gemm(solve):
        times = []
        for _ in range(repeat):
            A @ A
            tic = time.perf_counter()
            solve()
            times.append(time.perf_counter() - tic)
        return min(times), float(np.median(times))

    def scipy_solve():
        system = stats.gram + np.eye(p)
        linalg.cho_solve(linalg.cho_factor(system, check_finite=False), stats.zty)

    ours = after_gemm(lambda: solve_ridge(stats, 1.0, XP))
    scipys = after_gemm(scipy_solve)
    print(
        f"\n[blas] {p}-unknown solve right after a {size}-square GEMM (min / median of "
        f"{repeat}): solve_ridge (numpy's LAPACK) {ours[0] * 1e3:.0f} / {ours[1] * 1e3:.0f} ms; "
        f"scipy cho_factor+cho_solve {scipys[0] * 1e3:.0f} / {scipys[1] * 1e3:.0f} ms"
    )


def cg_section(n=200_000, m=1024, d=30, t=81, k=4):
    """The Gram product of CG (in place) over one dgemm's rate, and a solve each way.

    Both products, in the same run: the compiled kernel (when built) and numpy's
    (``BlockRows.use_compiled = False``), each as wall-clock GFLOP/s over
    dgemm's on all threads, and per CPU-second over one-thread dgemm's (the
    steadier figure on a shared machine). Also the same product on a float32
    copy of the blocks (what a mixed-precision CG would run; not used by the
    package), its rate and its relative error.
    """
    from arn_sklearn._model._blocksparse import IterativeFactor

    X, Y = clustered(n + m, d, t, n_clusters=200)
    C, X, Y = X[n:], X[:n], Y[:n]
    stats = BlockSparseStatistics.zeros(m, d, t, XP).accumulate(
        iter_chunks(X, Y, np.ones(n), 100_000),
        lambda c: top_k_assignments(c, C, "euclidean", 0.5, k, XP),
        XP,
    )
    rows = BlockRows(stats.pair_keys, stats.blocks, m)
    V = np.random.default_rng(0).normal(size=(stats.n_lifted, t))
    gflops = dgemm_gflops()
    A = np.random.default_rng(0).normal(size=(2000, 2000))
    rows32 = BlockRows(stats.pair_keys, stats.blocks.astype(np.float32), m)
    paths = ["compiled", "numpy"] if rows.use_compiled else ["numpy"]
    figures = []
    with single_threaded_blas():
        cpu = time.process_time()
        A @ A
        gflops1 = 2 * 2000**3 / (time.process_time() - cpu) / 1e9
        for path in paths:
            rows.use_compiled = path == "compiled"
            wall = best(lambda: rows.matmul(V, n_threads=2))
            cpu = time.process_time()
            rows.matmul(V, n_threads=2)
            cpu = time.process_time() - cpu
            rate = rows.flops(t) / wall / 1e9
            figures.append(
                f"{path} {rate:.1f} GFLOP/s = {rate / gflops:.2f} of dgemm, "
                f"{rows.flops(t) / cpu / 1e9 / gflops1:.2f} per CPU-second of one-thread dgemm"
            )
        rate32 = rows.flops(t) / best(lambda: rows32.matmul(V, n_threads=2)) / 1e9
        exact = rows.matmul(V, n_threads=2)
        error32 = np.linalg.norm(rows32.matmul(V, n_threads=2) - exact) / np.linalg.norm(exact)
    rhs, _ = centered_rhs(stats, XP)
    solves = []
    for method in ("block", "columns"):
        factor = IterativeFactor(stats, 1.0, xp=XP, method=method)
        tic = time.perf_counter()
        factor.solve(rhs)
        solves.append(f"{method} {factor.n_iter_} iterations, {time.perf_counter() - tic:.1f} s")
    print(
        f"\n[cg] m={m}, {stats.pair_keys.size} pairs, {t} targets; dgemm {gflops:.1f} GFLOP/s, "
        f"one thread {gflops1:.1f}; Gram product in place: {'; '.join(figures)}; on float32 "
        f"blocks {rate32 / gflops:.2f} of dgemm, relative error {error32:.1e}; CG at alpha 1: "
        f"{'; '.join(solves)}; the cost model picks {stats.choose_solver(1.0)}; "
        f"load {os.getloadavg()[0]:.1f}"
    )


SECTIONS = {
    "blas": blas_section,
    "cg": cg_section,
    "assign": assign_section,
    "accumulate": accumulate_section,
    "dense": dense_section,
    "sparse": sparse_section,
    # Well-separated clusters: anchors pair up only within their cluster.
    "sparse-separated": lambda: sparse_section(n=200_000, m=512, n_clusters=64, spread=10.0),
}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(SECTIONS):
        SECTIONS[name]()
