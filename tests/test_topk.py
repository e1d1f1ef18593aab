import numpy as np
import pytest
from array_api_compat import array_namespace

from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._topk import densify, predict_top_k, top_k_assignments
from arn_sklearn._model._blocksparse import BlockSparseStatistics
from arn_sklearn._model._statistics import SufficientStatistics, accumulate

xp = array_namespace(np.empty(0))


def naive_top_k(X, anchors, softness, k):
    """Full softmax of -||x - c||^2, k largest kept and renormalised, row by row."""
    A = np.zeros((X.shape[0], anchors.shape[0]))
    for i, x in enumerate(X):
        s = -softness * np.sum((anchors - x) ** 2, axis=1)
        e = np.exp(s - s.max())
        a = e / e.sum()
        keep = np.argsort(-a, kind="stable")[:k]
        A[i, keep] = a[keep] / a[keep].sum()
    return A


def naive_lifted(X, A):
    X1 = np.hstack([X, np.ones((X.shape[0], 1))])
    return np.stack([np.kron(a, x1) for a, x1 in zip(A, X1, strict=True)])


def data(n=300, d=3, m=7, t=2, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([np.abs(X[:, 0]) + X[:, 1] * (X[:, 2] > 0), np.maximum(X[:, 1], 0)], 1)
    return X, Y[:, :t] + 0.05 * rng.normal(size=(n, t)), rng.normal(size=(m, d)), rng


@pytest.mark.parametrize("k", [1, 2, 6, 7])
def test_top_k_assignments_match_naive(k):
    X, _, anchors, _ = data()
    idx, vals = top_k_assignments(X, anchors, "euclidean", 0.8, k, xp)
    assert idx.shape == vals.shape == (X.shape[0], k)
    np.testing.assert_allclose(densify(idx, vals, 7, xp), naive_top_k(X, anchors, 0.8, k))
    # Decreasing order, so the first column is the hard (Voronoi) assignment.
    assert np.all(np.diff(vals, axis=1) <= 0)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_sparse_accumulation_equals_naive_weighted_sums(k):
    X, Y, anchors, rng = data()
    w = rng.uniform(0, 2, size=X.shape[0])
    stats = BlockSparseStatistics.zeros(7, 3, 2, xp).accumulate(
        iter_chunks(X, Y, w, 41),
        lambda c: top_k_assignments(c, anchors, "euclidean", 0.8, k, xp),
        xp,
    )
    stats = stats.to_dense()
    Z = naive_lifted(X, naive_top_k(X, anchors, 0.8, k))
    np.testing.assert_allclose(stats.gram, Z.T @ (w[:, None] * Z), atol=1e-10)
    np.testing.assert_allclose(stats.zty, Z.T @ (w[:, None] * Y), atol=1e-10)
    np.testing.assert_allclose(stats.z_sum, Z.T @ w, atol=1e-10)
    np.testing.assert_allclose(stats.y_sum, w @ Y)
    assert stats.n_samples == X.shape[0] and stats.weight_sum == pytest.approx(w.sum())


def test_sparse_accumulation_with_k_equal_m_matches_dense_kernel():
    X, Y, anchors, _ = data()
    w = np.ones(X.shape[0])
    zeros = SufficientStatistics.zeros(28, 2, xp)
    sparse = (
        BlockSparseStatistics.zeros(7, 3, 2, xp)
        .accumulate(
            iter_chunks(X, Y, w, 64),
            lambda c: top_k_assignments(c, anchors, "euclidean", 0.8, 7, xp),
            xp,
        )
        .to_dense()
    )
    dense = accumulate(
        iter_chunks(X, Y, w, 64),
        lambda c: densify(*top_k_assignments(c, anchors, "euclidean", 0.8, 7, xp), 7, xp),
        xp,
        zeros,
    )
    np.testing.assert_allclose(sparse.gram, dense.gram, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sparse.zty, dense.zty, rtol=1e-12, atol=1e-12)


def test_predict_top_k_equals_lifted_product():
    X, _, anchors, rng = data()
    W = rng.normal(size=(28, 2))
    idx, vals = top_k_assignments(X, anchors, "euclidean", 0.8, 3, xp)
    expected = naive_lifted(X, naive_top_k(X, anchors, 0.8, 3)) @ W
    np.testing.assert_allclose(predict_top_k(X, idx, vals, W, xp), expected, atol=1e-12)


def test_top_k_equal_to_n_anchors_is_the_dense_model():
    X, Y, _, _ = data()
    dense = ARNRegressor(7, random_state=0, batch_size=50).fit(X, Y)
    full = ARNRegressor(7, top_k=7, random_state=0, batch_size=50).fit(X, Y)
    np.testing.assert_array_equal(full.coef_, dense.coef_)
    np.testing.assert_array_equal(full.intercept_, dense.intercept_)
    np.testing.assert_allclose(full.predict(X), dense.predict(X), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_model_equals_naive_eq17_on_sparsified_assignments(k):
    X, Y, anchors, rng = data(t=1)
    w = rng.uniform(0, 2, size=X.shape[0])
    model = ARNRegressor(7, softness=0.8, alpha=0.3, anchors=anchors, top_k=k, batch_size=53).fit(
        X, Y[:, 0], sample_weight=w
    )
    Z = naive_lifted(X, naive_top_k(X, anchors, 0.8, k))
    y_mean = w @ Y[:, 0] / w.sum()
    G = Z.T @ (w[:, None] * Z) + 0.3 * np.eye(Z.shape[1])
    W = np.linalg.solve(G, Z.T @ (w * (Y[:, 0] - y_mean)))
    X_test = rng.normal(size=(40, 3))
    expected = naive_lifted(X_test, naive_top_k(X_test, anchors, 0.8, k)) @ W + y_mean
    np.testing.assert_allclose(model.predict(X_test), expected, rtol=1e-8, atol=1e-8)
    A = model.soft_assignments(X_test)
    assert np.all((A > 0).sum(axis=1) <= k)
    np.testing.assert_allclose(A.sum(axis=1), 1.0)


def test_top_k_partial_fit_equals_fit():
    X, Y, anchors, _ = data()
    params = dict(softness=0.8, anchors=anchors, top_k=2)
    full = ARNRegressor(7, **params).fit(X, Y)
    parts = ARNRegressor(7, **params)
    for start in range(0, X.shape[0], 70):
        parts.partial_fit(X[start : start + 70], Y[start : start + 70])
    np.testing.assert_allclose(parts.coef_, full.coef_, rtol=1e-9, atol=1e-10)


def test_top_k_costs_little_accuracy_on_local_data():
    X, Y, _, _ = data(n=1500, t=1)
    dense = ARNRegressor(16, random_state=0).fit(X[:1000], Y[:1000, 0])
    sparse = ARNRegressor(16, top_k=4, random_state=0).fit(X[:1000], Y[:1000, 0])
    r2_dense = dense.score(X[1000:], Y[1000:, 0])
    assert sparse.score(X[1000:], Y[1000:, 0]) > r2_dense - 0.05


def test_top_k_rejects_bad_values():
    X, Y, _, _ = data()
    with pytest.raises(ValueError, match="top_k"):
        ARNRegressor(4, top_k=0).fit(X, Y)
