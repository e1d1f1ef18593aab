"""Supervised anchor initialisation: clusterwise linear regression ("k-plane").

KMeans anchors follow the input density, not the target: when the target's
linear pieces are cut along directions of small input variance, gradient
training from KMeans anchors lands in a wrong partition. Clusterwise linear
regression (Späth 1979, cited by the ARN paper) alternates two steps, a hard EM
on the paper's objective in its hard-assignment limit (eqs. 6-9):

1. fit one ridge regressor per cluster (weighted, bias folded in and penalised);
2. move every row to the regressor that fits it best.

Restarts from random partitions are scored on that hard objective,
``sum_i w_i min_k ||y_i - B_k^T [x_i, 1]||^2 + alpha sum_k ||B_k||^2``.

The anchors then have to reproduce the partition through the ARN's own soft
assignment. The clusters' centroids (or, for ``"absdot"``, their leading
directions) are the start, but centroids are noisy along high-variance
directions, and their Voronoi cells tilt away from cuts along low-variance ones.
So the anchors and the softness are then fitted as a softmax classifier of the
labels, ``softmax(K s(x, C))`` by weighted cross-entropy (L-BFGS over ``K C``
and ``log K``, as in ``_varpro``), which also gives the starting softness.
Plain numpy; nothing here knows the estimator API.
"""

import math

import numpy as np
from array_api_compat import array_namespace
from scipy.optimize import minimize

from .._kernels._assignment import _Prepared, _scaled_rows, similarity_backward, softmax
from .._kernels._assignment import similarity as similarity_matrix
from .._kernels._parametrisation import _Parametrisation
from .._utils._threads import single_threaded_blas

# Random starts of the k-plane partition (the best hard objective is kept). On
# the report, Friedman and arm tasks of benchmarks/learned_vs_mlp.py the best
# of 2 gave the same learned fits as the best of 4 at 25-30% less fit time, and
# one run the same test MSE as the best of 2 at 18 of 24 seeds (0-7), a lower
# mean on each task, for ~20% less start time (the k-plane start, 2026-12 s6).
KPLANE_N_INIT = 1
KPLANE_MAX_ITER = 30
# L-BFGS iterations of the classifier that turns the partition into anchors.
CLASSIFIER_MAX_ITER = 100
# A relative ridge keeps per-cluster solves well posed when alpha is 0.
_JITTER = 1e-10


def _ridge_per_cluster(X1, Y, w, labels, n_clusters, alpha):
    """Coefficients ``B`` of shape (n_clusters, d + 1, t), one weighted ridge per cluster."""
    p, t = X1.shape[1], Y.shape[1]
    # Rows grouped by cluster (stable: each cluster's rows in their original
    # order, so its Gram is the same GEMM as on ``X1[labels == k]``), then one
    # stacked solve instead of one LAPACK call per cluster.
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=n_clusters))])
    Xs, Ys, ws = X1[order], Y[order], w[order]
    gram = np.empty((n_clusters, p, p))
    rhs = np.zeros((n_clusters, p, t))
    for k in range(n_clusters):
        Xk, wk = Xs[bounds[k] : bounds[k + 1]], ws[bounds[k] : bounds[k + 1], None]
        gram[k] = Xk.T @ (wk * Xk)
        rhs[k] = Xk.T @ (wk * Ys[bounds[k] : bounds[k + 1]])
    diagonal = np.einsum("kii->ki", gram)  # a writable view
    diagonal += alpha + _JITTER * (np.trace(gram, axis1=1, axis2=2)[:, None] / p + 1.0)
    # An empty cluster: gram = (alpha + jitter) I and rhs = 0, so B = 0.
    return np.linalg.solve(gram, rhs)


def _residuals(X1, Y, B):
    """Squared residual of every row under every cluster's regressor, (n, n_clusters)."""
    n, p = X1.shape
    m, _, t = B.shape
    # One GEMM for all clusters: (n, p) @ (p, m t).
    diff = (X1 @ np.transpose(B, (1, 0, 2)).reshape(p, m * t)).reshape(n, m, t)
    diff -= Y[:, None, :]
    if t == 1:  # the square itself, in place (the einsum's value, without its overhead)
        R = diff[:, :, 0]
        return np.multiply(R, R, out=R)
    return np.einsum("nmt,nmt->nm", diff, diff)


def kplane_labels(X, Y, w, n_clusters, alpha, random_state, *, max_iter=KPLANE_MAX_ITER):
    """One k-plane run from a random Voronoi partition.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
    objective : float
        The hard objective of the final partition.
    """
    n = X.shape[0]
    X1 = np.hstack([X, np.ones((n, 1))])
    centres = X[random_state.choice(n, size=n_clusters, replace=False)]
    dist = (X * X).sum(1)[:, None] - 2 * X @ centres.T + (centres * centres).sum(1)[None, :]
    labels = np.argmin(dist, axis=1)
    objective = np.inf
    for _ in range(max_iter):
        B = _ridge_per_cluster(X1, Y, w, labels, n_clusters, alpha)
        R = _residuals(X1, Y, B)
        new = np.argmin(R, axis=1)
        best_fit = R[np.arange(n), new]
        # An emptied cluster takes the worst-fitted row, so that every anchor is used.
        for k in np.flatnonzero(np.bincount(new, minlength=n_clusters) == 0):
            worst = int(np.argmax(best_fit * w))
            new[worst], best_fit[worst] = k, 0.0
        objective = float(np.sum(w * R[np.arange(n), new]) + alpha * np.sum(B * B))
        if np.array_equal(new, labels):
            break
        labels = new
    return labels, objective


