"""ARNRegressorCV: k-fold cross-validation of alpha (and softness) in one pass.

With the anchors and the softness fixed, everything a fold needs is a sum over
its rows (:class:`SufficientStatistics`). One pass accumulates each test fold
separately; the training system of fold ``j`` is the sum of the other folds.
One eigendecomposition ``G = Q diag(lam) Q^T`` per fold then gives the ridge
solution for every alpha at the price of a matrix product, and the held-out
squared error expands into the fold's own statistics, so no second pass over
the data is needed (see :func:`fold_squared_errors`).
"""

from numbers import Integral, Real

import numpy as np
from array_api_compat import array_namespace
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _dask
from ._assignment import SIMILARITIES, soft_assignments
from ._estimator import ARNRegressor
from ._lifting import SufficientStatistics, accumulate, iter_chunks, lifted_size
from ._solve import centered_rhs

# Eigenvalues of the regularised system below this fraction of the largest are
# treated as zero (minimum-norm solution), as the Cholesky path falls back to lstsq.
_EIG_RCOND = 1e-13


def ridge_path(stats, alphas):
    """Ridge solutions of one system for many penalties from one eigendecomposition.

    Parameters
    ----------
    stats : SufficientStatistics
        Training statistics (numpy arrays, full symmetric ``gram``).
    alphas : ndarray of shape (n_alphas,)

    Returns
    -------
    W : ndarray of shape (n_alphas, p, n_targets)
        ``(G + alpha I)^{-1} (Z^T W (Y - y_mean))`` for each alpha.
    y_mean : ndarray of shape (n_targets,)
    """
    rhs, y_mean = centered_rhs(stats, np)
    lam, Q = np.linalg.eigh(stats.gram)
    lam = np.maximum(lam, 0.0)  # the Gram matrix is PSD; clip rounding noise
    Qt_rhs = Q.T @ rhs
    denom = lam[None, :] + alphas[:, None]
    inv = np.where(denom > _EIG_RCOND * denom.max(axis=1, keepdims=True), 1.0 / denom, 0.0)
    return np.einsum("pq,aq,qt->apt", Q, inv, Qt_rhs), y_mean


def fold_squared_errors(W, y_mean, fold, y_center, yc_sum, yc_sq):
    """Weighted held-out squared error per alpha and target, from statistics only.

    For predictions ``W^T z + y_mean`` the error of the fold's rows expands as
    ``W^T G W - 2 W^T (zty - z_sum c^T) + 2 d W^T z_sum + sum w (y - c)^2 - 2 d
    sum w (y - c) + n d^2`` with ``d = y_mean - c``. Centring ``y`` on the global
    mean ``c`` keeps the cancellation small when ``y`` has a large offset.

    Parameters
    ----------
    W : ndarray of shape (n_alphas, p, n_targets)
    y_mean : ndarray of shape (n_targets,)
    fold : SufficientStatistics
        Statistics of the held-out rows.
    y_center : ndarray of shape (n_targets,)
    yc_sum, yc_sq : ndarray of shape (n_targets,)
        ``sum w (y - c)`` and ``sum w (y - c)^2`` over the held-out rows.

    Returns
    -------
    sse : ndarray of shape (n_alphas, n_targets)
    """
    d = y_mean - y_center
    b = fold.zty - fold.z_sum[:, None] * y_center[None, :]
    quad = np.einsum("apt,pq,aqt->at", W, fold.gram, W)
    lin = np.einsum("apt,pt->at", W, b) - d[None, :] * np.einsum("apt,p->at", W, fold.z_sum)
    const = yc_sq - 2 * d * yc_sum + fold.weight_sum * d**2
    return np.maximum(quad - 2 * lin + const[None, :], 0.0)


def _scores(sse, weight_sum, yc_sum, yc_sq, scoring):
    """Fold scores per alpha: R^2 (averaged over targets) or negative MSE."""
    if scoring == "neg_mean_squared_error":
        return -sse.mean(axis=1) / weight_sum
    sst = yc_sq - yc_sum**2 / weight_sum
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - sse / sst[None, :]
    # As sklearn's r2_score: a constant target scores 1 if predicted exactly, else 0.
    r2 = np.where(sst[None, :] > 0, r2, np.where(sse == 0, 1.0, 0.0))
    return r2.mean(axis=1)


