import numpy as np
import pytest
from array_api_compat import array_namespace

import arn_sklearn._kernels._assignment as assignment
from arn_sklearn._kernels._assignment import similarity, soft_assignments
from arn_sklearn._kernels._topk import densify, predict_top_k, top_k_assignments

xp = array_namespace(np.empty(0))


def naive_similarity(X, anchors, kind):
    """Row by row, with the direct difference (no expansion)."""
    S = np.empty((len(X), len(anchors)))
    for i, x in enumerate(X):
        for j, c in enumerate(anchors):
            if kind == "euclidean":
                S[i, j] = -np.sum((x - c) ** 2)
            elif kind == "dot":
                S[i, j] = x @ c
            elif kind == "absdot":
                S[i, j] = abs(x @ c)
            else:
                S[i, j] = x @ c / max(np.linalg.norm(x) * np.linalg.norm(c), 1e-12)
    return S


def naive_softmax(S, softness):
    E = np.exp(softness * (S - S.max(axis=1, keepdims=True)))
    return E / E.sum(axis=1, keepdims=True)


@pytest.fixture
def small_blocks(monkeypatch):
    # Many row blocks and threads even on a small input.
    monkeypatch.setattr(assignment, "_BLOCK_BYTES", 8 * 7 * 5)
    monkeypatch.setattr("arn_sklearn._kernels._topk._SCREEN_BLOCK_BYTES", 4 * 7 * 5)


@pytest.mark.parametrize("kind", ["euclidean", "dot", "absdot", "cosine"])
def test_similarity_and_softmax_match_naive(kind, small_blocks):
    rng = np.random.RandomState(0)
    X, anchors = rng.normal(size=(203, 4)), rng.normal(size=(7, 4))
    X[3] = 0.0  # a zero row for the cosine guard
    S = similarity(X, anchors, kind, xp)
    np.testing.assert_allclose(S, naive_similarity(X, anchors, kind), rtol=1e-12, atol=1e-12)
    A = soft_assignments(X, anchors, kind, 0.7, xp)
    np.testing.assert_allclose(
        A, naive_softmax(naive_similarity(X, anchors, kind), 0.7), atol=1e-12
    )
    buffer = np.full((203, 7), np.nan)
    assert soft_assignments(X, anchors, kind, 0.7, xp, out=buffer) is buffer
    np.testing.assert_allclose(buffer, A)


@pytest.mark.parametrize("k", [1, 2, 6, 7])
@pytest.mark.parametrize("argmax_max_k", [8, 0])
def test_top_k_matches_naive_softmax(k, argmax_max_k, small_blocks, monkeypatch):
    import arn_sklearn._kernels._topk as sparse

    # Both selections: k passes of argmax and argpartition.
    monkeypatch.setattr(sparse, "_ARGMAX_MAX_K", argmax_max_k)
    rng = np.random.RandomState(1)
    X, anchors = rng.normal(size=(150, 3)), rng.normal(size=(7, 3))
    idx, vals = top_k_assignments(X, anchors, "euclidean", 0.8, k, xp)
    full = naive_softmax(naive_similarity(X, anchors, "euclidean"), 0.8)
    expected_idx = np.argsort(-full, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, expected_idx)
    kept = np.take_along_axis(full, expected_idx, axis=1)
    np.testing.assert_allclose(vals, kept / kept.sum(axis=1, keepdims=True), atol=1e-12)


