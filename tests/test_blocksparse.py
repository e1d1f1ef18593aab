import warnings

import numpy as np
import pytest
from array_api_compat import array_namespace
from scipy import linalg

from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._solve import centered_rhs
from arn_sklearn._kernels._topk import densify, top_k_assignments
from arn_sklearn._model._blocksparse import BlockSparseStatistics, IterativeFactor
from arn_sklearn._model._statistics import SufficientStatistics, accumulate

xp = array_namespace(np.empty(0))


def data(n=400, d=3, m=9, t=2, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([np.abs(X[:, 0]) + X[:, 1] * (X[:, 2] > 0), np.maximum(X[:, 1], 0)], 1)
    Y = Y[:, :t] + 0.05 * rng.normal(size=(n, t))
    return X, Y, rng.normal(size=(m, d)), rng


def naive_gram(X, Y, w, anchors, k, softness=0.8):
    """Dense statistics of the lifted rows of the densified top-k assignments."""
    A = densify(*top_k_assignments(X, anchors, "euclidean", softness, k, xp), len(anchors), xp)
    X1 = np.hstack([X, np.ones((len(X), 1))])
    Z = np.stack([np.kron(a, x1) for a, x1 in zip(A, X1, strict=True)])
    return Z.T @ (w[:, None] * Z), Z.T @ (w[:, None] * Y), Z.T @ w


def sparse_stats(X, Y, w, anchors, k, batch, softness=0.8, start=None):
    m, d = anchors.shape
    stats = start if start is not None else BlockSparseStatistics.zeros(m, d, Y.shape[1], xp)
    return stats.accumulate(
        iter_chunks(X, Y, w, batch),
        lambda c: top_k_assignments(c, anchors, "euclidean", softness, k, xp),
        xp,
    )


@pytest.mark.parametrize("k, batch", [(1, 50), (2, 64), (3, 1000), (9, 77)])
def test_block_sparse_statistics_equal_naive_weighted_sums(k, batch):
    X, Y, anchors, rng = data()
    w = rng.uniform(0, 2, size=len(X))
    stats = sparse_stats(X, Y, w, anchors, k, batch)
    gram, zty, z_sum = naive_gram(X, Y, w, anchors, k)
    dense = stats.to_dense()
    np.testing.assert_allclose(dense.gram, gram, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.zty, zty, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.z_sum, z_sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.y_sum, w @ Y)
    np.testing.assert_allclose(stats.y_sq_sum, w @ Y**2)
    assert stats.n_samples == len(X) and stats.weight_sum == pytest.approx(w.sum())
    keys = stats.pair_keys
    assert keys.dtype == np.int64 and np.all(np.diff(keys) > 0)
    assert np.all(keys // 9 <= keys % 9)
    # Only pairs that co-occur are stored: the dense gram is zero elsewhere.
    m, d1 = 9, 4
    nonzero = np.abs(gram.reshape(m, d1, m, d1)).sum(axis=(1, 3)) > 0
    assert set(keys.tolist()) == {
        a * m + b for a, b in zip(*np.nonzero(np.triu(nonzero)), strict=True)
    }


def test_block_sparse_add_equals_one_pass_and_dense_add():
    X, Y, anchors, rng = data()
    w = rng.uniform(0, 2, size=len(X))
    whole = sparse_stats(X, Y, w, anchors, 2, 100)
    a = sparse_stats(X[:150], Y[:150], w[:150], anchors, 2, 40)
    b = sparse_stats(X[150:], Y[150:], w[150:], anchors, 2, 64)
    a_keys = a.pair_keys.copy()
    total = a + b
    np.testing.assert_array_equal(a.pair_keys, a_keys)  # + does not modify its operands
    np.testing.assert_array_equal(total.pair_keys, whole.pair_keys)
    np.testing.assert_allclose(total.blocks, whole.blocks, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total.zty, whole.zty, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        total.to_dense().gram, (a.to_dense() + b.to_dense()).gram, rtol=1e-12, atol=1e-12
    )
    # Continuing an accumulation (partial_fit) leaves the start untouched.
    cont = sparse_stats(X[150:], Y[150:], w[150:], anchors, 2, 64, start=a)
    np.testing.assert_array_equal(a.pair_keys, a_keys)
    np.testing.assert_allclose(cont.to_dense().gram, whole.to_dense().gram, atol=1e-12)


def test_top_k_equal_to_m_gives_the_dense_statistics():
    X, Y, anchors, rng = data(m=5)
    w = np.ones(len(X))
    stats = sparse_stats(X, Y, w, anchors, 5, 64)
    dense = accumulate(
        iter_chunks(X, Y, w, 64),
        lambda c: densify(*top_k_assignments(c, anchors, "euclidean", 0.8, 5, xp), 5, xp),
        xp,
        SufficientStatistics.zeros(20, 2, xp),
    )
    np.testing.assert_allclose(stats.to_dense().gram, dense.gram, rtol=1e-12, atol=1e-12)
    assert stats.pair_keys.size == 15


def reference_solution(stats, alpha):
    dense = stats.to_dense()
    rhs, y_mean = centered_rhs(dense, xp)
    G = dense.gram + alpha * np.eye(dense.gram.shape[0])
    return linalg.cho_solve(linalg.cho_factor(G), rhs), y_mean


@pytest.mark.parametrize("alpha", [1e-3, 1.0])
@pytest.mark.parametrize("factor", ["components", "superlu"])
def test_sparse_solve_matches_dense_cholesky(alpha, factor, monkeypatch):
    import arn_sklearn._model._blocksparse as bs

    if factor == "superlu":
        monkeypatch.setattr(bs, "_COMPONENT_MAX_SIZE", 0)
    X, Y, anchors, rng = data(n=3000, d=4, m=40)
    anchors[-3:] += 100.0  # anchors no sample is assigned to: zero diagonal blocks
    stats = sparse_stats(X, Y, rng.uniform(0.5, 1, size=len(X)), anchors, 3, 512, softness=2.0)
    assert not np.isin(np.array([37, 38, 39]) * 41, stats.pair_keys).any()
    stats.linear_solver = "sparse"
    assert stats.choose_solver(alpha) == "sparse"
    W, y_mean = stats.solve(alpha, xp)
    W_ref, y_ref = reference_solution(stats, alpha)
    assert np.linalg.norm(W - W_ref) <= 1e-8 * np.linalg.norm(W_ref)
    np.testing.assert_allclose(y_mean, y_ref)
    B = rng.normal(size=(W.shape[0], 7))
    G = stats.to_dense().gram + alpha * np.eye(W.shape[0])
    got = stats.factorize(alpha, xp).solve(B)
    np.testing.assert_allclose(got, np.linalg.solve(G, B), rtol=1e-8, atol=1e-10)


def test_dense_rule_solves_small_systems_like_the_dense_path():
    X, Y, anchors, rng = data()
    stats = sparse_stats(X, Y, np.ones(len(X)), anchors, 2, 100)
    assert stats.choose_solver(0.5) == "dense"
    W, _ = stats.solve(0.5, xp)
    W_ref, _ = reference_solution(stats, 0.5)
    np.testing.assert_allclose(W, W_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("factor", ["components", "superlu"])
def test_singular_sparse_system_warns_and_is_finite(factor, monkeypatch):
    import arn_sklearn._model._blocksparse as bs

    if factor == "superlu":
        monkeypatch.setattr(bs, "_COMPONENT_MAX_SIZE", 0)
    X, Y, anchors, rng = data(n=500, d=3, m=30)
    X = np.hstack([X, X[:, :1]])  # a duplicated feature: singular at alpha=0
    anchors = np.hstack([anchors, anchors[:, :1]])
    stats = sparse_stats(X, Y, np.ones(len(X)), anchors, 2, 100)
    stats.linear_solver = "sparse"
    with pytest.warns(linalg.LinAlgWarning):
        W, _ = stats.solve(0.0, xp)
    assert np.all(np.isfinite(W))
    # Its predictions on the training rows still fit the data (the minimum is reached).
    dense = stats.to_dense()
    rhs, _ = centered_rhs(dense, xp)
    residual = dense.gram @ W - rhs
    assert np.linalg.norm(residual) <= 1e-4 * np.linalg.norm(rhs)


def test_gram_matmul_matches_dense():
    X, Y, anchors, rng = data()
    stats = sparse_stats(X, Y, np.ones(len(X)), anchors, 3, 100)
    V = rng.normal(size=(stats.n_lifted, 4))
    np.testing.assert_allclose(stats.gram_matmul(V), stats.to_dense().gram @ V, atol=1e-10)


def test_estimate_bytes_bounds_the_measured_arrays():
    X, Y, anchors, rng = data(n=3000, d=4, m=40)
    stats = sparse_stats(X, Y, np.ones(len(X)), anchors, 3, 512)
    held = stats.blocks.nbytes + stats.zty.nbytes + stats.pair_keys.nbytes
    estimate = BlockSparseStatistics.estimate_bytes(40, 4, 2, 3, n_pairs=stats.pair_keys.size)
    assert held < estimate < 50 * held
    # CG's arrays: its view of the stored blocks, its threads' buffers and the
    # aggregates' inverses.
    factor = IterativeFactor(stats, 1.0)
    assert factor.rows.blocks is stats.blocks  # read in place, not copied
    work = factor.rows.work_bytes(2, n_threads=2)
    assert held + factor.rows.nbytes + work + factor.precondition.nbytes < estimate
    # The default pair estimate is an upper bound on this data.
    assert stats.pair_keys.size <= bs_pairs(40, 3)
    assert BlockSparseStatistics.estimate_bytes(40, 4, 2, 3) >= estimate


def bs_pairs(m, k):
    from arn_sklearn._model._blocksparse import _pair_count_estimate

    return _pair_count_estimate(m, k)


def test_map_arrays_and_copy_are_independent():
    X, Y, anchors, rng = data()
    stats = sparse_stats(X, Y, np.ones(len(X)), anchors, 2, 100)
    copy = stats.copy()
    copy.blocks[...] = 0
    assert np.abs(stats.blocks).sum() > 0
    as_list = stats.map_arrays(np.asarray)
    assert as_list.n_anchors == 9 and as_list.weight_sum == stats.weight_sum


def test_array_api_strict_matches_numpy():
    xps = pytest.importorskip("array_api_strict")
    X, Y, anchors, rng = data(n=120, m=6)
    w = rng.uniform(0, 2, size=len(X))
    ref = sparse_stats(X, Y, w, anchors, 2, 50)
    Xs, Ys, ws, As = (xps.asarray(a) for a in (X, Y, w, anchors))
    stats = BlockSparseStatistics.zeros(6, 3, 2, xps).accumulate(
        iter_chunks(Xs, Ys, ws, 50),
        lambda c: top_k_assignments(c, As, "euclidean", 0.8, 2, xps),
        xps,
    )
    np.testing.assert_array_equal(np.asarray(stats.pair_keys), ref.pair_keys)
    np.testing.assert_allclose(np.asarray(stats.blocks), ref.blocks, atol=1e-12)
    np.testing.assert_allclose(np.asarray(stats.zty), ref.zty, atol=1e-12)
    np.testing.assert_allclose(np.asarray(stats.to_dense().gram), ref.to_dense().gram, atol=1e-12)
    V = rng.normal(size=(24, 3))
    np.testing.assert_allclose(
        np.asarray(stats.gram_matmul(xps.asarray(V))), ref.gram_matmul(V), atol=1e-10
    )
    total = stats + stats
    np.testing.assert_allclose(np.asarray(total.blocks), 2 * ref.blocks, atol=1e-12)
    W, _ = stats.solve(1.0, xps)
    np.testing.assert_allclose(np.asarray(W), ref.solve(1.0, xp)[0], atol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats.factorize(1.0, xps)


def test_anchor_ordering_is_a_permutation_with_bounded_flops():
    X, Y, anchors, rng = data(n=3000, d=4, m=40)
    stats = sparse_stats(X, Y, np.ones(len(X)), anchors, 3, 512, softness=2.0)
    perm, flops, factor_blocks = stats._anchor_ordering(with_fill=True)
    assert sorted(perm.tolist()) == list(range(40))
    assert 0 < flops < (40 * 5) ** 3
    # The factor holds at least the stored lower triangle and at most all of it.
    assert stats.pair_keys.size <= factor_blocks <= 40 * 41 / 2


def test_component_factor_solves_a_graph_of_separate_clusters():
    """Far-apart clusters: independent components, each solved by its own factor."""
    import arn_sklearn._model._blocksparse as bs

    rng = np.random.RandomState(0)
    centres = 100.0 * rng.normal(size=(4, 3))
    X = centres[rng.randint(0, 4, 2000)] + rng.normal(size=(2000, 3))
    Y = np.sin(X[:, :2]) + 0.1 * rng.normal(size=(2000, 2))
    anchors = np.repeat(centres, 3, axis=0) + rng.normal(size=(12, 3))
    stats = sparse_stats(X, Y, rng.uniform(0.5, 1.5, 2000), anchors, 2, 500, softness=0.5)
    labels = stats._components()
    assert np.unique(labels).size == 4
    factor = bs.ComponentFactor(stats, labels, 0.3)
    B = rng.normal(size=(stats.n_lifted, 3))
    G = stats.to_dense().gram + 0.3 * np.eye(stats.n_lifted)
    np.testing.assert_allclose(factor.solve(B), np.linalg.solve(G, B), rtol=1e-9, atol=1e-12)
