"""ARNRegressorCV: k-fold cross-validation of alpha (and softness) in one pass.

With the anchors and the softness fixed, everything a fold needs is a sum over
its rows (:class:`SufficientStatistics`). One pass accumulates each test fold
separately; the training system of fold ``j`` is the sum of the other folds.
One eigendecomposition ``G = Q diag(lam) Q^T`` per fold then gives the ridge
solution for every alpha at the price of a matrix product, and the held-out
squared error expands into the fold's own statistics, so no second pass over
the data is needed (see :func:`fold_squared_errors`).
"""

from dataclasses import replace
from numbers import Integral, Real

import numpy as np
from array_api_compat import array_namespace
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .._fit import _dask
from .._fit._pipeline import (
    accumulate_rows,
    check_fits_memory,
    chunk_rows,
    fitted_attributes,
    initial_anchors,
    make_assigner,
)
from .._kernels._assignment import SIMILARITIES
from .._kernels._solve import centered_rhs
from .._utils._backend import DEVICES, Backend, to_numpy
from .._utils._validation import (
    check_feature_magnitude,
    resolve_n_anchors,
    rollback_on_error,
    validate_anchor_array,
    validate_targets,
)
from ._arn import ARNRegressor

# Eigenvalues of the regularised system below this fraction of the largest are
# treated as zero (minimum-norm solution), as the Cholesky path falls back to lstsq.
_EIG_RCOND = 1e-13


def ridge_path(stats, alphas, xp=None):
    """Ridge solutions of one system for many penalties.

    Dense statistics: one eigendecomposition ``G = Q diag(lam) Q^T`` serves every
    alpha. Block-sparse (top-k) statistics: one sparse solve per alpha.

    Parameters
    ----------
    stats : SufficientStatistics or BlockSparseStatistics
        Training statistics.
    alphas : ndarray of shape (n_alphas,)
    xp : array namespace, default=None
        The statistics' namespace (numpy when None).

    Returns
    -------
    W : array of shape (n_alphas, p, n_targets)
        ``(G + alpha I)^{-1} (Z^T W (Y - y_mean))`` for each alpha.
    y_mean : array of shape (n_targets,)
    """
    xp = array_namespace(stats.zty) if xp is None else xp
    if not hasattr(stats, "gram"):
        solutions = [stats.solve(float(alpha), xp) for alpha in alphas]
        return xp.stack([W for W, _ in solutions]), solutions[0][1]
    rhs, y_mean = centered_rhs(stats, xp)
    lam, Q = xp.linalg.eigh(stats.gram)
    lam = xp.clip(lam, 0.0, None)  # the Gram matrix is PSD; clip rounding noise
    Qt_rhs = Q.T @ rhs
    alphas = xp.asarray(alphas, dtype=lam.dtype, device=getattr(lam, "device", None))
    denom = lam[None, :] + alphas[:, None]
    keep = denom > _EIG_RCOND * xp.max(denom, axis=1, keepdims=True)
    inv = xp.where(keep, 1.0 / xp.where(keep, denom, 1.0), 0.0)
    # W_a = Q diag(inv_a) Q^T rhs, for every alpha a at once.
    return Q[None, :, :] @ (inv[:, :, None] * Qt_rhs[None, :, :]), y_mean


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
    xp = array_namespace(W)
    n_alphas, p, n_targets = W.shape
    # G W for every alpha in one product, in the statistics' namespace (GPU or host).
    GW = fold.gram_matmul(xp.reshape(xp.permute_dims(W, (1, 0, 2)), (p, n_alphas * n_targets)))
    GW = np.moveaxis(np.reshape(to_numpy(GW), (p, n_alphas, n_targets)), 1, 0)
    W, y_mean = to_numpy(W), to_numpy(y_mean)
    zty, z_sum = to_numpy(fold.zty), to_numpy(fold.z_sum)
    d = y_mean - y_center
    b = zty - z_sum[:, None] * y_center[None, :]
    quad = np.einsum("apt,apt->at", W, GW)
    lin = np.einsum("apt,pt->at", W, b) - d[None, :] * np.einsum("apt,p->at", W, z_sum)
    const = yc_sq - 2 * d * yc_sum + fold.weight_sum * d**2
    return np.maximum(quad - 2 * lin + const[None, :], 0.0)