@pytest.mark.parametrize("scale", [1e155, 1e200, 1e300])
@pytest.mark.parametrize("kind", ["euclidean", "dot", "absdot", "cosine"])
def test_huge_finite_inputs_give_finite_one_hot_assignments(scale, kind):
    rng = np.random.RandomState(2)
    anchors = rng.normal(size=(5, 3))
    X = rng.normal(size=(40, 3))
    X[::2] *= scale  # far outside the anchors' range, mixed with ordinary rows
    S = similarity(X, anchors, kind, xp)
    assert not np.any(np.isnan(S))
    A = soft_assignments(X, anchors, kind, 1.0, xp)
    assert np.all(np.isfinite(A))
    np.testing.assert_allclose(A.sum(axis=1), 1.0)
    idx, vals = top_k_assignments(X, anchors, kind, 1.0, 2, xp)
    assert np.all(np.isfinite(vals))
    np.testing.assert_allclose(vals.sum(axis=1), 1.0)
    # Ordinary rows are unaffected by the huge ones.
    np.testing.assert_allclose(S[1::2], naive_similarity(X[1::2], anchors, kind), atol=1e-12)
    # The huge rows' winner is the direction-wise correct anchor, as a one-hot.
    if kind in ("euclidean", "dot"):
        huge = X[::2]
        expected = np.argmax(naive_similarity(huge / scale, anchors, "dot"), axis=1)
        np.testing.assert_array_equal(np.argmax(A[::2], axis=1), expected)
        np.testing.assert_allclose(A[::2].max(axis=1), 1.0)
        np.testing.assert_array_equal(idx[::2, 0], expected)
        np.testing.assert_allclose(vals[::2, 0], 1.0)


def test_huge_anchors_and_rows_together():
    anchors = np.array([[1e250, 0.0], [-1e250, 0.0], [0.0, 3e250]])
    X = np.array([[0.9e250, 0.1e250], [-2e250, 1.0], [1e249, 2.0], [0.0, 1e300]])
    S = similarity(X, anchors, "euclidean", xp)
    assert not np.any(np.isnan(S))
    A = soft_assignments(X, anchors, "euclidean", 1.0, xp)
    np.testing.assert_array_equal(np.argmax(A, axis=1), [0, 1, 0, 2])
    np.testing.assert_allclose(A.max(axis=1), 1.0)
    idx, vals = top_k_assignments(X, anchors, "euclidean", 1.0, 1, xp)
    np.testing.assert_array_equal(idx[:, 0], [0, 1, 0, 2])


def test_non_finite_input_is_rejected():
    with pytest.raises(ValueError, match="NaN or infinity"):
        similarity(np.array([[np.nan, 0.0]]), np.zeros((2, 2)), "euclidean", xp)


@pytest.mark.parametrize("k", [1, 3])
def test_predict_top_k_matches_densified_lifted_product(k):
    rng = np.random.RandomState(3)
    X, anchors = rng.normal(size=(120, 3)), rng.normal(size=(6, 3))
    W = rng.normal(size=(24, 5))
    idx, vals = top_k_assignments(X, anchors, "euclidean", 0.8, k, xp)
    A = densify(idx, vals, 6, xp)
    X1 = np.hstack([X, np.ones((120, 1))])
    expected = np.einsum("ik,ij,kjt->it", A, X1, W.reshape(6, 4, 5))
    np.testing.assert_allclose(predict_top_k(X, idx, vals, W, xp), expected, atol=1e-12)


@pytest.mark.parametrize("k", [2, 4])
def test_auto_softness_with_top_k_bounds_the_dropped_mass(k):
    from arn_sklearn._anchors._init import AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS, auto_softness

    rng = np.random.RandomState(0)
    X, anchors = rng.normal(size=(2000, 3)), rng.normal(size=(40, 3))
    dense = auto_softness(X, anchors, "euclidean", xp, np.random.RandomState(0))
    K = auto_softness(X, anchors, "euclidean", xp, np.random.RandomState(0), top_k=k)
    assert K >= dense

    def median_outside(softness):
        A = naive_softmax(naive_similarity(X, anchors, "euclidean"), softness)
        A.sort(axis=1)
        return np.median(A[:, :-k].sum(axis=1))

    target = AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS
    if K > dense:  # the smallest K that meets the target, to the bisection's precision
        assert median_outside(K) == pytest.approx(target, rel=1e-3)
        assert median_outside(0.99 * K) > target
    else:
        assert median_outside(K) <= target
    assert auto_softness(X, anchors, "euclidean", xp, np.random.RandomState(0), top_k=40) == dense
