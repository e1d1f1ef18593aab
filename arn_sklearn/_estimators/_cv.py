"""ARNRegressorCV: k-fold cross-validation of alpha (and softness) in one pass.

The estimator validates its parameters and data, calls
:func:`~arn_sklearn._fit._cv.cross_validate` (one pass over the rows, the
ridge path of every fold from sufficient statistics) and stores the scores and
the refitted :class:`ARNRegressor`.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._fit import _dask
from .._fit._cv import cross_validate
from .._kernels._assignment import SIMILARITIES
from .._learning._starts import StartSpec
from .._model._blocksparse import LINEAR_SOLVERS
from .._utils._arrays import to_numpy
from .._utils._backend import DEVICES, Backend
from .._utils._validation import (
    fit_method,
    resolve_anchors,
    validate_fit_data,
)
from ._arn import ARNRegressor


class ARNRegressorCV(MultiOutputMixin, RegressorMixin, BaseEstimator):
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
    linear_solver : {"auto", "dense", "sparse", "iterative"}, default="auto"
        How the block-sparse systems of a ``top_k`` model are solved, as in
        :class:`ARNRegressor`.
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
        "linear_solver": [StrOptions(set(LINEAR_SOLVERS))],
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
        linear_solver="auto",
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
        self.linear_solver = linear_solver
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

    @fit_method
    def fit(self, X, y, sample_weight=None):
        """Cross-validate alpha (and softness), then refit on all rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows that ``cv`` splits into folds; the refit uses all of them.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets; the score of a 2-D ``y`` averages its outputs.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows in every fold's fit and score.

        Returns
        -------
        self : ARNRegressorCV
            The estimator, with the scores and the refitted model.
        """
        alphas, grid = self._grid()
        X, Y, w, y_ndim = validate_fit_data(self, X, y, sample_weight)
        folds = self._test_folds(X, Y[:, 0] if y_ndim == 1 else Y)
        # Fewer anchors than asked when the rows are fewer (see resolve_n_anchors).
        n_anchors, anchors = resolve_anchors(self.n_anchors, self.anchors, X.shape)
        self.n_anchors_ = n_anchors
        anchors = self.anchors if anchors is None else anchors
        backend = Backend(self.device, X)
        result = cross_validate(
            X,
            Y,
            w,
            folds,
            n_anchors,
            StartSpec(
                anchors=anchors,
                similarity=self.similarity,
                top_k=self.top_k,
                linear_solver=self.linear_solver,
            ),
            alphas,
            grid,
            scoring=self.scoring,
            batch_size=self.batch_size,
            random_state=self.random_state,
            backend=backend,
        )
        self._set_cv_results(result.scores, alphas, result.softnesses)
        self.alpha_, self.softness_ = result.alpha, result.softness
        self.best_score_ = result.best_score
        # The refit: an ARNRegressor with the chosen parameters and the solution
        # of all folds together (no second pass over the data).
        model = ARNRegressor(
            n_anchors,
            similarity=self.similarity,
            softness=self.softness_,
            alpha=self.alpha_,
            anchors=to_numpy(result.layer.assignment.anchors),
            batch_size=self.batch_size,
            top_k=self.top_k,
            linear_solver=self.linear_solver,
            device=self.device,
            random_state=self.random_state,
        )
        model.n_features_in_, model.n_anchors_ = X.shape[1], n_anchors
        model._set_fitted(result.layer, y_ndim, backend.to_output)
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