def _power_of_two_scale(Y):
    """Per-target powers of two with ``max |y| / scale`` in [1, 2) (1 for zero targets)."""
    peak = np.max(np.abs(Y), axis=0) if Y.shape[0] else np.zeros(Y.shape[1])
    # 2^(e-1), not 2^e: the latter overflows for |y| near the float64 maximum.
    return np.where(peak > 0, np.exp2(np.frexp(peak)[1] - 1.0), 1.0)


def _scores(sse, weight_sum, yc_sum, yc_sq, scoring, y_scale=1.0):
    """Fold scores per alpha: R^2 (averaged over targets) or negative MSE.

    The statistics are of ``y / y_scale``; R^2 does not depend on the scale,
    the MSE is returned in the units of ``y`` (infinite past 1e308).
    """
    if scoring == "neg_mean_squared_error":
        with np.errstate(over="ignore", invalid="ignore"):
            sse = np.where(sse > 0, sse * np.square(y_scale), 0.0)
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
    anchors : {"kmeans", "random"} or array-like, default="kmeans"
        As in :class:`ARNRegressor`; an array has shape (n_anchors, n_features).
    cv : int, cross-validation generator or iterable, default=5
        As in scikit-learn (an int means ``KFold``). The test folds must
        partition the rows (every row held out exactly once).
    scoring : {"r2", "neg_mean_squared_error"}, default="r2"
        R^2 averaged over targets (the estimators' ``score``) or negative MSE.
        With ``sample_weight``, scores are weighted by it.
    batch_size : int, default=None
        Rows per streamed chunk, as in :class:`ARNRegressor`.
    top_k : int, default=None
        Keep each sample's ``top_k`` largest assignments, as in
        :class:`ARNRegressor`; the folds then hold block-sparse statistics and
        each alpha costs one sparse solve per fold instead of sharing an
        eigendecomposition.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the statistics are accumulated and solved, as in :class:`ARNRegressor`.
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
        "top_k": [None, Interval(Integral, 1, None, closed="left")],
        "device": [StrOptions(set(DEVICES))],
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
        top_k=None,
        device="auto",
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
        self.top_k = top_k
        self.device = device
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
            top_k=self.top_k,
            device=self.device,
            random_state=self.random_state,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    @rollback_on_error
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
        Y = np.asarray(validate_targets(y), dtype=np.float64)
        check_feature_magnitude(X)
        Y = Y[:, None] if Y.ndim == 1 else Y
        # Scores are computed from squares of y: scale it (by powers of two, so
        # exactly) to keep them finite and R^2 scale-invariant for |y| ~ 1e200.
        y_scale = _power_of_two_scale(Y)
        Y = Y / y_scale
        w = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        folds = self._test_folds(X, y)
        n_features, n_targets = X.shape[1], Y.shape[1]
        # Fewer anchors than asked when the rows are fewer (see resolve_n_anchors).
        self.n_anchors_ = n_anchors = resolve_n_anchors(self.n_anchors, X.shape[0], self.anchors)
        if not isinstance(self.anchors, str):
            validate_anchor_array(self.anchors, n_anchors, n_features)
        # Each fold's statistics, their training sum, its factorisation and the
        # total are held at once.
        batch = chunk_rows(n_anchors, self.top_k, n_features, n_targets, self.batch_size)
        check_fits_memory(
            n_anchors, self.top_k, n_features, n_targets, batch, n_systems=len(folds) + 3
        )

        # Anchors once on all rows; "auto" softness from the same rule as ARNRegressor.
        random_state = check_random_state(self.random_state)
        first = "auto" if "auto" in grid else grid[0]
        anchors, first_value = initial_anchors(
            X, w, n_anchors, self.anchors, self.similarity, first, self.top_k, random_state
        )
        # Every "auto" in the grid is the value computed with the anchors.
        softnesses = [first_value if s == "auto" else float(s) for s in grid]

        backend = Backend(self.device, X)
        xp = backend.xp
        Xc, Yc, wc = (backend.to_compute(a) for a in (X, Y, w))
        y_center = w @ Y / w.sum() if w.sum() > 0 else np.zeros(n_targets)
        moments = [
            (
                np.sum(w[idx, None] * (Y[idx] - y_center), 0),
                np.sum(w[idx, None] * (Y[idx] - y_center) ** 2, 0),
            )
            for idx in folds
        ]
        scores = np.empty((len(softnesses), len(alphas), len(folds)))
        totals = []
        for s, softness in enumerate(softnesses):
            assigner = make_assigner(
                backend.to_compute(anchors), self.similarity, softness, self.top_k
            )
            fold_stats = []
            for idx in folds:
                rows = backend.to_compute(idx)
                fold_stats.append(
                    accumulate_rows(
                        assigner,
                        xp.take(Xc, rows, axis=0),
                        xp.take(Yc, rows, axis=0),
                        xp.take(wc, rows, axis=0),
                        xp,
                        batch_size=self.batch_size,
                    )
                )
            total = _add_all(fold_stats)
            for j, fold in enumerate(fold_stats):
                train = _add_all([other for i, other in enumerate(fold_stats) if i != j])
                W, y_mean = ridge_path(train, alphas, xp)
                yc_sum, yc_sq = moments[j]
                sse = fold_squared_errors(W, y_mean, fold, y_center, yc_sum, yc_sq)
                scores[s, :, j] = _scores(
                    sse, fold.weight_sum, yc_sum, yc_sq, self.scoring, y_scale
                )
            totals.append((total, assigner))

        self._set_cv_results(scores, alphas, softnesses)
        best_s, best_a = np.unravel_index(
            np.argmax(scores.mean(axis=2).T), (len(alphas), len(softnesses))
        )[::-1]
        self.alpha_ = float(alphas[best_a])
        self.softness_ = float(softnesses[best_s])
        self.best_score_ = float(scores[best_s, best_a].mean())
        stats, assigner = totals[best_s]
        # Back to the units of y: the statistics are linear in y, y_sq_sum quadratic.
        scale = backend.to_compute(y_scale)
        with np.errstate(over="ignore"):  # sum y^2 is infinite for |y| ~ 1e200
            stats = replace(
                stats,
                zty=stats.zty * scale,
                y_sum=stats.y_sum * scale,
                y_sq_sum=stats.y_sq_sum * scale * scale,
            )
        model = self._base_estimator(self.alpha_, self.softness_, anchors)
        # The refit is the solution of the summed folds: no second pass over the data.
        model.n_features_in_ = n_features
        model.n_anchors = model.n_anchors_ = n_anchors
        vars(model).update(
            fitted_attributes(stats, assigner, self.alpha_, y.ndim, backend.to_output)
        )
        model.n_iter_ = 1
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
        # Negative MSEs of huge targets would overflow when squared: scale first.
        peak = np.max(np.abs(per_param), axis=1, keepdims=True)
        peak = np.where(np.isfinite(peak) & (peak > 0), peak, 1.0)
        results["std_test_score"] = (per_param / peak).std(axis=1) * peak[:, 0]
        order = np.argsort(-mean, kind="stable")
        rank = np.empty(mean.size, dtype=np.int32)
        rank[order] = np.arange(1, mean.size + 1)
        results["rank_test_score"] = rank
        self.cv_results_ = results

    def predict(self, X, return_std=False):
        """Predict with the refitted model (a Dask array for Dask input).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return the predictive standard deviation of the refitted
            model, see :meth:`ARNRegressor.predict`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
        y_std : ndarray of the same shape as ``y_pred``
            Only with ``return_std=True``.
        """
        check_is_fitted(self)
        if not _dask.is_dask_collection(X):
            X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.predict(X, return_std=return_std)

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
