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


def init_anchors(X, sample_weight, n_anchors, method, random_state):
    """Initial anchors from a numpy array ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,)
        Passed to KMeans; rows of zero weight are never drawn as random anchors.
    n_anchors : int
    method : {"kmeans", "random"}
        KMeans centroids of a bounded subsample, or distinct random rows.
    random_state : numpy.random.RandomState

    Returns
    -------
    anchors : ndarray of shape (n_anchors, n_features), float64
    """
    if method == "random":
        candidates = np.flatnonzero(sample_weight > 0)
        if candidates.size < n_anchors:
            candidates = np.arange(X.shape[0])
        idx = random_state.choice(candidates, size=n_anchors, replace=False)
        return np.asarray(X[np.sort(idx)], dtype=np.float64)
    n_rows = max(KMEANS_MIN_ROWS, KMEANS_ROWS_PER_ANCHOR * n_anchors)
    idx = subsample_indices(X.shape[0], n_rows, random_state)
    kmeans = KMeans(
        n_clusters=n_anchors, n_init=1, random_state=random_state.randint(np.iinfo(np.int32).max)
    )
    kmeans.fit(np.asarray(X[idx], dtype=np.float64), sample_weight=sample_weight[idx])
    return kmeans.cluster_centers_


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
