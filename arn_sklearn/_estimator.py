"""The scikit-learn estimator: validation, orchestration and fitted attributes."""

import time
from numbers import Integral, Real

import numpy as np
from array_api_compat import array_namespace
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._array_api import get_namespace
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from . import _dask, _explain, _uncertainty
from ._assignment import SIMILARITIES
from ._backend import DEVICES, Backend, to_numpy
from ._base import (
    cast_predictions,
    resolve_n_anchors,
    rollback_on_error,
    validate_anchor_array,
    validate_targets,
)
from ._gradients import make_layer
from ._lifting import lift, pack_weights, unpack_weights
from ._pipeline import (
    Assigner,
    accumulate_rows,
    anchor_sample_size,
    as_2d,
    as_3d,
    assign_rows,
    check_fits_memory,
    chunk_rows,
    fitted_attributes,
    initial_anchors,
    make_assigner,
    predict_rows,
    row_chunks,
    sparse_top_k,
)
from ._training import (
    GRADIENT_PARAMETER_CONSTRAINTS,
    LEARNED_SOLVERS,
    VARPRO_SOLVERS,
    GradientTrainingMixin,
)

_GRADIENT_HISTORY = ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_")


def _closed_form_solver(estimator):
    """partial_fit streams the closed-form statistics; gradient solvers have none."""
    return estimator.solver == "closed_form"