def anchors_from_labels(X, w, labels, n_clusters, similarity):
    """Anchors of a hard partition: weighted centroids, or leading directions for absdot."""
    anchors = np.zeros((n_clusters, X.shape[1]))
    for k in range(n_clusters):
        rows = np.flatnonzero(labels == k)
        wk = w[rows] if rows.size and w[rows].sum() > 0 else np.ones(rows.size)
        Xk = X[rows]
        if rows.size == 0:
            continue
        if similarity == "absdot":
            # |x.c| is sign-symmetric: the cluster's axis, not its mean, identifies it.
            _, _, vt = np.linalg.svd(np.sqrt(wk)[:, None] * Xk, full_matrices=False)
            rms = np.sqrt(np.average(np.sum(Xk * Xk, axis=1), weights=wk))
            anchors[k] = vt[0] * rms
        else:
            anchors[k] = np.average(Xk, axis=0, weights=wk)
    return anchors


def _similarity_row_factor(X, similarity, anchors):
    """The rows' factor ``R`` of ``similarity(X, C) = post(R @ prepared(C))``, or None.

    None where the rows need scaling (entries beyond ``2**400``): the general
    kernel then runs at every evaluation.
    """
    R, f1, _ = _scaled_rows(X, _Prepared(anchors, similarity))
    return R if f1 is None else None


def _similarity(X, row_factor, C, similarity, xp):
    """``similarity(X, C)`` from the prepared rows: one GEMM and the kernel's post-processing."""
    prepared = _Prepared(C, similarity)
    if row_factor is None or prepared.t != 1.0:
        return similarity_matrix(X, C, similarity, xp)
    S = row_factor @ prepared.CT
    if similarity == "euclidean":
        np.minimum(S, 0.0, out=S)  # as the kernel does: the expansion can round above 0
    elif similarity == "absdot":
        np.abs(S, out=S)
    return S


def _cross_entropy(X, w, labels, params, similarity, anchors):
    """The classifier's objective: ``theta -> (loss, gradient)`` for L-BFGS.

    ``loss = -sum_i w_i log A_i[labels_i] / sum_i w_i`` with
    ``A = softmax(K s(X, C))``, ``(C, log K) = params.unpack(theta)``.
    ``anchors`` (any representative ones) choose the rows' similarity factor.
    """
    xp = array_namespace(X)
    rows = np.arange(X.shape[0])
    w = w / w.sum()
    # The rows' factor of the similarity GEMM does not change between
    # evaluations: prepared once (the same product and values as ``similarity``).
    row_factor = _similarity_row_factor(X, similarity, anchors)

    def fun(theta):
        C, log_softness = params.unpack(theta)
        K = math.exp(log_softness)
        S = _similarity(X, row_factor, C, similarity, xp)
        A = softmax(K * S, xp)
        loss = -float(np.sum(w * np.log(A[rows, labels] + 1e-300)))
        A[rows, labels] -= 1.0  # A - onehot, in place
        grad_logits = w[:, None] * A
        grad_C, _ = similarity_backward(X, C, S, K * grad_logits, similarity, xp)
        grad_log_softness = K * float(np.sum(grad_logits * S))
        return loss, params.gradient(theta, grad_C, grad_log_softness)

    return fun


def fit_assignment_classifier(X, w, labels, anchors, softness, similarity, learn_softness=True):
    """Anchors and softness whose soft assignment best predicts ``labels``.

    Minimises the weighted cross-entropy ``-sum_i w_i log A_i[labels_i] / sum_i w_i``
    with ``A = softmax(K s(X, C))`` over ``K C`` and ``log K`` (L-BFGS-B).

    Returns
    -------
    anchors : ndarray of shape (n_anchors, n_features)
    softness : float
    """
    params = _Parametrisation(anchors.shape, softness, similarity, learn_softness)
    fun = _cross_entropy(X, w, labels, params, similarity, anchors)
    # Small products on (n, m) arrays: threads cost more than they save.
    with single_threaded_blas():
        result = minimize(
            fun,
            params.pack(anchors, softness),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": CLASSIFIER_MAX_ITER},
        )
    C, log_softness = params.unpack(result.x)
    return C, math.exp(log_softness)


def kplane_anchors(X, Y, w, n_anchors, similarity, alpha, random_state, *, n_init=KPLANE_N_INIT):
    """Anchors and softness from the best of ``n_init`` k-plane runs (lowest hard objective).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_targets)
        Centred on the weighted mean here, as the closed form does.
    w : ndarray of shape (n_samples,)
    n_anchors : int
    similarity : str
    alpha : float
        Ridge penalty of each cluster's regressor.
    random_state : numpy.random.RandomState
    n_init : int

    Returns
    -------
    anchors : ndarray of shape (n_anchors, n_features)
    softness : float
        The classifier's softness (see :func:`fit_assignment_classifier`).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64).reshape(X.shape[0], -1)
    w = np.asarray(w, dtype=np.float64)
    Y = Y - np.average(Y, axis=0, weights=w if w.sum() > 0 else None)
    best = None
    for _ in range(n_init):
        labels, objective = kplane_labels(X, Y, w, n_anchors, alpha, random_state)
        if best is None or objective < best[1]:
            best = (labels, objective)
    labels = best[0]
    centroids = anchors_from_labels(X, w, labels, n_anchors, similarity)
    # Start the classifier a unit logit gap apart: K = 1 / median gap.
    S = np.sort(similarity_matrix(X, centroids, similarity, array_namespace(X)), axis=1)
    gap = float(np.median(S[:, -1] - S[:, -2])) if n_anchors > 1 else 1.0
    softness = 1.0 / gap if math.isfinite(gap) and gap > 0 else 1.0
    if n_anchors == 1:
        return centroids, softness
    return fit_assignment_classifier(X, w, labels, centroids, softness, similarity)
