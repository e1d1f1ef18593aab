"""The k-plane start's inner steps against naive references."""

import math

import numpy as np
import pytest
from array_api_compat import array_namespace

from arn_sklearn._anchors._kplane import (
    _JITTER,
    _cross_entropy,
    _residuals,
    _ridge_per_cluster,
    _similarity,
    _similarity_row_factor,
)
from arn_sklearn._kernels._assignment import similarity
from arn_sklearn._kernels._parametrisation import _Parametrisation

xp = array_namespace(np.empty(0))


def _problem(n_targets, seed=0, n=300, d=4):
    rng = np.random.RandomState(seed)
    X1 = np.hstack([rng.normal(size=(n, d)), np.ones((n, 1))])
    Y = rng.normal(size=(n, n_targets))
    return X1, Y, rng.uniform(0.1, 2.0, size=n), rng


@pytest.mark.parametrize("n_targets", [1, 3])
def test_ridge_per_cluster_is_each_clusters_weighted_ridge(n_targets):
    X1, Y, w, rng = _problem(n_targets)
    n_clusters, alpha = 5, 0.7
    labels = rng.randint(n_clusters - 1, size=X1.shape[0])  # the last cluster is empty
    B = _ridge_per_cluster(X1, Y, w, labels, n_clusters, alpha)
    p = X1.shape[1]
    for k in range(n_clusters - 1):
        Xk, Yk, sk = X1[labels == k], Y[labels == k], np.sqrt(w[labels == k])[:, None]
        # Penalty as documented: alpha plus a jitter relative to the Gram's mean diagonal.
        penalty = alpha + _JITTER * (np.sum(w[labels == k] @ (Xk * Xk)) / p + 1.0)
        # Ridge as an augmented least-squares problem, solved by SVD.
        A = np.vstack([sk * Xk, math.sqrt(penalty) * np.eye(p)])
        b = np.vstack([sk * Yk, np.zeros((p, n_targets))])
        np.testing.assert_allclose(B[k], np.linalg.lstsq(A, b, rcond=None)[0], atol=1e-10)
    np.testing.assert_array_equal(B[-1], 0.0)


@pytest.mark.parametrize("n_targets", [1, 3])
def test_residuals_are_every_clusters_squared_error(n_targets):
    X1, Y, _, rng = _problem(n_targets)
    B = rng.normal(size=(4, X1.shape[1], n_targets))
    expected = np.stack([np.sum((Y - X1 @ B[k]) ** 2, axis=1) for k in range(4)], axis=1)
    np.testing.assert_allclose(_residuals(X1, Y, B), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["euclidean", "dot", "absdot", "cosine"])
@pytest.mark.parametrize("scale", [1.0, 2.0**500])
def test_prepared_rows_give_the_kernels_similarity(kind, scale):
    rng = np.random.RandomState(1)
    X = rng.normal(size=(200, 3))
    X[0] *= scale  # beyond 2**400 the kernel scales rows: the general path runs
    C = rng.normal(size=(5, 3))
    C[1] = X[3]  # x == c: the euclidean expansion rounds, the kernel clips at 0
    row_factor = _similarity_row_factor(X, kind, C)
    assert (row_factor is None) == (scale != 1.0 and kind != "cosine")
    for anchors in (C, 3.0 * C, C * 2.0**450):
        np.testing.assert_array_equal(
            _similarity(X, row_factor, anchors, kind, xp), similarity(X, anchors, kind, xp)
        )


@pytest.mark.parametrize("kind", ["euclidean", "dot", "absdot", "cosine"])
def test_classifier_objective_against_naive_formula_and_finite_differences(kind):
    rng = np.random.RandomState(2)
    X = rng.normal(size=(120, 3))
    labels = rng.randint(4, size=120)
    w = rng.uniform(0.5, 1.5, size=120)
    C = rng.normal(size=(4, 3))
    params = _Parametrisation(C.shape, 1.3, kind, learn_softness=True)
    fun = _cross_entropy(X, w, labels, params, kind, C)
    theta = params.pack(C, 1.3)
    loss, grad = fun(theta)
    # Naive: log-softmax of K s(x, c) at each row's label, weighted mean.
    anchors, log_softness = params.unpack(theta)
    logits = math.exp(log_softness) * similarity(X, anchors, kind, xp)
    log_p = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    assert loss == pytest.approx(-np.sum(w * log_p[np.arange(120), labels]) / w.sum(), rel=1e-12)
    h = 1e-6
    numeric = [
        (fun(theta + h * e)[0] - fun(theta - h * e)[0]) / (2 * h) for e in np.eye(theta.size)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
