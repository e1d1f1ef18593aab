"""Anchor initialisation and the data-driven softness."""

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from .._kernels._assignment import best_abs_dot, similarity
from .._utils._arrays import to_numpy
from ._kplane import kplane_anchors

# KMeans runs on a bounded random subsample so that initialisation never
# dominates a large fit: enough rows per anchor for stable centroids.
KMEANS_ROWS_PER_ANCHOR = 64
KMEANS_MIN_ROWS = 10_000
# Lloyd-style iterations of the sign-invariant spherical KMeans (absdot) at most.
SPHERICAL_MAX_ITER = 30
# Seedings of the spherical KMeans (the best fit is kept): one seeding left two
# anchors on one of 6 planted lines in 1 of 4 test draws.
SPHERICAL_N_INIT = 3
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
# Rows whose bounds on that mass clear the median by this much are not
# re-evaluated in the bisection (far above float64 rounding of a mass in [0, 1]).
_BRACKET_MARGIN = 1e-9


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
        KMeans centroids of a bounded subsample (for ``similarity="absdot"``,
        :func:`spherical_kmeans`: unit directions, sign-invariant), distinct
        random rows, or the supervised k-plane start
        (:func:`arn_sklearn._anchors._kplane.kplane_anchors`, on the same
        bounded subsample; needs ``y``).
    random_state : numpy.random.RandomState
    y : ndarray of shape (n_samples,) or (n_samples, n_targets), default=None
        Targets, used by ``"kplane"`` only.
    similarity : str, default="euclidean"
        Shapes the k-plane anchors (leading directions for ``"absdot"``) and
        the KMeans ones (spherical and sign-invariant for ``"absdot"``).
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
    if similarity == "absdot":
        anchors = spherical_kmeans(
            np.asarray(X[idx], dtype=np.float64), sample_weight[idx], n_anchors, random_state
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


def spherical_kmeans(
    X, sample_weight, n_anchors, random_state, max_iter=SPHERICAL_MAX_ITER, n_init=SPHERICAL_N_INIT
):
    """Unit directions that cluster the rows by ``|x . c|`` (sign-invariant spherical KMeans).

    The clustering that suits ``similarity="absdot"``: a row and its negative
    have the same similarities, and Euclidean KMeans on such data puts
    centroids near the origin, where ``|x . c|`` tells no rows apart. Rows are
    scaled to unit norm; seeding is k-means++ on the distance
    ``1 - (x . c)^2`` (the squared sine of the angle between the lines); each
    iteration assigns every row to its largest ``|x . c|`` and moves each
    anchor to the leading eigenvector of its rows' weighted second-moment
    matrix (the line that fits them best, as 1-sparse K-SVD does). An empty
    cluster takes the row its anchor fits worst.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,)
    n_anchors : int
    random_state : numpy.random.RandomState
    max_iter : int, default=SPHERICAL_MAX_ITER
        Iterations at most; it stops earlier when no row changes cluster.
    n_init : int, default=SPHERICAL_N_INIT
        Seedings tried; the anchors with the largest ``sum_i w_i max_k (u_i . c_k)^2``
        are kept.

    Returns
    -------
    anchors : ndarray of shape (n_anchors, n_features)
        Unit-norm rows (a zero row only for all-zero ``X``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> lines = np.eye(3)[rng.randint(3, size=300)] * rng.choice([-1, 1], size=(300, 1))
    >>> C = spherical_kmeans(lines + 0.01 * rng.normal(size=(300, 3)), np.ones(300), 3, rng)
    >>> np.round(np.sort(np.abs(C).max(axis=1)), 3)
    array([1., 1., 1.])
    """
    X = np.asarray(X, dtype=np.float64)
    w = np.asarray(sample_weight, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    keep = (norms > 0) & (w > 0)
    if not np.any(keep):
        return np.zeros((n_anchors, X.shape[1]))
    U, w = X[keep] / norms[keep, None], w[keep]
    best, best_fit = None, -np.inf
    for _ in range(n_init):
        anchors = _spherical_lloyd(U, w, _spherical_seeds(U, w, n_anchors, random_state), max_iter)
        fit = float(w @ best_abs_dot(U, anchors)[1] ** 2)
        if fit > best_fit:
            best, best_fit = anchors, fit
    return best


def _spherical_lloyd(U, w, anchors, max_iter):
    """Lloyd iterations of :func:`spherical_kmeans` from the unit ``anchors``."""
    n_anchors = anchors.shape[0]
    labels = None
    for _ in range(max_iter):
        # Blocked and in float32: no (n, n_anchors) matrix of cosines.
        new, cosines = best_abs_dot(U, anchors)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        fit = np.abs(cosines)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(n_anchors + 1))
        for k in range(n_anchors):
            members = order[bounds[k] : bounds[k + 1]]
            if members.size == 0:
                worst = int(np.argmin(fit))
                anchors[k], fit[worst] = U[worst], 1.0
                continue
            Uk = U[members]
            # The leading eigenvector of sum_i w_i u_i u_i^T: the best-fitting line.
            moment = (Uk * w[members, None]).T @ Uk
            anchors[k] = np.linalg.eigh(moment)[1][:, -1]
    return anchors


def _spherical_seeds(U, w, n_anchors, random_state):
    """k-means++ seeds of unit rows ``U`` for the distance ``1 - (u . c)^2``."""
    n_samples = U.shape[0]
    anchors = np.empty((n_anchors, U.shape[1]))
    anchors[0] = U[random_state.choice(n_samples, p=w / w.sum())]
    distance = 1.0 - (U @ anchors[0]) ** 2
    for k in range(1, n_anchors):
        p = w * np.maximum(distance, 0.0)
        # Fewer distinct lines than anchors: draw by weight (duplicates stay duplicates).
        p = w if not p.sum() > 0 else p
        anchors[k] = U[random_state.choice(n_samples, p=p / p.sum())]
        distance = np.minimum(distance, 1.0 - (U @ anchors[k]) ** 2)
    return anchors


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
    # One similarity block, sorted once, serves the gap and the top-k guard.
    S = np.asarray(to_numpy(similarity(sample, anchors, kind, xp)), dtype=np.float64)
    S = np.sort(S, axis=1)
    gap = float(np.median(S[:, -1] - S[:, -2]))
    if not np.isfinite(gap) or gap <= 0:
        return 1.0
    softness = AUTO_SOFTNESS_LOG_RATIO / gap
    if top_k is None or top_k >= anchors.shape[0]:
        return softness
    # Decreasing order per row: D[:, j] = s_(1) - s_(j+1) >= 0.
    D = S[:, -1:] - S[:, ::-1]
    target = AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS
    # One buffer for every evaluation: a fresh rows x anchors array per call
    # made each one 6x slower (page faults), with the same values.
    E = np.empty_like(D)

    def masses(K, rows=None):
        """Each row's softmax mass outside its ``top_k`` largest at softness ``K``."""
        Dr = D if rows is None else D[rows]
        Er = E[: Dr.shape[0]]
        np.multiply(Dr, -K, out=Er)
        np.exp(Er, out=Er)
        return Er[:, top_k:].sum(axis=1) / Er.sum(axis=1)

    f_hi = masses(softness)
    if np.median(f_hi) <= target:
        return softness
    lo, hi = softness, softness
    while np.median(f_hi) > target and hi < softness * 2.0**40:
        lo, hi = hi, hi * 4.0
        f_lo, f_hi = f_hi, masses(hi)
    # The median's order statistics (one for an odd count of rows).
    n = D.shape[0]
    r1, r2 = (n - 1) // 2, n // 2
    for _ in range(30):  # bisection on log K
        mid = np.sqrt(lo * hi)
        # Each row's mass decreases with K, so f(mid) lies in [f_hi, f_lo]:
        # rows sure to fall below or above the median's order statistics need
        # no evaluation (the margin covers rounding), and the median is the
        # same number as over all rows.
        below = f_lo < np.partition(f_hi, r1)[r1] - _BRACKET_MARGIN
        above = f_hi > np.partition(f_lo, r2)[r2] + _BRACKET_MARGIN
        active = np.flatnonzero(~(below | above))
        values = masses(mid, active)
        skip = int(np.count_nonzero(below))
        middle = np.partition(values, [r1 - skip, r2 - skip])[[r1 - skip, r2 - skip]]
        if np.median(middle) > target:
            lo = mid
            f_lo[active] = values
        else:
            hi = mid
            f_hi[active] = values
    return float(hi)
