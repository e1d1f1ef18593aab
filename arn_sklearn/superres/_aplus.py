"""The A+ baseline (Timofte, De Smet & Van Gool, ACCV 2014)."""

import numbers

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._kernels._assignment import best_abs_dot
from .._utils._validation import fit_method, validate_anchor_array, validate_targets

# A+ divides each LR feature vector by its norm and the HR target by the
# same norm, except for nearly flat patches (norm < 0.1) whose targets are
# left as they are.
_FLAT_NORM = 0.1
_EPS = np.finfo(np.float64).eps
_CHUNK = 8192


def normalise_rows(X):
    """Unit-norm rows (``x / (||x|| + eps)``) and the norms used."""
    norms = np.linalg.norm(X, axis=1) + _EPS
    return X / norms[:, None], norms


def target_scales(norms):
    """A+'s target scaling: the feature norm, or 1 for nearly flat patches."""
    return np.where(norms < _FLAT_NORM, 1.0, norms)


def klines(X, n_anchors, n_iter, random_state):
    """Sign-invariant spherical clustering of unit-norm rows (1-sparse K-SVD).

    Each row is assigned to the atom of largest ``|x . c|``; each atom becomes
    the leading eigenvector of its rows' second-moment matrix (one power step
    from the sign-aligned sum, as K-SVD with one non-zero coefficient does).
    Empty atoms are re-seeded with the worst-represented rows.
    """
    idx = random_state.choice(X.shape[0], size=n_anchors, replace=False)
    D = X[idx].copy()
    for _ in range(n_iter):
        label, corr = best_abs_dot(X, D)
        best, sign = np.abs(corr), np.sign(corr)
        sign[sign == 0] = 1.0
        new = _group_sum(X, label, sign, n_anchors)
        # One power-iteration step towards each cluster's leading eigenvector:
        # v_k = X_k^T X_k u_k, computed for all clusters at once.
        coeff = np.einsum("ij,ij->i", X, new[label])
        power = _group_sum(X, label, coeff, n_anchors)
        counts = np.bincount(label, minlength=n_anchors)
        new = np.where(counts[:, None] > 0, power, new)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            worst = np.argsort(best)[: empty.size]
            new[empty] = X[worst]
        D = new / (np.linalg.norm(new, axis=1, keepdims=True) + _EPS)
    return D


def aplus_anchors(X, n_anchors, *, n_iter=10, max_samples=100_000, random_state=None):
    """A+-style anchors: unit-norm atoms of the normalised rows of ``X``.

    The same anchors :class:`APlusRegressor` learns with ``anchors="klines"``
    (sign-invariant spherical clustering, i.e. K-SVD with one non-zero per
    sample); pass them to :class:`arn_sklearn.ARNRegressor` to compare both
    models on the same anchors.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.superres import aplus_anchors
    >>> X = np.random.RandomState(0).normal(size=(200, 5))
    >>> C = aplus_anchors(X, 4, random_state=0)
    >>> C.shape, bool(np.allclose(np.linalg.norm(C, axis=1), 1))
    ((4, 5), True)
    """
    rng = check_random_state(random_state)
    Xn = normalise_rows(np.asarray(X, dtype=np.float64))[0]
    if Xn.shape[0] < n_anchors:
        raise ValueError(f"Expected n_samples >= n_anchors={n_anchors}; got {Xn.shape[0]}.")
    if Xn.shape[0] > max_samples:
        Xn = Xn[rng.choice(Xn.shape[0], max_samples, replace=False)]
    return klines(Xn, n_anchors, n_iter, rng)


def _group_sum(X, label, weight, n_groups):
    """``out[k] = sum_{i: label_i = k} weight_i x_i`` as one sparse product."""
    S = csr_matrix((weight, (label, np.arange(X.shape[0]))), shape=(n_groups, X.shape[0]))
    return np.asarray(S @ X)