class ARNRegressor(GradientTrainingMixin, RegressorMixin, BaseEstimator):
    """Anchored Regression Network: closed-form streaming ridge solve, or learned anchors.

    Each input ``x`` is softly assigned to ``n_anchors`` anchors ``c_k`` by
    ``alpha(x) = softmax(K s(x, c_1..m))``; each anchor owns a linear regressor
    ``(W_k, b_k)`` and the prediction is ``sum_k alpha_k(x) (W_k x + b_k)``.
    With the anchors fixed, the regressors minimise (paper eq. 10)

        ``sum_i w_i ||f(x_i) - y_i||^2 + alpha * sum_k ||[W_k, b_k]||^2``

    in closed form (eq. 17): one streaming pass accumulates the Gram matrix of
    the lifted features ``alpha(x) (x) [x, 1]`` (one BLAS ``syrk`` per chunk),
    then a Cholesky factorisation solves the ``m(d+1)``-square system. Targets
    are centred on their weighted mean before the solve; biases are folded
    into the weights and penalised like them.

    With ``solver="lbfgs"``, ``"adam"`` or ``"sgd"`` the anchors (and, with
    ``learn_softness``, the softness) are learned on the same objective
    (paper section 3.2), with analytic gradients: by variable projection
    (the regressors stay the exact closed form, L-BFGS on the anchors), or
    jointly with the regressors by minibatch gradient descent.

    Parameters
    ----------
    n_anchors : int, default=16
        Number of anchors (and of linear regressors), ``m`` in the paper.
    similarity : {"euclidean", "dot", "absdot", "cosine"}, default="euclidean"
        ``s(x, c)``: ``-||x - c||^2`` (matches KMeans anchors), ``x.c`` (the
        paper's age regression), ``|x.c|`` (its super-resolution) or cosine.
    softness : "auto" or float > 0, default="auto"
        The scale ``K`` of the similarity inside the softmax. Larger is harder:
        as ``K`` grows the model tends to a separate ridge regressor per
        Voronoi cell (eqs. 6-9). ``"auto"`` sets ``K = 0.5 / median gap``, where
        the gap is the difference between a sample's two largest similarities
        (on at most 10,000 rows), so that the runner-up anchor of a typical
        sample weighs ``exp(-0.5)`` of the nearest; ``benchmarks/bench_softness.py``
        compares this rule with a grid. For a learned solver it is the start:
        the k-plane classifier's softness with k-plane anchors, else the rule
        or 4 times it (``GRADIENT_START_SOFTNESS``), whichever has the lower
        generalised cross-validation score of its closed form: from too soft a
        start the closed-form regressors are large and cancel each other, and
        too hard a start over-fits small data.
    alpha : float >= 0, default=1.0
        Ridge penalty ``lambda`` of eq. (10), on weights and biases alike.
    anchors : {"auto", "kmeans", "kplane", "random"} or array-like of shape \
            (n_anchors, n_features), default="auto"
        ``"kmeans"``: KMeans centroids of at most ``max(10000, 64 * n_anchors)``
        random rows; ``"kplane"``: a supervised start on the same subsample,
        clusterwise linear regression (Späth 1979: assign each row to the
        regressor that fits it best, refit, repeat; the best of 4 random
        starts by that hard objective), whose partition is then turned into
        anchors and a softness by fitting ``softmax(K s(x, c))`` to it
        (centroids, or leading directions for ``"absdot"``, as the start);
        it finds pieces that KMeans misses when they are cut along directions
        of small input variance; ``"random"``: distinct random rows of
        ``X``; ``"auto"``: ``"kmeans"`` for the closed form; for the solvers
        that learn anchors, the KMeans or the k-plane start, whichever has the
        lower generalised cross-validation score (of its closed form on the
        same subsample), since
        k-plane anchors suit piecewise targets and KMeans anchors smooth ones.
        An array is used as given.
    solver : {"closed_form", "gauss_newton", "lbfgs", "adam", "sgd"}, \
            default="closed_form"
        ``"closed_form"``: anchors stay as initialised, regressors solved
        exactly. ``"gauss_newton"`` (recommended to learn anchors) and
        ``"lbfgs"`` are variable projection: the regressors are always the
        exact ridge solution for the current anchors and softness, and only
        the anchors and ``log K`` are searched, on that reduced objective
        (its gradient, by the envelope theorem, costs about one closed-form
        fit). ``"gauss_newton"`` takes Levenberg-Marquardt steps with
        Kaufman's Gauss-Newton matrix (the joint problem's, with the
        regressors eliminated; about two closed-form passes per step): tens
        of steps where ``"lbfgs"`` (scipy's L-BFGS-B) needs hundreds of
        iterations (``benchmarks/learned_vs_mlp.py``). Both are
        deterministic, need no learning rate and are monotone in the
        training objective; ``max_iter`` counts their iterations (steps
        tried). The model keeps the closed-form statistics of the final
        anchors. ``"sgd"
        (minibatch SGD with ``momentum`` and a rate halved every 20 epochs,
        the paper's super-resolution recipe) and ``"adam"`` start from the
        closed-form solution and learn anchors and regressors together. For
        every learned solver the iterate with the lowest training objective
        (or, with ``early_stopping``, the best validation score) is kept, so
        the training objective never ends above the start's; they need ``X``
        in memory (no Dask, no ``top_k``, no :meth:`partial_fit`).
    batch_size : int, default=None
        Rows per streamed chunk of the closed form. ``None`` picks chunks whose
        lifted block is about 64 MiB (up to 1 GiB for systems of more than 8k
        unknowns, so that each update stays compute-bound), so memory does not
        grow with the number of samples. For the gradient solvers, the
        minibatch size; ``None`` is ``min(1000, n_samples)`` (the paper's).
    top_k : int, default=None
        Keep only the ``top_k`` largest assignments of each sample, renormalised
        to sum to one, in fit and predict alike (beyond the paper). The lifted
        rows become block-sparse and the accumulation costs about
        ``n (top_k (d + 1))^2`` instead of ``n (m (d + 1))^2``. ``None`` (or
        ``top_k >= n_anchors``) is the dense model. Closed form only: with top-k
        assignments the objective jumps where a sample's kept anchors change,
        so it has no gradient to learn anchors from.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where assignment, accumulation, solve and predict run. ``"auto"``
        computes where the input lives (CuPy input, with scikit-learn's
        ``array_api_dispatch``, runs on the GPU); ``"cuda"`` moves host input to
        the GPU through CuPy (extra ``gpu``) and returns numpy; ``"cpu"`` moves
        GPU input to the host. Fitted attributes are in the input's namespace.
    learning_rate_init : float, default=0.001
        Initial step size of ``"adam"`` and ``"sgd"``. From the starts that
        ``anchors="auto"`` picks, 0.001 beat 0.003 and 0.01 on both tasks of
        ``benchmarks/learned_anchors.py`` (a larger rate undoes the start's
        sharp cells in the first epochs).
    momentum : float, default=0.9
        Momentum of ``solver="sgd"``.
    max_iter : int, default=200
        Maximum number of epochs of ``"adam"``/``"sgd"``, of iterations of
        ``"lbfgs"``.
    tol : float, default=1e-4
        Relative tolerance: training stops when the objective (or, with
        ``early_stopping``, the validation score) has not improved by more
        than ``tol`` times its best value for ``n_iter_no_change`` consecutive
        epochs (iterations).
    n_iter_no_change : int, default=10
        See ``tol``.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, score them (R^2) after
        each epoch (iteration), keep the best one and stop when the score
        stalls. With ``"lbfgs"`` the anchors are learned on the other rows and
        the regressors of the kept anchors are then solved on all rows.
    validation_fraction : float, default=0.1
        Fraction of rows held out by ``early_stopping``.
    learn_softness : bool, default=True
        With a gradient solver, also learn the softness ``K`` (in log space, so
        it stays positive). From very soft starts (small ``K``) the closed-form
        regressors are large and cancel each other, which makes the problem
        stiff; if training stalls, start harder (a float ``softness`` a few
        times ``softness_`` of the closed form); ``benchmarks/gradient_arn.py``
        shows both cases.
    warm_start : bool, default=False
        With a gradient solver, continue from the fitted anchors, regressors
        and softness instead of a new closed-form start.
    random_state : int, RandomState instance or None, default=None
        Seeds the anchor initialisation, the subsamples, the validation split
        and the minibatch order.
    verbose : int, default=0
        1 prints the time of each stage (and each epoch's loss and time), 2
        also each chunk.

    Attributes
    ----------
    anchors_ : ndarray of shape (n_anchors, n_features)
        The anchors ``c_k``.
    softness_ : float
        The softness ``K`` used.
    similarity_ : str
        The similarity the fitted model assigns with (``similarity`` at fit
        time; ``predict`` reads this, not the parameter).
    top_k_ : int or None
        Anchors kept per sample by the fitted model; None for the dense model
        (``top_k`` was None or at least the number of anchors).
    coef_ : ndarray of shape (n_anchors, n_features) or (n_anchors, n_targets, n_features)
        ``W_k`` for each anchor; the middle axis is present for 2-D ``y``.
    intercept_ : ndarray of shape (n_anchors,) or (n_anchors, n_targets)
        ``b_k`` for each anchor, including the target mean (the assignments
        sum to one, so it can be carried by every anchor).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.
    n_iter_ : int
        Epochs (``"lbfgs"``: iterations) run by a learned solver; 1 for the
        closed form (one pass).
    loss_curve_ : list of float
        Training objective (eq. 10 divided by the total sample weight) after
        each epoch of a gradient solver.
    best_loss_ : float
        Training objective of the kept parameters (the closed-form start's if no
        epoch improved on it).
    validation_scores_ : list of float
        Validation R^2 after each epoch, with ``early_stopping``.
    best_validation_score_ : float
        The kept parameters' validation R^2, with ``early_stopping``.

    See Also
    --------
    sklearn.linear_model.Ridge : The single-anchor special case.
    DeepARNRegressor : Residual stacks of ARN layers, trained end to end.

    Notes
    -----
    The statistics are accumulated and solved in float64 whatever the input
    dtype, because the normal equations square the condition number of the
    lifted design; predictions are returned in the input's floating dtype.
    The fitted model keeps these statistics (``m(d+1)`` squared doubles) so that
    :meth:`partial_fit` can continue them.

    References
    ----------
    E. Agustsson, R. Timofte, L. Van Gool, "Anchored Regression Networks
    applied to Age Estimation and Super Resolution", ICCV 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn import ARNRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-3, 3, size=(500, 1))
    >>> y = np.abs(X[:, 0])
    >>> model = ARNRegressor(n_anchors=4, random_state=0).fit(X, y)
    >>> model.coef_.shape
    (4, 1)
    >>> bool(model.score(X, y) > 0.99)
    True

    Learned anchors (variable projection); the regressors stay the closed form:

    >>> y = np.where(X[:, 0] > 1.0, 2.0 * X[:, 0], -X[:, 0])  # a jump at x = 1
    >>> learned = ARNRegressor(n_anchors=2, solver="lbfgs", random_state=0).fit(X, y)
    >>> closed = ARNRegressor(n_anchors=2, random_state=0).fit(X, y)
    >>> bool(learned.score(X, y) > closed.score(X, y))
    True
    """

    _parameter_constraints: dict = {
        "n_anchors": [Interval(Integral, 1, None, closed="left")],
        "similarity": [StrOptions(set(SIMILARITIES))],
        "softness": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "anchors": [StrOptions({"auto", "kmeans", "kplane", "random"}), "array-like"],
        "solver": [StrOptions({"closed_form", *LEARNED_SOLVERS})],
        "batch_size": [None, Interval(Integral, 1, None, closed="left")],
        "top_k": [None, Interval(Integral, 1, None, closed="left")],
        "device": [StrOptions(set(DEVICES))],
        **GRADIENT_PARAMETER_CONSTRAINTS,
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_anchors=16,
        *,
        similarity="euclidean",
        softness="auto",
        alpha=1.0,
        anchors="auto",
        solver="closed_form",
        batch_size=None,
        top_k=None,
        device="auto",
        learning_rate_init=0.001,
        momentum=0.9,
        max_iter=200,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
        validation_fraction=0.1,
        learn_softness=True,
        warm_start=False,
        random_state=None,
        verbose=0,
    ):
        self.n_anchors = n_anchors
        self.similarity = similarity
        self.softness = softness
        self.alpha = alpha
        self.anchors = anchors
        self.solver = solver
        self.batch_size = batch_size
        self.top_k = top_k
        self.device = device
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.learn_softness = learn_softness
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    @rollback_on_error
    def fit(self, X, y, sample_weight=None):
        """Fit anchors, softness and regressors on all rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A Dask array or DataFrame is fitted block by block on its workers.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; an integer weight equals repeating the row.

        Returns
        -------
        self : ARNRegressor
        """
        gradient = self.solver in LEARNED_SOLVERS
        if gradient and sparse_top_k(self.n_anchors, self.top_k) is not None:
            raise ValueError(
                "top_k is only supported with solver='closed_form': with top-k "
                "assignments the objective jumps where a sample's kept anchors change."
            )
        if _dask.is_dask_collection(X):
            if gradient:
                raise ValueError(
                    f"solver={self.solver!r} needs the data in memory; compute the Dask "
                    "collection first or use solver='closed_form'."
                )
            return self._fit_dask(X, y, sample_weight)
        warm = gradient and self.warm_start and hasattr(self, "coef_")
        X, Y, w, y_ndim = self._validate_fit_data(X, y, sample_weight, reset=not warm)
        backend = Backend(self.device, X)
        if warm:
            assigner = self._fitted_assigner()
        else:
            self._check_memory(X.shape[1], Y.shape[1])
            assigner = self._new_assigner(X, w, Y)
        if self.solver in VARPRO_SOLVERS:
            self._fit_varpro(X, Y, w, y_ndim, assigner, backend)
            return self
        if not warm:  # the closed form, and the start of adam/sgd
            stats = self._accumulate(backend, assigner, X, Y, w, stats=None)
            self._set_solution(stats, assigner, y_ndim, backend)
        if gradient:
            self._fit_gradient(X, Y, w, y_ndim)
        return self

    @available_if(_closed_form_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    @rollback_on_error
    def partial_fit(self, X, y, sample_weight=None):
        """Add a batch of rows to the accumulated statistics and re-solve.

        The first call fixes the anchors and the softness (from this batch, or
        as given); later calls reuse them, so fitting in chunks gives the same
        model as one :meth:`fit` on all rows with the same anchors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : ARNRegressor
        """
        first_call = not hasattr(self, "_stats")
        X, Y, w, y_ndim = self._validate_fit_data(X, y, sample_weight, reset=first_call)
        backend = Backend(self.device, X)
        if first_call:
            self._check_memory(X.shape[1], Y.shape[1])
            assigner, stats = self._new_assigner(X, w, Y), None
        else:
            if Y.shape[1] != self._stats.zty.shape[1]:
                raise ValueError(
                    f"y has {Y.shape[1]} targets but earlier calls to "
                    f"partial_fit had {self._stats.zty.shape[1]}."
                )
            assigner, stats = self._fitted_assigner(), self._stats
        stats = self._accumulate(backend, assigner, X, Y, w, stats=stats)
        self._set_solution(stats, assigner, y_ndim, backend)
        return self

    # -------------------------------------------------------------- predict
    def predict(self, X, return_std=False):
        """Predict ``sum_k alpha_k(x) (W_k x + b_k)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return the predictive standard deviation
            ``sigma sqrt(1 + z(x)^T (G + alpha I)^{-1} z(x))`` of the ridge
            posterior on the lifted features ``z(x)``, as
            :class:`~sklearn.linear_model.BayesianRidge` does. ``sigma^2`` is
            the noise variance of each output, estimated from the training
            residuals (from the accumulated statistics, so it holds for
            :meth:`partial_fit` and Dask fits) over ``n - tr(P)`` degrees of
            freedom, ``tr(P)`` being the fit's effective number of parameters.
            Anchors and softness are taken as fixed. Needs the closed-form
            statistics: not available after ``solver="sgd"`` or ``"adam"``.
            The first call factorises ``G + alpha I`` again and computes
            ``tr(P)`` (``O(p^3)`` for ``p = n_anchors (n_features + 1)``); the
            result is cached (and dropped on pickling).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            A Dask array, computed block by block, when ``X`` is a Dask collection.
        y_std : ndarray of the same shape as ``y_pred``
            Only with ``return_std=True``.
        """
        if return_std:
            self._predictive_state()  # fails early, and once, rather than per block
        if _dask.is_dask_collection(X):
            y_pred = _dask.predict(self, X)
            return (y_pred, _dask.predict(self, X, "_predict_std")) if return_std else y_pred
        if return_std:
            return self.predict(X), self._predict_std(X)
        X = self._validate_predict_data(X)
        backend = Backend(self.device, X)
        xp, Xc = backend.xp, backend.to_compute(X)
        W = pack_weights(as_3d(self.coef_), as_2d(self.intercept_), array_namespace(self.coef_))
        assigner = self._fitted_assigner().moved(backend.to_compute)
        y_pred = predict_rows(assigner, Xc, backend.to_compute(W), xp, self.batch_size)
        y_pred = backend.to_output(cast_predictions(y_pred, Xc.dtype, xp))
        return y_pred[:, 0] if self.coef_.ndim == 2 else y_pred

    def soft_assignments(self, X):
        """Soft assignments ``alpha(X)`` of samples to the anchors (eq. 4).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        A : ndarray of shape (n_samples, n_anchors)
            Non-negative rows that sum to one (a Dask array for Dask input).
        """
        if _dask.is_dask_collection(X):
            return _dask.predict(self, X, method="soft_assignments")
        X = self._validate_predict_data(X)
        backend = Backend(self.device, X)
        xp, Xc = backend.xp, backend.to_compute(X)
        assigner = self._fitted_assigner().moved(backend.to_compute)
        A = assign_rows(assigner, Xc, xp, self.batch_size)
        return backend.to_output(xp.astype(A, Xc.dtype))

    def local_linear(self, X):
        """The exact local linear model of each sample: ``f(x) = A(x) x + a(x)``.

        ``A(x) = sum_k alpha_k(x) W_k`` and ``a(x) = sum_k alpha_k(x) b_k`` (over
        the kept anchors with ``top_k``), so that
        ``einsum("ntd,nd->nt", coef, X) + intercept`` equals :meth:`predict`
        to rounding. ``coef[i]`` is the linear regressor the model applies at
        ``X[i]``; it does not include how the assignments move with ``x``
        (see :meth:`jacobian`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        coef : ndarray of shape (n_samples, n_features) or (n_samples, n_targets, n_features)
        intercept : ndarray of shape (n_samples,) or (n_samples, n_targets)

        Examples
        --------
        >>> import numpy as np
        >>> from arn_sklearn import ARNRegressor
        >>> rng = np.random.RandomState(0)
        >>> X = rng.uniform(-3, 3, size=(300, 2))
        >>> model = ARNRegressor(n_anchors=4, random_state=0).fit(X, np.abs(X[:, 0]))
        >>> coef, intercept = model.local_linear(X[:5])
        >>> coef.shape, intercept.shape
        ((5, 2), (5,))
        >>> bool(np.allclose(np.sum(coef * X[:5], axis=1) + intercept, model.predict(X[:5])))
        True
        """
        return self._explain(X, jacobian=False)

    def jacobian(self, X):
        """The exact derivative ``df/dx`` of the prediction at each sample.

        ``A(x) + sum_k (W_k x + b_k) grad alpha_k(x)^T``: the local linear
        coefficients plus the term from the assignments' own variation
        (softmax and similarity derivatives). With ``top_k`` it is the
        derivative of the renormalised softmax over the kept anchors, exact
        away from the points where the kept set changes (where the model is
        not differentiable).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        jacobian : ndarray of shape (n_samples, n_features) or \
                (n_samples, n_targets, n_features)

        Examples
        --------
        >>> import numpy as np
        >>> from arn_sklearn import ARNRegressor
        >>> rng = np.random.RandomState(0)
        >>> X = rng.uniform(-3, 3, size=(300, 1))
        >>> model = ARNRegressor(n_anchors=4, random_state=0).fit(X, np.sin(X[:, 0]))
        >>> x, h = np.array([[0.5]]), 1e-5
        >>> slope = (model.predict(x + h) - model.predict(x - h)) / (2 * h)
        >>> bool(np.allclose(model.jacobian(x)[:, 0], slope, rtol=1e-5))
        True
        """
        return self._explain(X, jacobian=True)

    def _explain(self, X, jacobian):
        X = self._validate_predict_data(X)
        backend = Backend(self.device, X)
        xp, Xc = backend.xp, backend.to_compute(X)
        kind, softness, top_k = self._prediction_params()
        anchors, coef, intercept = (
            xp.astype(backend.to_compute(a), xp.float64)
            for a in (self.anchors_, as_3d(self.coef_), as_2d(self.intercept_))
        )
        rows = _explain.chunk_rows(*coef.shape)
        parts = []
        for chunk in row_chunks(xp.astype(Xc, xp.float64), rows):
            if jacobian:
                J = _explain.layer_jacobian(
                    chunk, anchors, coef, intercept, kind, softness, top_k, xp
                )
                parts.append((J,))
            else:
                A, _ = _explain.layer_assignments(chunk, anchors, kind, softness, top_k, xp)
                parts.append(_explain.local_linear(A, coef, intercept, xp))
        out = [
            backend.to_output(xp.astype(xp.concat(list(p), axis=0), Xc.dtype))
            for p in zip(*parts, strict=True)
        ]
        if self.coef_.ndim == 2:  # 1-D y: drop the target axis
            out = [a[:, 0, ...] for a in out]
        return out[0] if jacobian else tuple(out)

    def _predictive_state(self):
        """``(factor, sigma2)`` of the predictive uncertainty, computed once and cached."""
        check_is_fitted(self)
        stats = self.__dict__.get("_stats")
        if stats is None:
            raise ValueError(
                f"return_std=True needs the closed-form statistics, which solver="
                f"{self.solver!r} does not keep (its anchors moved away from them). "
                "Use solver='closed_form'."
            )
        cache = self.__dict__.get("_predictive_cache")
        if cache is not None and cache[0] is stats and cache[1] == self._alpha:
            return cache[2], cache[3]
        xp = array_namespace(stats.zty)
        factor = stats.factorize(self._alpha, xp)
        sigma2, _ = _uncertainty.noise_variance(stats, factor, xp)
        self._predictive_cache = (stats, self._alpha, factor, sigma2)
        return factor, sigma2

    def _predict_std(self, X):
        """Predictive standard deviation, shape as :meth:`predict`'s."""
        factor, sigma2 = self._predictive_state()
        X = self._validate_predict_data(X)
        backend = Backend(self.device, X)
        xp, Xc = backend.xp, backend.to_compute(X)
        kind, softness, top_k = self._prediction_params()
        anchors = xp.astype(backend.to_compute(self.anchors_), xp.float64)
        m, d = self.anchors_.shape
        batch_size = chunk_rows(m, top_k, d, self._stats.zty.shape[1], self.batch_size)
        parts = []
        for chunk in row_chunks(xp.astype(Xc, xp.float64), batch_size):
            A, _ = _explain.layer_assignments(chunk, anchors, kind, softness, top_k, xp)
            leverage = _uncertainty.leverage(lift(chunk, A, xp), factor, xp)
            parts.append(_uncertainty.predictive_std(leverage, sigma2, xp))
        y_std = backend.to_output(xp.astype(xp.concat(parts, axis=0), Xc.dtype))
        return y_std[:, 0] if self.coef_.ndim == 2 else y_std

    def _prediction_params(self):
        """Similarity, softness and top-k (None: dense) the fitted model predicts with."""
        return self.similarity_, self.softness_, self.top_k_

    def __getstate__(self):
        state = super().__getstate__()
        # The cached factorisation holds the array module; it is recomputed lazily.
        state.pop("_predictive_cache", None)
        return state

    # -------------------------------------------------------------- helpers
    def _validate_fit_data(self, X, y, sample_weight, reset):
        xp, _ = get_namespace(X)
        X, y = validate_data(
            self,
            X,
            y,
            reset=reset,
            multi_output=True,
            y_numeric=True,
            dtype=[xp.float64, xp.float32],
        )
        Y = xp.astype(validate_targets(y), xp.float64, copy=False)  # no copy of a large y
        Y = Y[:, None] if Y.ndim == 1 else Y
        w = _check_sample_weight(sample_weight, X, dtype=xp.float64, ensure_non_negative=True)
        if reset:
            self._check_anchor_count(X)
        return X, Y, w, y.ndim

    def _validate_predict_data(self, X):
        check_is_fitted(self)
        xp, _ = get_namespace(X)
        return validate_data(self, X, reset=False, dtype=[xp.float64, xp.float32])

    def _check_anchor_count(self, X):
        n_samples, n_features = X.shape
        self.n_anchors_ = resolve_n_anchors(self.n_anchors, n_samples, self.anchors)
        if not isinstance(self.anchors, str):
            validate_anchor_array(self.anchors, self.n_anchors, n_features)

    def _check_memory(self, n_features, n_targets):
        """The memory guard, before anchors, softness or statistics are computed."""
        m = self.n_anchors_
        batch = chunk_rows(m, self.top_k, n_features, n_targets, self.batch_size)
        check_fits_memory(m, self.top_k, n_features, n_targets, batch)

    def _new_assigner(self, X, sample_weight, Y):
        """Anchors and softness of a new fit (KMeans, k-plane and the rule run on the host)."""
        anchors = self.anchors if isinstance(self.anchors, str) else to_numpy(self.anchors)
        anchors, softness = initial_anchors(
            to_numpy(X),
            to_numpy(sample_weight),
            self.n_anchors_,
            anchors,
            self.similarity,
            self.softness,
            self.top_k,
            check_random_state(self.random_state),
            y=to_numpy(Y),
            alpha=self.alpha,
            learned=self.solver in LEARNED_SOLVERS,
            verbose=self.verbose,
        )
        return make_assigner(anchors, self.similarity, softness, self.top_k)

    def _fitted_assigner(self):
        """The assignment the fitted model uses (from fitted attributes, not parameters)."""
        return Assigner(self.anchors_, self.similarity_, self.softness_, self.top_k_)

    def _accumulate(self, backend, assigner, X, Y, w, stats):
        xp = backend.xp
        X, Y, w = (backend.to_compute(a) for a in (X, Y, w))
        return accumulate_rows(
            assigner.moved(backend.to_compute),
            X,
            Y,
            w,
            xp,
            stats=stats,
            batch_size=self.batch_size,
            verbose=self.verbose,
        )

    def _fit_dask(self, X, y, sample_weight):
        """Dask input: anchors from sampled blocks, statistics summed over blocks."""
        X, Y, w = _dask.validate_fit(X, y, sample_weight)
        self.__dict__.pop("feature_names_in_", None)
        self.n_features_in_ = X.shape[1]
        self._check_anchor_count(X)
        n_targets = 1 if Y.ndim == 1 else Y.shape[1]
        self._check_memory(X.shape[1], n_targets)
        if isinstance(self.anchors, str) or self.softness == "auto":
            n_rows = anchor_sample_size(self.n_anchors_)
            Xs, ws = _dask.sample_rows(X, w, n_rows, check_random_state(self.random_state))
            # A fresh generator, as in memory: when every block is drawn, the
            # anchors and softness equal the in-memory fit's.
            anchors, softness = initial_anchors(
                Xs,
                ws,
                self.n_anchors_,
                self.anchors,
                self.similarity,
                self.softness,
                self.top_k,
                check_random_state(self.random_state),
                verbose=self.verbose,
            )
            assigner = make_assigner(anchors, self.similarity, softness, self.top_k)
        else:
            anchors = validate_anchor_array(self.anchors, self.n_anchors, X.shape[1]).copy()
            assigner = make_assigner(anchors, self.similarity, self.softness, self.top_k)
        stats = _dask.accumulate(assigner, X, Y, w, self.batch_size)
        # The blocks ran on the CPU; the small system is solved where `device`
        # says (the GPU for "cuda"), and the attributes come back as numpy.
        backend = Backend(self.device, np.empty((0, X.shape[1])))
        self._set_solution(stats.map_arrays(backend.to_compute), assigner, Y.ndim, backend)
        return self

    def _set_solution(self, stats, assigner, y_ndim, backend):
        """Solve ``stats`` and store the fitted model (attributes in the input's namespace)."""
        self.__dict__.update(
            fitted_attributes(
                stats, assigner, self.alpha, y_ndim, backend.to_output, verbose=self.verbose
            )
        )
        # One pass and one solve; a gradient solver then records its epochs.
        self.n_iter_ = 1
        for name in _GRADIENT_HISTORY:
            self.__dict__.pop(name, None)

    def _fit_varpro(self, X, Y, w, y_ndim, assigner, backend):
        """Variable projection: learn anchors and softness, then the closed form on all rows."""
        if (
            hasattr(self, "coef_")
            and self.warm_start
            and Y.shape[1] != as_2d(self.intercept_).shape[1]
        ):
            raise ValueError(
                f"y has {Y.shape[1]} targets but the model being warm-started has "
                f"{as_2d(self.intercept_).shape[1]}."
            )
        xp = backend.xp
        Xc, Yc, wc = (xp.astype(backend.to_compute(a), xp.float64) for a in (X, Y, w))
        tic = time.perf_counter()
        anchors, softness, history = self._learn_varpro(
            xp.asarray(np.asarray(to_numpy(assigner.anchors), dtype=np.float64)),
            assigner.softness,
            Xc,
            Yc,
            wc,
            xp,
            check_random_state(self.random_state),
        )
        if self.verbose:
            print(
                f"[ARN] {self.solver}: {history.n_iter} iterations in "
                f"{time.perf_counter() - tic:.2f} s"
            )
        # The regressors are the exact ridge solution for the kept anchors on
        # all rows, so the statistics kept in the model are theirs.
        assigner = make_assigner(to_numpy(anchors), self.similarity, softness)
        stats = self._accumulate(backend, assigner, X, Y, w, stats=None)
        self._set_solution(stats, assigner, y_ndim, backend)
        self._record_history(history)

    def _fit_gradient(self, X, Y, w, y_ndim):
        """Learn anchors and regressors from the current (closed-form) model."""
        if Y.shape[1] != as_2d(self.intercept_).shape[1]:
            raise ValueError(
                f"y has {Y.shape[1]} targets but the model being warm-started has "
                f"{as_2d(self.intercept_).shape[1]}."
            )
        backend = Backend(self.device, X)
        xp = backend.xp
        X, Y, w = (xp.astype(backend.to_compute(a), xp.float64) for a in (X, Y, w))
        y_mean = xp.sum(w[:, None] * Y, axis=0) / xp.sum(w)
        coef, intercept, anchors = (
            backend.to_compute(a)
            for a in (as_3d(self.coef_), as_2d(self.intercept_), self.anchors_)
        )
        # Trained on centred targets, like the closed form, so that the penalty
        # sees the same centred biases and the closed form is its starting point.
        layer = make_layer(anchors, coef, intercept - y_mean[None, :], self.softness_, xp)
        random_state = check_random_state(self.random_state)
        tic = time.perf_counter()
        (layer,) = self._train_layers([layer], X, Y - y_mean[None, :], w, xp, random_state)
        if self.verbose:
            print(
                f"[ARN] {self.solver}: {self.n_iter_} epochs in {time.perf_counter() - tic:.2f} s"
            )
        coef, intercept = unpack_weights(
            layer["weights"], y_mean, anchors.shape[0], anchors.shape[1], xp
        )
        if y_ndim == 1:
            coef, intercept = coef[:, 0, :], intercept[:, 0]
        self.coef_, self.intercept_, self.anchors_ = (
            backend.to_output(a) for a in (coef, intercept, layer["anchors"])
        )
        self.softness_ = float(xp.exp(layer["log_softness"]))
        self.similarity_, self.top_k_ = self.similarity, None
        # The statistics belong to the initial anchors, not the learned ones.
        self.__dict__.pop("_stats", None)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
