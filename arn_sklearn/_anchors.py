"""Anchor initialisation and the data-driven softness."""

import numpy as np
from sklearn.cluster import KMeans

from ._assignment import top_two_gap

# KMeans runs on a bounded random subsample so that initialisation never
# dominates a large fit: enough rows per anchor for stable centroids.
KMEANS_ROWS_PER_ANCHOR = 64
KMEANS_MIN_ROWS = 10_000

# softness="auto" sets K so that, for the median sample, the runner-up anchor
# weighs exp(-AUTO_SOFTNESS_LOG_RATIO) times the nearest one. The value is the
# best of a grid in benchmarks/bench_softness.py across datasets and similarities.
AUTO_SOFTNESS_LOG_RATIO = 0.5
AUTO_SOFTNESS_MAX_ROWS = 10_000


def subsample_indices(n_samples, n_rows, random_state):
    """Sorted indices of at most ``n_rows`` rows drawn without replacement."""
    if n_samples <= n_rows:
        return np.arange(n_samples)
    return np.sort(random_state.choice(n_samples, size=n_rows, replace=False))


def init_anchors(
    X,
    sample_weight,
    n_anchors,
    method,
    random_state,
    y=None,
    *,
    similarity="euclidean",
    alpha=1.0,
    return_softness=False,
):
    """Initial anchors from a numpy array ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,)
        Passed to KMeans; rows of zero weight are never drawn as random anchors.
    n_anchors : int
    method : {"kmeans", "random", "kplane"}
        KMeans centroids of a bounded subsample, distinct random rows, or the
        supervised k-plane start (:func:`arn_sklearn._kplane.kplane_anchors`,
        on the same bounded subsample; needs ``y``).
    random_state : numpy.random.RandomState
    y : ndarray of shape (n_samples,) or (n_samples, n_targets), default=None
        Targets, used by ``"kplane"`` only.
    similarity : str, default="euclidean"
        Shapes the k-plane anchors (leading directions for ``"absdot"``).
    alpha : float, default=1.0
        Ridge penalty of the k-plane regressors.
    return_softness : bool, default=False
        Also return the softness that goes with the anchors: the k-plane
        classifier's, or None for the unsupervised methods.

    Returns
    -------
    anchors : ndarray of shape (n_anchors, n_features), float64
    softness : float or None
        Only with ``return_softness``.
    """
    softness = None
    if method == "random":
        candidates = np.flatnonzero(sample_weight > 0)
        if candidates.size < n_anchors:
            candidates = np.arange(X.shape[0])
        idx = random_state.choice(candidates, size=n_anchors, replace=False)
        anchors = np.asarray(X[np.sort(idx)], dtype=np.float64)
        return (anchors, softness) if return_softness else anchors
    n_rows = max(KMEANS_MIN_ROWS, KMEANS_ROWS_PER_ANCHOR * n_anchors)
    idx = subsample_indices(X.shape[0], n_rows, random_state)
    if method == "kplane":
        if y is None:
            raise ValueError("anchors='kplane' needs the targets y.")
        from ._kplane import kplane_anchors

        Y = np.asarray(y, dtype=np.float64).reshape(X.shape[0], -1)
        anchors, softness = kplane_anchors(
            np.asarray(X[idx], dtype=np.float64),
            Y[idx],
            np.asarray(sample_weight[idx], dtype=np.float64),
            n_anchors,
            similarity,
            alpha,
            random_state,
        )
        return (anchors, softness) if return_softness else anchors
    kmeans = KMeans(
        n_clusters=n_anchors, n_init=1, random_state=random_state.randint(np.iinfo(np.int32).max)
    )
    kmeans.fit(np.asarray(X[idx], dtype=np.float64), sample_weight=sample_weight[idx])
    anchors = kmeans.cluster_centers_
    return (anchors, softness) if return_softness else anchors


def auto_softness(X, anchors, kind, xp, random_state):
    """Softness ``K`` from the median gap between the two most similar anchors.

    Returns 1.0 when there is a single anchor or the gap is zero (all samples
    equidistant), where any softness gives the same model.
    """
    if anchors.shape[0] < 2:
        return 1.0
    sample = X[subsample_indices(X.shape[0], AUTO_SOFTNESS_MAX_ROWS, random_state)]
    gap = float(np.median(np.asarray(top_two_gap(sample, anchors, kind, xp))))
    if not np.isfinite(gap) or gap <= 0:
        return 1.0
    return AUTO_SOFTNESS_LOG_RATIO / gap
