"""Block-Jacobi preconditioned CG on block-sparse ARN systems, and the solver choice."""

import platform
import warnings

import numpy as np
import pytest
from array_api_compat import array_namespace
from sklearn.exceptions import ConvergenceWarning

import arn_sklearn._kernels._block_cg as bcg
import arn_sklearn._model._blocksparse as bs
from arn_sklearn._kernels._block_cg import (
    _DELAY,
    AggregateJacobi,
    BlockRows,
    anchor_aggregates,
    apply_block_diagonal,
    block_jacobi,
    block_pcg,
    shared_block_pcg,
)
from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._solve import centered_rhs
from arn_sklearn._kernels._topk import predict_top_k, top_k_assignments
from arn_sklearn._model._blocksparse import BlockSparseStatistics, choose_linear_solver

xp = array_namespace(np.empty(0))


def statistics(kind, n=3000, d=4, m=40, t=3, k=3, seed=0):
    """Top-k statistics on data whose anchor graph is of the given kind.

    ``separated``: 8 far-apart clusters, 5 anchors each (a block-diagonal
    anchor graph); ``overlapping``: one 30-d Gaussian blob (a graph whose
    sparse factor fills in); ``dense``: 2-d data, few anchors (most pairs).
    """
    rng = np.random.RandomState(seed)
    if kind == "separated":
        centres = 50.0 * rng.normal(size=(8, d))
        label = rng.randint(0, 8, n)
        X = centres[label] + rng.normal(size=(n, d))
        anchors = np.repeat(centres, 5, axis=0) + rng.normal(size=(40, d))
    elif kind == "overlapping":
        X = rng.normal(size=(n, d))
        anchors = X[rng.choice(n, m, replace=False)]
    else:
        X = rng.normal(size=(n, 2))
        anchors = rng.normal(size=(m, 2))
    Y = np.sin(X[:, :1] * np.arange(1, t + 1)) + 0.1 * rng.normal(size=(n, t))
    softness = 1.0 / np.median(np.sum((X[:200, None] - anchors[None]) ** 2, axis=2))

    def assign(c):
        return top_k_assignments(c, anchors, "euclidean", softness, k, xp)

    stats = BlockSparseStatistics.zeros(anchors.shape[0], X.shape[1], t, xp).accumulate(
        iter_chunks(X, Y, rng.uniform(0.5, 1.5, n), 1000), assign, xp
    )
    return stats, X, assign