class APlusRegressor(RegressorMixin, BaseEstimator):
    """Adjusted Anchored Neighbourhood Regression (A+), multi-output.

    The features are normalised to unit length. Anchors (A+: a K-SVD
    dictionary) are atoms of the normalised features; each anchor ``c_k``
    owns a ridge regressor fitted on its neighbourhood, the
    ``neighborhood_size`` training samples most correlated with it
    (largest ``|x . c_k|``)::

        P_k = Y_N^T X_N (X_N^T X_N + alpha I)^-1

    with ``X_N`` the normalised neighbourhood features and ``Y_N`` their
    targets divided by the same norms. A test sample is assigned to the
    single anchor of largest ``|x . c_k|`` and predicted as ``P_k x``; the
    regressors have no bias, so the normalisation cancels at test time.

    Parameters
    ----------
    n_anchors : int, default=1024
        Number of anchors and regressors (A+'s default is 1024).
    neighborhood_size : int, default=2048
        Training samples per anchor (A+: 2048); capped at ``n_samples``.
    alpha : float >= 0, default=0.1
        Ridge penalty (A+: 0.1).
    anchors : {"klines", "kmeans", "random"} or array-like, default="klines"
        ``"klines"``: sign-invariant spherical clustering of the normalised
        features, i.e. K-SVD with one non-zero coefficient per sample (A+
        trains K-SVD with three, which we do not reproduce);
        ``"kmeans"``: KMeans centroids of the normalised features, rescaled
        to unit norm; ``"random"``: distinct normalised training samples; an
        array of shape (n_anchors, n_features) is normalised and used.
    n_iter : int, default=10
        Iterations of the ``"klines"`` clustering.
    max_anchor_samples : int, default=100_000
        Anchors are learned on at most this many random rows.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    anchors_ : ndarray of shape (n_anchors, n_features)
        Unit-norm anchors.
    coef_ : ndarray of shape (n_anchors, n_targets, n_features)
        The regressors ``P_k``.
    n_features_in_ : int

    See Also
    --------
    arn_sklearn.ARNRegressor : Soft assignments and one global ridge solve.

    References
    ----------
    R. Timofte, V. De Smet, L. Van Gool, "A+: Adjusted Anchored Neighborhood
    Regression for Fast Super-Resolution", ACCV 2014.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.superres import APlusRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(500, 3)) + 2.0
    >>> Y = X @ rng.normal(size=(3, 2))
    >>> model = APlusRegressor(n_anchors=4, neighborhood_size=100, alpha=1e-6,
    ...                        random_state=0).fit(X, Y)
    >>> model.coef_.shape
    (4, 2, 3)
    >>> bool(np.allclose(model.predict(X), Y, atol=1e-4))
    True
    """

    _parameter_constraints: dict = {
        "n_anchors": [Interval(numbers.Integral, 1, None, closed="left")],
        "neighborhood_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "anchors": [StrOptions({"klines", "kmeans", "random"}), "array-like"],
        "n_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "max_anchor_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_anchors=1024,
        *,
        neighborhood_size=2048,
        alpha=0.1,
        anchors="klines",
        n_iter=10,
        max_anchor_samples=100_000,
        random_state=None,
    ):
        self.n_anchors = n_anchors
        self.neighborhood_size = neighborhood_size
        self.alpha = alpha
        self.anchors = anchors
        self.n_iter = n_iter
        self.max_anchor_samples = max_anchor_samples
        self.random_state = random_state

    @fit_method
    def fit(self, X, y):
        """Learn anchors and one ridge regressor per anchor neighbourhood.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features (e.g. low-resolution patch features); normalised
            to unit length before anchoring and solving.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets (e.g. the high-resolution detail of each patch).

        Returns
        -------
        self : APlusRegressor
            The fitted estimator.
        """
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        validate_targets(y)
        Y = y[:, None] if y.ndim == 1 else y
        n_samples, n_features = X.shape
        if isinstance(self.anchors, str) and n_samples < self.n_anchors:
            raise ValueError(
                f"Expected n_samples >= n_anchors, got n_samples={n_samples} "
                f"< n_anchors={self.n_anchors}."
            )
        rng = check_random_state(self.random_state)
        Xn, norms = normalise_rows(X)
        Yn = Y / target_scales(norms)[:, None]
        anchors = self._learn_anchors(Xn, rng)
        size = min(self.neighborhood_size, n_samples)
        neighbours = _nearest_by_correlation(Xn, anchors, size)
        coef = np.empty((anchors.shape[0], Y.shape[1], n_features))
        eye = self.alpha * np.eye(n_features)
        for k, idx in enumerate(neighbours):
            Xk, Yk = Xn[idx], Yn[idx]
            # Solve (X^T X + alpha I) P^T = X^T Y rather than forming an inverse.
            coef[k] = np.linalg.lstsq(Xk.T @ Xk + eye, Xk.T @ Yk, rcond=None)[0].T
        self.anchors_ = anchors
        self.coef_ = coef
        self._y_ndim = y.ndim
        return self

    def _learn_anchors(self, Xn, rng):
        if not isinstance(self.anchors, str):
            anchors = validate_anchor_array(self.anchors, self.n_anchors, Xn.shape[1])
            return normalise_rows(anchors)[0]
        if self.anchors == "klines":
            return aplus_anchors(
                Xn,
                self.n_anchors,
                n_iter=self.n_iter,
                max_samples=self.max_anchor_samples,
                random_state=rng,
            )
        sub = Xn
        if Xn.shape[0] > self.max_anchor_samples:
            sub = Xn[rng.choice(Xn.shape[0], self.max_anchor_samples, replace=False)]
        if self.anchors == "random":
            return sub[rng.choice(sub.shape[0], self.n_anchors, replace=False)].copy()
        # "kmeans"
        from sklearn.cluster import KMeans

        km = KMeans(self.n_anchors, n_init=1, random_state=rng.randint(2**31 - 1))
        return normalise_rows(km.fit(sub).cluster_centers_)[0]

    def predict(self, X):
        """Predict ``P_k x`` with ``k`` the anchor of largest ``|x . c_k|``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features as in :meth:`fit`; they need no normalisation.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Each sample's regressor applied to it, float64.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        label = self.assign(X)
        out = np.empty((X.shape[0], self.coef_.shape[1]))
        for k in np.unique(label):
            rows = label == k
            out[rows] = X[rows] @ self.coef_[k].T
        return out[:, 0] if self._y_ndim == 1 else out

    def assign(self, X):
        """Index of the anchor most correlated (in absolute value) with each row."""
        check_is_fitted(self)
        X = np.asarray(X, dtype=np.float64)
        return (
            np.concatenate(
                [
                    np.argmax(np.abs(X[s : s + _CHUNK] @ self.anchors_.T), axis=1)
                    for s in range(0, X.shape[0], _CHUNK)
                ]
            )
            if X.shape[0]
            else np.zeros(0, dtype=np.intp)
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _nearest_by_correlation(Xn, anchors, size):
    """For each anchor, the indices of the ``size`` rows with largest ``|x . c|``.

    Keeps a running top-``size`` per anchor over row chunks so that the
    ``n_samples x n_anchors`` correlation matrix is never held in full.
    """
    m = anchors.shape[0]
    best_val = np.full((m, 0), -np.inf)
    best_idx = np.zeros((m, 0), dtype=np.intp)
    for start in range(0, Xn.shape[0], _CHUNK):
        corr = np.abs(anchors @ Xn[start : start + _CHUNK].T)
        vals = np.hstack([best_val, corr])
        idx = np.hstack(
            [best_idx, np.broadcast_to(np.arange(start, start + corr.shape[1]), corr.shape)]
        )
        if vals.shape[1] > size:
            keep = np.argpartition(-vals, size - 1, axis=1)[:, :size]
            vals = np.take_along_axis(vals, keep, axis=1)
            idx = np.take_along_axis(idx, keep, axis=1)
        best_val, best_idx = vals, idx
    return [np.sort(row) for row in best_idx]
