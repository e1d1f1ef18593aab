"""Anchor initialisation and the data-driven softness."""

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from .._kernels._assignment import similarity, top_two_gap
from ._kplane import kplane_anchors

# KMeans runs on a bounded random subsample so that initialisation never
# dominates a large fit: enough rows per anchor for stable centroids.
KMEANS_ROWS_PER_ANCHOR = 64
KMEANS_MIN_ROWS = 10_000
# From this many anchors on, MiniBatchKMeans (20 passes of 8,192-row batches).
MINIBATCH_KMEANS_MIN_ANCHORS = 256

# softness="auto" sets K so that, for the median sample, the runner-up anchor
# weighs exp(-AUTO_SOFTNESS_LOG_RATIO) times the nearest one. The value is the
# best of a grid in benchmarks/bench_softness.py across datasets and similarities.
AUTO_SOFTNESS_LOG_RATIO = 0.5
AUTO_SOFTNESS_MAX_ROWS = 10_000

# With top_k, softness="auto" is at least the K at which the median sample's
# softmax puts at most this mass outside its k kept anchors. Small targets (0.05,
# 0.15, 0.3) made the held-out R^2 worse on 3 of 4 datasets (a harder softmax is
# less smooth; benchmarks/bench_softness.py --top-k), so the rule is only a guard:
# the median sample keeps at least half of its softmax mass.
AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS = 0.5


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
        supervised k-plane start (:func:`arn_sklearn._anchors._kplane.kplane_anchors`,
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
    seed = random_state.randint(np.iinfo(np.int32).max)
    if n_anchors >= MINIBATCH_KMEANS_MIN_ANCHORS:
        # Lloyd on 64 m rows costs O(64 m^2 d) per iteration (23-38 s for m = 1024,
        # d = 30 on two cores); minibatches bound it (3-9 s in benchmarks/paper_scale.py).
        kmeans = MiniBatchKMeans(
            n_clusters=n_anchors, n_init=1, batch_size=8192, max_iter=20, random_state=seed
        )
    else:
        kmeans = KMeans(n_clusters=n_anchors, n_init=1, random_state=seed)
    kmeans.fit(np.asarray(X[idx], dtype=np.float64), sample_weight=sample_weight[idx])
    anchors = kmeans.cluster_centers_
    return (anchors, softness) if return_softness else anchors


def auto_softness(X, anchors, kind, xp, random_state, top_k=None):
    """Softness ``K`` from the median gap between the two most similar anchors.

    ``K = AUTO_SOFTNESS_LOG_RATIO / median(s_(1) - s_(2))``. With ``top_k`` (less
    than the number of anchors), ``K`` is raised where needed to the smallest
    value at which the median sample's full softmax puts at most
    ``AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS`` outside its ``top_k`` largest
    assignments (found by bisection on ``log K``; that mass decreases with
    ``K``), so that the top-k model is close to the dense one it truncates.

    Returns 1.0 when there is a single anchor or the gap is zero (all samples
    equidistant), where any softness gives the same model.

    Examples
    --------
    >>> import numpy as np
    >>> from array_api_compat import array_namespace
    >>> rng = np.random.RandomState(0)
    >>> X, C = rng.normal(size=(500, 2)), rng.normal(size=(64, 2))
    >>> xp = array_namespace(X)
    >>> dense = auto_softness(X, C, "euclidean", xp, np.random.RandomState(0))
    >>> top2 = auto_softness(X, C, "euclidean", xp, np.random.RandomState(0), top_k=2)
    >>> bool(top2 >= dense)
    True
    """
    if anchors.shape[0] < 2:
        return 1.0
    sample = X[subsample_indices(X.shape[0], AUTO_SOFTNESS_MAX_ROWS, random_state)]
    gap = float(np.median(np.asarray(top_two_gap(sample, anchors, kind, xp))))
    if not np.isfinite(gap) or gap <= 0:
        return 1.0
    softness = AUTO_SOFTNESS_LOG_RATIO / gap
    if top_k is None or top_k >= anchors.shape[0]:
        return softness
    S = np.asarray(similarity(sample, anchors, kind, xp), dtype=np.float64)
    # Decreasing order per row: D[:, j] = s_(1) - s_(j+1) >= 0.
    S.sort(axis=1)
    D = S[:, -1:] - S[:, ::-1]
    target = AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS

    def outside(K):
        E = np.exp(-K * D)
        return float(np.median(E[:, top_k:].sum(axis=1) / E.sum(axis=1)))

    if outside(softness) <= target:
        return softness
    lo, hi = softness, softness
    while outside(hi) > target and hi < softness * 2.0**40:
        lo, hi = hi, hi * 4.0
    for _ in range(30):  # bisection on log K
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if outside(mid) > target else (lo, mid)
    return float(hi)