@pytest.mark.parametrize("chunk", [32, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_block_rows_matmul_matches_dense_gram(monkeypatch, shuffle, chunk):
    # chunk=3: the rows' partners are gathered in several chunks (and a partial last one).
    monkeypatch.setattr(bcg, "_GATHER_CHUNK", chunk)
    stats, _, _ = statistics("overlapping", d=6, m=30)
    keys, blocks = stats.pair_keys, stats.blocks
    if shuffle:  # unsorted keys are sorted on the way in
        order = np.random.RandomState(0).permutation(keys.size)
        keys, blocks = keys[order], blocks[order]
    rows = BlockRows(keys, blocks, stats.n_anchors)
    rows.use_compiled = False  # the numpy path's gathers (the compiled one: below)
    # Both halves of the product are exercised: stacks in place and gathered mirrors.
    assert rows.mirror_blocks.size > 0 and np.any(np.diff(rows.indptr) > 1)
    assert np.any(np.diff(rows.indptr) > chunk) == (chunk == 3)
    G = stats.to_dense().gram
    V = np.random.RandomState(1).normal(size=(G.shape[0], 5))
    np.testing.assert_allclose(rows.matmul(V), G @ V, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(rows.matmul(V, n_threads=2), G @ V, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(rows.matmul(V[:, 0]), G @ V[:, 0], rtol=1e-12, atol=1e-9)
    d1 = 7
    diagonal = [G[a * d1 : (a + 1) * d1, a * d1 : (a + 1) * d1] for a in range(30)]
    np.testing.assert_allclose(rows.diagonal, np.stack(diagonal))


def random_blocks(m, d1, n_pairs, seed=0, dtype=np.float64):
    """Keys and symmetric blocks of ``n_pairs`` random anchor pairs (diagonal
    ones included) among ``m`` anchors, some anchors left without any, and the
    dense matrix they stand for, assembled block by block."""
    rng = np.random.RandomState(seed)
    used = rng.permutation(m)[: max(1, (3 * m) // 4)]  # the others have no block
    a, b = rng.choice(used, n_pairs), rng.choice(used, n_pairs)
    keys = np.unique(np.minimum(a, b) * m + np.maximum(a, b))
    blocks = rng.normal(size=(keys.size, d1, d1))
    blocks = (blocks + blocks.transpose(0, 2, 1)).astype(dtype)
    G = np.zeros((m * d1, m * d1))
    for key, block in zip(keys, blocks, strict=True):
        i, j = divmod(int(key), m)
        G[i * d1 : (i + 1) * d1, j * d1 : (j + 1) * d1] = block
        G[j * d1 : (j + 1) * d1, i * d1 : (i + 1) * d1] = block
    order = rng.permutation(keys.size)  # unsorted on the way in
    return keys[order], blocks[order], G


def product_paths():
    """The numpy path, and the compiled kernel at each instruction-set level of this CPU."""
    if bcg._block_cg_gram is None:
        return ["numpy"]
    top = bcg._block_cg_gram.select(2)
    return ["numpy", *range(top + 1)]


@pytest.fixture
def product_path(request):
    """``rows -> rows`` that set the path under test; the CPU's own level after."""
    path = request.param

    def use(rows):
        rows.use_compiled = path != "numpy"
        if path != "numpy":
            assert bcg._block_cg_gram.select(path) == path
        return rows

    yield use
    if bcg._block_cg_gram is not None:
        bcg._block_cg_gram.select(2)


@pytest.mark.parametrize("product_path", product_paths(), indirect=True)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "m, d1, n_pairs",
    [(70, 7, 400), (70, 31, 150), (1, 5, 1), (3, 4, 0), (40, 1, 300)],
    ids=["three-groups", "d31", "one-anchor", "no-blocks", "scalar-blocks"],
)
def test_gram_product_matches_dense_on_every_path(product_path, dtype, m, d1, n_pairs):
    """Both products against the dense matrix: groups of 32 rows with a partial
    last one, remainders of 4-row tiles and of vectors (padded columns),
    anchors without blocks, 1-D and 2-D ``V``, threads."""
    keys, blocks, G = random_blocks(m, d1, n_pairs, dtype=dtype)
    if n_pairs == 0:
        keys, blocks = keys[:0], blocks[:0]
    rows = product_path(BlockRows(keys, blocks, m))
    rng = np.random.RandomState(1)
    rtol, atol = (1e-12, 1e-10) if dtype == np.float64 else (1e-5, 1e-4)
    for t in (1, 5, 16, 37):
        V = rng.normal(size=(m * d1, t))
        scale = np.abs(G).sum(axis=1).max() * np.abs(V).max()
        for n_threads in (1, 3):
            out = rows.matmul(V, n_threads=n_threads)
            assert out.shape == V.shape and out.dtype == dtype and out.flags.c_contiguous
            np.testing.assert_allclose(out, G @ V, rtol=rtol, atol=atol * scale)
    v = rng.normal(size=m * d1)
    np.testing.assert_allclose(rows.matmul(v), G @ v, rtol=rtol, atol=atol * scale)
    assert rows.matmul(np.zeros((m * d1, 0))).shape == (m * d1, 0)


def test_gram_product_takes_numpy_path_where_the_kernels_are_slower():
    """x86's SSE2 kernels (no AVX2) ran at 0.55x numpy's path: not used by default."""
    gram = bcg._block_cg_gram
    if gram is None:
        pytest.skip("the compiled Gram product is not built")
    keys, blocks, _ = random_blocks(10, 3, 20)
    try:
        for level in range(gram.select(2) + 1):
            gram.select(level)
            assert BlockRows(keys, blocks, 10).use_compiled == gram.faster()
            assert bcg.compiled_product(blocks.dtype) == gram.faster()
        gram.select(0)
        assert gram.faster() == (platform.machine().lower() not in ("x86_64", "amd64"))
    finally:
        gram.select(2)


def test_gram_product_takes_numpy_path_for_blocks_the_kernel_cannot_read():
    """Blocks not in C order are read in place by numpy, not copied for the kernel."""
    keys, blocks, G = random_blocks(40, 5, 200)
    order = np.argsort(keys)
    wide = np.zeros((blocks.shape[0], 6, 6))
    wide[:, :5, :5] = blocks[order]
    rows = BlockRows(keys[order], wide[:, :5, :5], 40)  # sorted keys: kept by reference
    assert not rows.use_compiled
    assert not bcg.compiled_product(np.float64, c_contiguous=False)
    assert not bcg.compiled_product(np.int64)
    V = np.random.RandomState(1).normal(size=(200, 3))
    np.testing.assert_allclose(rows.matmul(V), G @ V, rtol=1e-12, atol=1e-10)


def test_block_jacobi_inverts_each_block_and_tolerates_empty_ones():
    rng = np.random.RandomState(0)
    L = rng.normal(size=(4, 3, 3))
    D = L @ L.transpose(0, 2, 1)
    D[2] = 0.0  # an unused anchor
    inv = block_jacobi(D, 0.5)
    for a in range(4):
        np.testing.assert_allclose(inv[a] @ (D[a] + 0.5 * np.eye(3)), np.eye(3), atol=1e-10)
    R = rng.normal(size=(12, 2))
    expected = np.concatenate([inv[a] @ R[3 * a : 3 * a + 3] for a in range(4)])
    np.testing.assert_allclose(apply_block_diagonal(inv, R), expected)
    assert np.all(np.isfinite(block_jacobi(D, 0.0)))


@pytest.mark.parametrize("max_size", [1, 4, 40])
def test_aggregate_jacobi_solves_the_system_without_cross_group_blocks(max_size):
    stats, _, _ = statistics("overlapping", d=6, m=30)
    rows = stats.block_rows()
    alpha, d1 = 0.3, 7
    labels = anchor_aggregates(rows, alpha, max_size)
    sizes = np.bincount(labels)
    assert sizes.min() >= 1 and sizes.max() <= max_size and sizes.sum() == 30
    # Reference: the dense system with the blocks between groups zeroed.
    A = stats.to_dense().gram + alpha * np.eye(30 * d1)
    group = np.repeat(labels, d1)
    M = np.where(group[:, None] == group[None, :], A, 0.0)
    R = np.random.RandomState(2).normal(size=(30 * d1, 3))
    expected = np.linalg.solve(M, R)
    precondition = AggregateJacobi(rows, labels, alpha)
    np.testing.assert_allclose(precondition(R), expected, rtol=1e-8, atol=1e-12)
    threaded = AggregateJacobi(rows, labels, alpha, n_threads=2)
    np.testing.assert_allclose(threaded(R), expected, rtol=1e-8, atol=1e-12)
    if max_size == 1:  # one anchor per group: the per-anchor block-Jacobi
        inverse = block_jacobi(rows.diagonal, alpha)
        np.testing.assert_allclose(precondition(R), apply_block_diagonal(inverse, R), rtol=1e-8)


def test_aggregates_stay_inside_connected_components_and_fill_them():
    """Greedy merging only joins coupled anchors, strongest first."""
    stats, _, _ = statistics("separated")
    rows = stats.block_rows()
    components = stats._components()
    labels = anchor_aggregates(rows, 1.0, 2)
    for g in range(labels.max() + 1):
        assert np.unique(components[labels == g]).size == 1
    # With room for a whole component, the aggregates are the components, and
    # the preconditioner is the exact inverse: CG stops at its first checks.
    labels = anchor_aggregates(rows, 1.0, 40)
    assert np.unique(labels).size == np.unique(components).size
    for g in range(labels.max() + 1):
        assert np.unique(components[labels == g]).size == 1
    alpha = 1.0
    rhs, _ = centered_rhs(stats, xp)
    exact = np.linalg.solve(stats.to_dense().gram + alpha * np.eye(stats.n_lifted), rhs)
    X, n_iter = block_pcg(
        lambda V: rows.matmul(V) + alpha * V,
        AggregateJacobi(rows, labels, alpha),
        rhs,
        shift=alpha,
    )
    np.testing.assert_allclose(X, exact, rtol=1e-7, atol=1e-10 * np.abs(exact).max())
    assert n_iter <= 2 * _DELAY  # the error estimate's first check


@pytest.mark.parametrize("kind", ["separated", "overlapping", "dense"])
@pytest.mark.parametrize("alpha", [1e-3, 1.0, 100.0])
@pytest.mark.parametrize("block_cg", [True, False])
def test_iterative_direct_and_dense_predictions_agree(monkeypatch, kind, alpha, block_cg):
    """The documented tolerance: predictions within 1e-6 relative of the exact solve."""
    monkeypatch.setattr(bs, "_BLOCK_CG_WORK", 0.0 if block_cg else np.inf)
    d = 30 if kind == "overlapping" else 4
    stats, X, assign = statistics(kind, d=d)
    X_new = X[::3] + 0.1
    idx, vals = assign(X_new)
    predictions = {}
    for solver in ("dense", "sparse", "iterative"):
        stats.linear_solver = solver
        W, y_mean = stats.solve(alpha, xp)
        predictions[solver] = predict_top_k(X_new, idx, vals, W, xp) + y_mean
    reference = predictions["dense"]
    scale = np.linalg.norm(reference - reference.mean(axis=0), axis=0)
    for solver in ("sparse", "iterative"):
        error = np.linalg.norm(predictions[solver] - reference, axis=0)
        assert np.all(error <= 1e-6 * scale), (solver, error / scale)


@pytest.mark.parametrize("unknowns", [1, 62, 512])
def test_iterative_predictions_agree_whatever_the_aggregate_size(monkeypatch, unknowns):
    """Small aggregates leave CG many iterations: the stopping rule still holds 1e-6."""
    monkeypatch.setattr(bs, "_AGGREGATE_UNKNOWNS", unknowns)
    stats, X, assign = statistics("overlapping", d=30, m=60)
    idx, vals = assign(X[::3] + 0.1)
    predictions = {}
    for solver in ("dense", "iterative"):
        stats.linear_solver = solver
        W, y_mean = stats.solve(1e-2, xp)
        predictions[solver] = predict_top_k(X[::3] + 0.1, idx, vals, W, xp) + y_mean
    reference = predictions["dense"]
    scale = np.linalg.norm(reference - reference.mean(axis=0), axis=0)
    error = np.linalg.norm(predictions["iterative"] - reference, axis=0)
    assert np.all(error <= 1e-6 * scale), error / scale
    factor = stats.factorize(1e-2, xp)
    assert np.bincount(factor.labels).max() <= max(1, unknowns // 31)


def jacobi_system(alpha):
    """The overlapping-cluster system ``G + alpha I`` (30-d rows) as CG sees it.

    Returns the statistics, the dense matrix, the centred right-hand side, the
    product ``V -> (G + alpha I) V`` from the stored blocks and the per-anchor
    block-Jacobi preconditioner.
    """
    stats, _, _ = statistics("overlapping", d=30)
    rows = stats.block_rows()
    A = stats.to_dense().gram + alpha * np.eye(stats.n_lifted)
    rhs, _ = centered_rhs(stats, xp)
    inverse = block_jacobi(rows.diagonal, alpha)

    def matmul(V):
        return rows.matmul(V) + alpha * V

    def precondition(R):
        return apply_block_diagonal(inverse, R)

    return stats, A, rhs, matmul, precondition


def test_block_pcg_solves_spd_system_and_warm_start_saves_iterations():
    alpha = 0.1
    _, A, rhs, matmul, precondition = jacobi_system(alpha)
    exact = np.linalg.solve(A, rhs)
    X, n_cold = block_pcg(matmul, precondition, rhs, rtol=1e-10, shift=alpha)
    np.testing.assert_allclose(X, exact, rtol=1e-6, atol=1e-8 * np.abs(exact).max())
    _, n_warm = block_pcg(matmul, precondition, rhs, x0=exact * (1 + 1e-6), rtol=1e-10)
    assert n_warm < n_cold / 2
    # A zero right-hand side gives a zero solution without iterating on it.
    B = np.hstack([rhs, np.zeros((rhs.shape[0], 1))])
    X2, _ = block_pcg(matmul, precondition, B, rtol=1e-10, shift=alpha)
    assert np.all(X2[:, -1] == 0)


@pytest.mark.parametrize("n_threads", [1, 2, 5])
def test_shared_block_pcg_matches_exact_solve_on_dependent_right_hand_sides(n_threads):
    """Block CG drops the directions of dependent residuals instead of breaking down
    (its p x t products shared by row slices among ``n_threads`` threads)."""
    alpha = 0.1
    stats, A, rhs, matmul, precondition = jacobi_system(alpha)
    # A copy, a combination of two columns and a zero column: rank 3 of 6.
    B = np.column_stack([rhs, rhs[:, 0], rhs[:, 1] - 2 * rhs[:, 2], np.zeros(rhs.shape[0])])
    exact = np.linalg.solve(A, B)
    X, n_shared = shared_block_pcg(
        matmul, precondition, B, rtol=1e-9, shift=alpha, n_threads=n_threads
    )
    assert np.all(X[:, -1] == 0)
    E = X - exact
    energy = np.sum(E * (A @ E), axis=0)
    assert np.all(energy[:-1] <= 1e-16 * np.sum(B * exact, axis=0)[:-1])
    # Each column's error is no larger than CG's on that column alone, in fewer
    # iterations: the shared space holds every column's Krylov space.
    _, n_columns = block_pcg(matmul, precondition, B, rtol=1e-9, shift=alpha)
    assert n_shared <= n_columns
    x1, _ = shared_block_pcg(matmul, precondition, B[:, 0], rtol=1e-9, shift=alpha)
    assert x1.shape == (stats.n_lifted,)
    np.testing.assert_allclose(x1, exact[:, 0], rtol=1e-6, atol=1e-9 * np.abs(exact).max())


@pytest.mark.parametrize("solver", [block_pcg, shared_block_pcg])
def test_block_pcg_warns_when_it_runs_out_of_iterations(solver):
    _, _, rhs, matmul, precondition = jacobi_system(1e-3)
    with pytest.warns(ConvergenceWarning, match="linear_solver='dense' or 'sparse'"):
        solver(matmul, precondition, rhs, max_iter=2)


@pytest.mark.parametrize("method", ["auto", "block", "columns"])
def test_iterative_factor_solves_any_right_hand_side(method):
    stats, _, _ = statistics("overlapping", d=30)
    factor = bs.IterativeFactor(stats, 0.5, xp=xp, method=method)
    assert factor.iterative
    B = np.random.RandomState(0).normal(size=(stats.n_lifted, 4))
    A = stats.to_dense().gram + 0.5 * np.eye(stats.n_lifted)
    X = factor.solve(B)
    # Energy-norm relative error, the quantity the tolerance is stated in.
    E = X - np.linalg.solve(A, B)
    assert np.all(np.sum(E * (A @ E), axis=0) <= 1e-12 * np.sum(B * np.linalg.solve(A, B), axis=0))


def test_iterative_factor_rejects_an_unknown_method():
    stats, _, _ = statistics("overlapping", d=4)
    with pytest.raises(ValueError, match="method='lanczos' must be 'auto', 'block' or"):
        bs.IterativeFactor(stats, 0.5, xp=xp, method="lanczos")


@pytest.mark.parametrize("product", ["compiled", "numpy"])
def test_iterative_factor_takes_block_cg_where_the_gram_product_dominates(product):
    stats, _, _ = statistics("overlapping", d=30)
    factor = bs.IterativeFactor(stats, 0.5, xp=xp)
    rows = factor.rows
    rows.use_compiled = product == "compiled"
    per_row = rows.n_stored / rows.n_anchors
    # Block CG's own work ~16 p t^2 against the product's 2 n_blocks d1^2 t;
    # the same threshold with either product (see _BLOCK_CG_WORK).
    narrow = int(per_row * rows.d1 / 40)
    assert factor.chosen_method(np.zeros((rows.shape[0], narrow + 1))) == "columns"
    assert factor.chosen_method(np.zeros((rows.shape[0], max(narrow, 1)))) == "block"
    assert factor.chosen_method(np.zeros((rows.shape[0], 1))) == "block"
    assert factor.chosen_method(np.zeros(rows.shape[0])) == "block"


def test_solve_path_warm_starts_match_independent_solves():
    stats, _, _ = statistics("overlapping", d=30)
    stats.linear_solver = "iterative"
    alphas = [1e-2, 10.0, 1.0]
    W_path, y_mean = stats.solve_path(alphas, xp)
    stats.linear_solver = "dense"
    for i, alpha in enumerate(alphas):
        W, _ = stats.solve(alpha, xp)
        G = stats.to_dense().gram
        E = W_path[i] - W
        assert np.all(np.sum(E * (G @ E), axis=0) <= 1e-12 * np.sum(W * (G @ W), axis=0))


# -- the solver choice -------------------------------------------------------------------


def choice(stats, alpha=1e-3, **kw):
    return choose_linear_solver(
        stats.n_anchors,
        stats.n_features,
        stats.zty.shape[1],
        stats.pair_keys.shape[0],
        alpha,
        stats._fill_and_flops,
        **kw,
    )


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize(
    "kind, expected", [("separated", "sparse"), ("overlapping", "iterative"), ("dense", "dense")]
)
def test_choice_on_small_graphs_of_each_kind(kind, expected, compiled, monkeypatch):
    """The same choice whichever Gram product CG would run."""
    size = {"d": 30, "m": 200, "n": 4000} if kind == "overlapping" else {"d": 4}
    stats, _, _ = statistics(kind, t=1, **size)
    # Small systems are always dense: pin the choice the graph alone makes.
    monkeypatch.setattr(bs, "_DENSE_SOLVE_MAX_SIZE", 0)
    # Components of at most 40 unknowns get their own dense factors: the
    # separated graph's clusters (5 anchors of 5 unknowns), not the 30-d blob.
    monkeypatch.setattr(bs, "_COMPONENT_MAX_SIZE", 40)
    sizes = np.bincount(stats._components()) * (stats.n_features + 1)
    assert (sizes.max() <= 40) == (kind == "separated")
    fill, _ = stats._fill_and_flops()
    if kind == "separated":
        assert fill <= bs._SPARSE_MAX_FILL  # no fill across clusters
    if kind == "overlapping":
        assert fill > 1.5  # the sparse factor fills in where CG does not
    assert choice(stats, compiled=compiled) == expected
    monkeypatch.setattr(bs, "_DENSE_SOLVE_MAX_SIZE", stats.n_lifted)
    # The same systems, small enough by their size.
    assert choice(stats, compiled=compiled) == "dense"


@pytest.mark.parametrize("built", [True, False])
def test_cost_model_estimates_the_product_that_block_rows_runs(built, monkeypatch):
    """The CG estimate follows ``compiled_product``, BlockRows' own decision."""
    if built and bcg._block_cg_gram is None:
        pytest.skip("the compiled Gram product is not built")
    if not built:
        monkeypatch.setattr(bcg, "_block_cg_gram", None)  # as without the extension
    stats, _, _ = statistics("overlapping", d=30, t=2)
    runs = stats.block_rows().use_compiled
    assert runs == bcg.compiled_product() == (built and bcg._block_cg_gram.faster())
    args = (stats.n_anchors, 30, 2, stats.pair_keys.shape[0], 1.0, stats._fill_and_flops)
    default = bs.estimate_solver_seconds(*args)["iterative"]
    compiled = bs.estimate_solver_seconds(*args, compiled=True)["iterative"]
    numpy_path = bs.estimate_solver_seconds(*args, compiled=False)["iterative"]
    assert default == (compiled if runs else numpy_path)
    assert compiled < numpy_path  # the compiled product is the faster one


def test_choice_never_allocates_a_dense_matrix_past_the_memory():
    stats, _, _ = statistics("dense", t=1)
    p = stats.n_lifted
    assert choice(stats, available=8 * p * p) == "dense"
    assert choice(stats, available=8 * p * p - 1) != "dense"
    # alpha = 0 rules CG out: the sparse factor is what is left.
    assert choice(stats, alpha=0.0, available=8 * p * p - 1) == "sparse"
    with pytest.raises(MemoryError, match="linear_solver='dense' needs"):
        choice(stats, requested="dense", available=8 * p * p - 1)


def test_choice_obeys_the_request_and_rejects_cg_without_ridge():
    stats, _, _ = statistics("separated", t=1)
    for solver in ("dense", "sparse", "iterative"):
        assert choice(stats, requested=solver) == solver
    with pytest.raises(ValueError, match="needs alpha > 0"):
        choice(stats, alpha=0.0, requested="iterative")
    with pytest.raises(ValueError, match="must be one of"):
        choice(stats, requested="cholesky")


def test_choice_prefers_cg_for_few_targets_and_dense_for_many(monkeypatch):
    """CG costs a Gram product per target and iteration; the dense factor is paid once."""
    monkeypatch.setattr(bs, "_DENSE_SOLVE_MAX_SIZE", 0)
    big_fill = lambda: (100.0, 1e15)  # noqa: E731 - a sparse factor never worth it
    m, d = 1024, 30
    pairs = 10 * m
    assert choose_linear_solver(m, d, 1, pairs, 1e-3, big_fill) == "iterative"
    assert choose_linear_solver(m, d, 10**5, pairs, 1e-3, big_fill) == "dense"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_linear_solver(m, d, 1, pairs, 0.0, big_fill) == "dense"


@pytest.mark.parametrize("compiled", [True, False])
def test_choice_on_dense_ish_graphs_follows_the_measured_grid(monkeypatch, compiled):
    """benchmarks/solver_grid.py, 30 -> 81, top_k=4: the estimates pick within 2x of the best.

    Isotropic Gaussian data: 256 anchors with 81% of the pairs stored, dense 11.5 s and
    CG 16.8 s (numpy's product); dense 8.6 s and CG 6.0 s (compiled, load 4: the pick,
    dense, at 1.43x). 1024 anchors with 40% of them, CG 85 s (numpy's product), 36 s
    (compiled), where the 31,744-unknown dense Cholesky took 178-222 s. x3 patches, 256
    anchors, 33%: CG 8.7 s, dense 18.0 s (numpy's); CG 1.3 s, dense 8.3 s (compiled).
    """
    never = lambda: (100.0, 1e16)  # noqa: E731 - these graphs fill a sparse factor in
    big = 64 * 2**30
    for m, pairs_per_anchor, expected in [(256, 104.4, "dense"), (1024, 206.6, "iterative"),
                                          (256, 41.9, "iterative")]:  # fmt: skip
        pairs = int(pairs_per_anchor * m)
        pick = choose_linear_solver(m, 30, 81, pairs, 1.0, never, available=big, compiled=compiled)
        assert pick == expected


def test_choice_takes_component_factors_over_dense_at_equal_estimates(monkeypatch):
    """One connected component small enough for its own dense factor: the same Cholesky
    as the dense path's without the p x p assembly (solver_grid.py, isotropic Gaussian,
    256 anchors: 2.4-3.5 s against 5.1-5.6 s)."""
    monkeypatch.setattr(bs, "_DENSE_SOLVE_MAX_SIZE", 0)
    m, d1 = 256, 31
    p = m * d1
    # What _fill_and_flops gives for small components: the dense flops over SuperLU's slowdown.
    component = lambda: (1.0, (p**3 / 3) / bs._SUPERLU_SLOWDOWN)  # noqa: E731
    costlier = lambda: (1.0, 1.01 * (p**3 / 3) / bs._SUPERLU_SLOWDOWN)  # noqa: E731
    big = 64 * 2**30
    pairs = 104 * m
    assert choose_linear_solver(m, 30, 81, pairs, 0.0, component, available=big) == "sparse"
    assert choose_linear_solver(m, 30, 81, pairs, 0.0, costlier, available=big) == "dense"