class ARNRegressorCV(RegressorMixin, BaseEstimator):
    """ARN with k-fold cross-validation of ``alpha`` (and ``softness``) in one pass.

    The anchors are chosen once on all rows (as :class:`ARNRegressor` does).
    For each softness, one pass over the data accumulates the sufficient
    statistics of every fold; the training system of fold ``j`` is the sum of
    the other folds, and one eigendecomposition per fold solves it for all
    alphas. The held-out errors come from the folds' statistics, so the whole
    search costs one pass per softness plus ``k`` eigendecompositions of the
    ``m(d+1)``-square system. The model with the best mean score is then
    solved from the statistics of all rows.

    Parameters
    ----------
    n_anchors : int, default=16
        Number of anchors.
    similarity : {"euclidean", "dot", "absdot", "cosine"}, default="euclidean"
    softness : "auto", float > 0 or array-like of those, default="auto"
        Softness ``K``, or a small grid of values to cross-validate (each
        costs one pass over the data); ``"auto"`` is the rule of
        :class:`ARNRegressor` computed on all rows.
    alphas : array-like of float >= 0, default=(1e-3, 1e-2, 1e-1, 1, 10, 100)
        Ridge penalties to cross-validate.
    anchors : {"kmeans", "random"} or array-like of shape (n_anchors, n_features), \
            default="kmeans"
    cv : int, cross-validation generator or iterable, default=5
        As in scikit-learn (an int means ``KFold``). The test folds must
        partition the rows (every row held out exactly once).
    scoring : {"r2", "neg_mean_squared_error"}, default="r2"
        R^2 averaged over targets (the estimators' ``score``) or negative MSE.
        With ``sample_weight``, scores are weighted by it.
    batch_size : int, default=None
        Rows per streamed chunk, as in :class:`ARNRegressor`.
    random_state : int, RandomState instance or None, default=None
        Seeds the anchors and the auto softness subsample.

    Attributes
    ----------
    alpha_ : float
        The selected penalty.
    softness_ : float
        The selected softness.
    best_score_ : float
        Mean cross-validated score of the selected pair.
    cv_results_ : dict of ndarrays
        ``params``, ``param_alpha``, ``param_softness``, ``split{j}_test_score``,
        ``mean_test_score``, ``std_test_score``, ``rank_test_score``, ordered
        like ``GridSearchCV`` over ``{"alpha": alphas, "softness": softnesses}``.
    estimator_ : ARNRegressor
        The model refitted on all rows with the selected parameters.
    anchors_, coef_, intercept_ : ndarray
        As in :class:`ARNRegressor`, from ``estimator_``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        When ``X`` has string column names.

    See Also
    --------
    ARNRegressor : The estimator with a single alpha.
    sklearn.linear_model.RidgeCV : The same idea for a linear model.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn import ARNRegressorCV
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-3, 3, size=(400, 1))
    >>> y = np.abs(X[:, 0]) + 0.1 * rng.normal(size=400)
    >>> model = ARNRegressorCV(n_anchors=4, alphas=[0.01, 1, 100], random_state=0)
    >>> model = model.fit(X, y)
    >>> float(model.alpha_) in (0.01, 1.0, 100.0)
    True
    >>> bool(model.score(X, y) > 0.95)
    True
    """

    _parameter_constraints: dict = {
        "n_anchors": [Interval(Integral, 1, None, closed="left")],
        "similarity": [StrOptions(set(SIMILARITIES))],
        "softness": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither"), "array-like"],
        "alphas": ["array-like"],
        "anchors": [StrOptions({"kmeans", "random"}), "array-like"],
        "cv": ["cv_object"],
        "scoring": [StrOptions({"r2", "neg_mean_squared_error"})],
        "batch_size": [None, Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_anchors=16,
        *,
        similarity="euclidean",
        softness="auto",
        alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
        anchors="kmeans",
        cv=5,
        scoring="r2",
        batch_size=None,
        random_state=None,
    ):
        self.n_anchors = n_anchors
        self.similarity = similarity
        self.softness = softness
        self.alphas = alphas
        self.anchors = anchors
        self.cv = cv
        self.scoring = scoring
        self.batch_size = batch_size
        self.random_state = random_state

    def _grid(self):
        alphas = np.asarray(self.alphas, dtype=np.float64).ravel()
        if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
            raise ValueError(
                f"alphas must be a non-empty list of floats >= 0; got {self.alphas!r}."
            )
        grid = [self.softness] if isinstance(self.softness, str | Real) else list(self.softness)
        for s in grid:
            if not (s == "auto" or (isinstance(s, Real) and np.isfinite(s) and s > 0)):
                raise ValueError(f"softness values must be 'auto' or floats > 0; got {s!r}.")
        if not grid:
            raise ValueError("softness grid is empty.")
        return alphas, grid

    def _base_estimator(self, alpha, softness, anchors):
        return ARNRegressor(
            self.n_anchors,
            similarity=self.similarity,
            softness=softness,
            alpha=alpha,
            anchors=anchors,
            batch_size=self.batch_size,
            random_state=self.random_state,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Cross-validate alpha (and softness), then refit on all rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : ARNRegressorCV
        """
        alphas, grid = self._grid()
        X, y = validate_data(
            self, X, y, multi_output=True, y_numeric=True, dtype=[np.float64, np.float32]
        )
        Y = np.asarray(y, dtype=np.float64)
        Y = Y[:, None] if Y.ndim == 1 else Y
        w = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        folds = self._test_folds(X, y)

        # Anchors once on all rows; "auto" softness from the same rule as ARNRegressor.
        first = "auto" if "auto" in grid else grid[0]
        base = self._base_estimator(1.0, first, self.anchors)
        base._check_anchor_count(X)
        anchors, first_value = base._initial_anchors(X, w)
        # Every "auto" in the grid is the value computed with the anchors.
        softnesses = [first_value if s == "auto" else float(s) for s in grid]

        xp = array_namespace(X)
        y_center = w @ Y / w.sum() if w.sum() > 0 else np.zeros(Y.shape[1])
        moments = [
            (
                np.sum(w[idx, None] * (Y[idx] - y_center), 0),
                np.sum(w[idx, None] * (Y[idx] - y_center) ** 2, 0),
            )
            for idx in folds
        ]
        n_lifted = lifted_size(anchors.shape[0], X.shape[1])
        batch_size = base._resolve_batch_size(n_lifted)
        scores = np.empty((len(softnesses), len(alphas), len(folds)))
        totals = []
        for s, softness in enumerate(softnesses):

            def assign(chunk, softness=softness):
                return soft_assignments(chunk, anchors, self.similarity, softness, xp)

            zero = SufficientStatistics.zeros(n_lifted, Y.shape[1], xp)
            fold_stats = [
                accumulate(iter_chunks(X[idx], Y[idx], w[idx], batch_size), assign, xp, zero)
                for idx in folds
            ]
            for j, fold in enumerate(fold_stats):
                train = zero
                for i, other in enumerate(fold_stats):
                    if i != j:
                        train = train + other
                W, y_mean = ridge_path(train, alphas)
                yc_sum, yc_sq = moments[j]
                sse = fold_squared_errors(W, y_mean, fold, y_center, yc_sum, yc_sq)
                scores[s, :, j] = _scores(sse, fold.weight_sum, yc_sum, yc_sq, self.scoring)
            totals.append(_add_all(fold_stats))

        self._set_cv_results(scores, alphas, softnesses)
        best_s, best_a = np.unravel_index(
            np.argmax(scores.mean(axis=2).T), (len(alphas), len(softnesses))
        )[::-1]
        self.alpha_ = float(alphas[best_a])
        self.softness_ = float(softnesses[best_s])
        self.best_score_ = float(scores[best_s, best_a].mean())
        model = self._base_estimator(self.alpha_, self.softness_, anchors)
        model.n_features_in_ = X.shape[1]
        model._set_solution(totals[best_s], anchors, self.softness_, y.ndim)
        self.estimator_ = model
        self.anchors_ = model.anchors_
        self.coef_ = model.coef_
        self.intercept_ = model.intercept_
        return self

    def _test_folds(self, X, y):
        cv = check_cv(self.cv, y, classifier=False)
        folds = [np.asarray(test) for _, test in cv.split(X, y)]
        counts = np.zeros(X.shape[0], dtype=np.intp)
        for idx in folds:
            np.add.at(counts, idx, 1)
        if len(folds) < 2 or np.any(counts != 1):
            raise ValueError(
                "ARNRegressorCV needs at least 2 test folds that partition the rows "
                "(each row held out exactly once), as KFold gives; use GridSearchCV "
                "for other splitters."
            )
        return folds

    def _set_cv_results(self, scores, alphas, softnesses):
        # GridSearchCV orders a grid's keys alphabetically, the last varying fastest.
        per_param = scores.transpose(1, 0, 2).reshape(-1, scores.shape[2])
        params = [{"alpha": float(a), "softness": float(s)} for a in alphas for s in softnesses]
        mean = per_param.mean(axis=1)
        results = {
            "params": params,
            "param_alpha": np.array([p["alpha"] for p in params]),
            "param_softness": np.array([p["softness"] for p in params]),
        }
        for j in range(per_param.shape[1]):
            results[f"split{j}_test_score"] = per_param[:, j]
        results["mean_test_score"] = mean
        results["std_test_score"] = per_param.std(axis=1)
        order = np.argsort(-mean, kind="stable")
        rank = np.empty(mean.size, dtype=np.int32)
        rank[order] = np.arange(1, mean.size + 1)
        results["rank_test_score"] = rank
        self.cv_results_ = results

    def predict(self, X):
        """Predict with the refitted model (a Dask array for Dask input).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        check_is_fitted(self)
        if _dask.is_dask_collection(X):
            return self.estimator_.predict(X)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _add_all(parts):
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total
