"""The scikit-learn estimator: parameters, validation, one driver call, fitted attributes."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import (
    check_is_fitted,
)

from .._fit import _dask
from .._fit._closed_form import fit_closed_form, partial_fit_closed_form
from .._fit._learned import fit_minibatch, fit_variable_projection
from .._kernels._assignment import SIMILARITIES
from .._kernels._topk import sparse_top_k
from .._learning._starts import StartSpec
from .._learning._training import (
    GRADIENT_PARAMETER_CONSTRAINTS,
    GRADIENT_SOLVERS,
    HISTORY_ATTRIBUTES,
    LEARNED_SOLVERS,
    TrainingOptions,
    fixed_alpha,
    history_attributes,
)
from .._model._blocksparse import LINEAR_SOLVERS
from .._model._layer import FittedLayer, as_2d, as_3d, make_assignment
from .._utils._arrays import to_numpy
from .._utils._backend import DEVICES, Backend
from .._utils._validation import (
    cast_predictions,
    check_feature_magnitude,
    check_warm_start,
    fit_method,
    resolve_anchors,
    validate_fit_data,
    validate_predict_data,
)


def _closed_form_solver(estimator):
    """partial_fit streams the closed-form statistics; gradient solvers have none."""
    return estimator.solver == "closed_form"


class ARNRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Anchored Regression Network: closed-form streaming ridge solve, or learned anchors.

    Each input ``x`` is softly assigned to ``n_anchors`` anchors ``c_k`` by
    ``pi(x) = softmax(K s(x, c_1..m))``; each anchor owns a linear regressor
    ``(W_k, b_k)`` and the prediction is ``sum_k pi_k(x) (W_k x + b_k)``.
    With the anchors fixed, the regressors minimise (paper eq. 10)

        ``sum_i w_i ||f(x_i) - y_i||^2 + alpha * sum_k ||[W_k, b_k]||^2``

    in closed form (eq. 17): one streaming pass accumulates the Gram matrix of
    the lifted features ``pi(x) (x) [x, 1]`` (one BLAS ``syrk`` per chunk),
    then a Cholesky factorisation solves the ``m(d+1)``-square system. Targets
    are centred on their weighted mean before the solve; biases are folded
    into the weights and penalised like them.

    With ``solver="gauss_newton"``, ``"lbfgs"``, ``"adam"`` or ``"sgd"`` the
    anchors (and, with ``learn_softness``, the softness) are learned on the
    same objective (paper section 3.2), with analytic gradients: by variable
    projection (the regressors stay the exact closed form, Levenberg-Marquardt
    or L-BFGS on the anchors), or
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
        sample weighs ``exp(-0.5)`` of the nearest. For a learned solver it is
        the start: the k-plane classifier's softness with k-plane anchors, else
        the rule or 4 times it (``GRADIENT_START_SOFTNESS``), whichever has the
        lower generalised cross-validation score of its closed form (the
        training objective alone prefers the harder start, which over-fits
        small data).
    alpha : "auto" or float >= 0, default="auto"
        Ridge penalty ``lambda`` of eq. (10), on weights and biases alike.
        ``"auto"`` is 1.0 for the closed form (:class:`ARNRegressorCV`
        cross-validates it) and the minibatch solvers; ``"gauss_newton"`` and
        ``"lbfgs"`` choose it on held-out rows (``validation_fraction`` of them:
        the ``early_stopping`` split, or the same split held out for this
        choice only, the final regressors still see every row), at the start
        of each stage, as the penalty with the lowest held-out squared error
        among 21 values from 1e-10 to 1 times the mean eigenvalue of the
        lifted Gram matrix (one eigendecomposition for all of them). A fixed
        penalty rarely suits learned anchors: with ``alpha=1`` they ended at
        9x the test error on a near-noiseless robot arm, and a fixed small
        one over-fits small data (``benchmarks/learned_vs_mlp.py``,
        ``docs/user_guide/learned.md``). ``alpha_`` holds the value used.
    anchors : {"auto", "kmeans", "kplane", "random"} or array-like, default="auto"
        ``"kmeans"``: KMeans centroids of at most ``max(10000, 64 * n_anchors)``
        random rows (for ``similarity="absdot"``, sign-invariant spherical KMeans:
        unit directions, each the leading eigenvector of its cluster);
        ``"kplane"``: a supervised start on the same subsample,
        clusterwise linear regression (Späth 1979: assign each row to the
        regressor that fits it best, refit, repeat; the best of 2 random
        starts by that hard objective), whose partition is then turned into
        anchors and a softness by fitting ``softmax(K s(x, c))`` to it
        (centroids, or leading directions for ``"absdot"``, as the start);
        ``"random"``: distinct random rows of ``X``; ``"auto"``: ``"kmeans"``
        for the closed form; for the solvers that learn anchors, the KMeans or
        the k-plane start, whichever has the lower generalised cross-validation
        score (of its closed form on the same subsample). An array of shape
        (n_anchors, n_features) is used as given.
    solver : {"closed_form", "gauss_newton", "lbfgs", "adam", "sgd"}, default="closed_form"
        ``"closed_form"``: anchors stay as initialised, regressors solved
        exactly. ``"gauss_newton"`` (recommended to learn anchors) and
        ``"lbfgs"`` are variable projection: the regressors are always the
        exact ridge solution for the current anchors and softness, and only
        the anchors and ``log K`` are searched, on that reduced objective.
        ``"gauss_newton"`` takes Levenberg-Marquardt steps with Kaufman's
        Gauss-Newton matrix (the joint problem's, the regressors eliminated;
        about two closed-form passes per step): tens of steps where
        ``"lbfgs"`` (scipy's L-BFGS-B on the envelope gradient) needs
        hundreds of iterations (``benchmarks/learned_vs_mlp.py``). Both are
        deterministic, need no learning rate and never accept a step that
        raises the training objective; ``max_iter`` counts their iterations
        (steps tried). On more than 12,000 training rows ``"gauss_newton"``
        learns coarse to fine: on a random subsample of 6,000 of them (ridge
        penalty scaled to its share of the weight) until its stopping rule,
        then one step on all training rows, where the start competes again
        (``loss_curve_`` holds the subsample's objective first). The model
        keeps the closed-form statistics of the final anchors. ``"sgd"
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
    linear_solver : {"auto", "dense", "sparse", "iterative"}, default="auto"
        How the block-sparse system of a ``top_k`` model is solved (a dense
        model always uses one Cholesky factorisation). ``"auto"`` picks the
        cheapest by a cost model of the anchor graph: a dense Cholesky for small
        or well-connected systems (when it fits in memory), one Cholesky per
        connected component of the anchor graph when every component is small,
        a sparse direct factor (SuperLU) otherwise, or conjugate gradients
        preconditioned by the per-anchor blocks when a factor would fill in.
        ``"dense"``, ``"sparse"`` and ``"iterative"`` force one; the iterative
        solve needs ``alpha > 0`` and stops at an estimated 3e-7 relative
        energy-norm error, so its predictions agree with a direct solve to
        within 1e-6. With
        :meth:`partial_fit`, the first call fixes it.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where assignment, accumulation, solve and predict run. ``"auto"``
        computes where the input lives (CuPy input, with scikit-learn's
        ``array_api_dispatch``, runs on the GPU); ``"cuda"`` moves host input to
        the GPU through CuPy (extra ``gpu``) and returns numpy; ``"cpu"`` moves
        GPU input to the host. Fitted attributes are in the input's namespace.
    learning_rate_init : float, default=0.001
        Initial step size of ``"adam"`` and ``"sgd"``.
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
        With a learned solver, also learn the softness ``K`` (in log space, so
        it stays positive); False keeps the start's softness. If training
        stalls, start harder (a float ``softness`` a few times ``softness_`` of
        the closed form; see the user guide on learned anchors).
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
    alpha_ : float
        The ridge penalty of the fitted regressors (``alpha``, or the learned
        fit's choice with ``alpha="auto"``).
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
        "alpha": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "anchors": [StrOptions({"auto", "kmeans", "kplane", "random"}), "array-like"],
        "solver": [StrOptions({"closed_form", *LEARNED_SOLVERS})],
        "batch_size": [None, Interval(Integral, 1, None, closed="left")],
        "top_k": [None, Interval(Integral, 1, None, closed="left")],
        "linear_solver": [StrOptions(set(LINEAR_SOLVERS))],
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
        alpha="auto",
        anchors="auto",
        solver="closed_form",
        batch_size=None,
        top_k=None,
        linear_solver="auto",
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
        self.linear_solver = linear_solver
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
    @fit_method
    def fit(self, X, y, sample_weight=None):
        """Fit anchors, softness and regressors on all rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows. A Dask array or DataFrame is fitted block by block on
            its workers.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets; a 2-D ``y`` fits one regressor per output and anchor.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; an integer weight equals repeating the row.

        Returns
        -------
        self : ARNRegressor
            The fitted estimator.
        """
        learned = self.solver in LEARNED_SOLVERS
        if learned and sparse_top_k(self.n_anchors, self.top_k) is not None:
            raise ValueError(
                "top_k is only supported with solver='closed_form': with top-k "
                "assignments the objective jumps where a sample's kept anchors change."
            )
        if _dask.is_dask_collection(X):
            if learned:
                raise ValueError(
                    f"solver={self.solver!r} needs the data in memory; compute the Dask "
                    "collection first or use solver='closed_form'."
                )
            return self._fit_dask(X, y, sample_weight)
        warm = learned and self.warm_start and hasattr(self, "coef_")
        X, Y, w, y_ndim = self._validate_fit_data(X, y, sample_weight, reset=not warm)
        backend = Backend(self.device, X)
        if warm:
            check_warm_start(
                [self.anchors_.shape[0]],
                [self.n_anchors],
                X.shape[0],
                self.anchors,
                self.similarity,
                self.similarity_,
            )
        start = self._fitted_layer() if warm else None
        common = dict(random_state=self.random_state, backend=backend)
        if self.solver == "closed_form":
            layer = fit_closed_form(
                X, Y, w, self.n_anchors_, self._start_spec(), batch_size=self.batch_size, **common
            )
            history = None
        else:
            driver = fit_minibatch if self.solver in GRADIENT_SOLVERS else fit_variable_projection
            layer, history = driver(
                X,
                Y,
                w,
                self.n_anchors_,
                self._start_spec(),
                self._training_options(),
                start=start,
                **common,
            )
        self._set_fitted(layer, y_ndim, backend.to_output, history)
        return self

    @available_if(_closed_form_solver)
    @fit_method
    def partial_fit(self, X, y, sample_weight=None):
        """Add a batch of rows to the accumulated statistics and re-solve.

        The first call fixes the anchors and the softness (from this batch, or
        as given); later calls reuse them, so fitting in chunks gives the same
        model as one :meth:`fit` on all rows with the same anchors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A batch of rows, with the first batch's features.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            The batch's targets, with the first batch's number of outputs.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the batch's rows, on the scale of the other batches'.

        Returns
        -------
        self : ARNRegressor
            The estimator, solved on all batches so far.
        """
        first_call = not hasattr(self, "_stats")
        X, Y, w, y_ndim = self._validate_fit_data(X, y, sample_weight, reset=first_call)
        backend = Backend(self.device, X)
        if first_call:
            layer = fit_closed_form(
                X,
                Y,
                w,
                self.n_anchors_,
                self._start_spec(),
                batch_size=self.batch_size,
                random_state=self.random_state,
                backend=backend,
            )
        else:
            layer = partial_fit_closed_form(
                self._fitted_layer(),
                X,
                Y,
                w,
                fixed_alpha(self.alpha),
                batch_size=self.batch_size,
                backend=backend,
                verbose=self.verbose,
            )
        self._set_fitted(layer, y_ndim, backend.to_output)
        return self

    # -------------------------------------------------------------- predict
    def predict(self, X, return_std=False):
        """Predict ``sum_k pi_k(x) (W_k x + b_k)``.

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
        state = self._predictive_state() if return_std else None  # fails early, once
        if _dask.is_dask_collection(X):
            y_pred = self._predict_dask(X, "predict")
            return (y_pred, self._predict_dask(X, "predict_std", state)) if return_std else y_pred
        X, backend, layer = self._predict_setup(X)
        Xc = backend.to_compute(X)
        y_pred = layer.predict(Xc, backend.xp, self.batch_size)
        y_pred = self._output(y_pred, Xc, backend, predictions=True)
        if not return_std:
            return y_pred
        check_feature_magnitude(X)  # the leverage squares the lifted features
        y_std = layer.predict_std(Xc, backend.xp, state, self.batch_size)
        return y_pred, self._output(y_std, Xc, backend)

    def soft_assignments(self, X):
        """Soft assignments ``pi(X)`` of samples to the anchors (eq. 4).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to assign.

        Returns
        -------
        A : ndarray of shape (n_samples, n_anchors)
            Non-negative rows that sum to one (a Dask array for Dask input).
        """
        if _dask.is_dask_collection(X):
            return self._predict_dask(X, "soft_assignments")
        X, backend, layer = self._predict_setup(X)
        Xc = backend.to_compute(X)
        A = layer.assign(Xc, backend.xp, self.batch_size)
        return backend.to_output(backend.xp.astype(A, Xc.dtype))

    def local_linear(self, X):
        """The exact local linear model of each sample: ``f(x) = A(x) x + a(x)``.

        ``A(x) = sum_k pi_k(x) W_k`` and ``a(x) = sum_k pi_k(x) b_k`` (over
        the kept anchors with ``top_k``), so that
        ``einsum("ntd,nd->nt", coef, X) + intercept`` equals :meth:`predict`
        to rounding. ``coef[i]`` is the linear regressor the model applies at
        ``X[i]``; it does not include how the assignments move with ``x``
        (see :meth:`jacobian`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples at which to read the local model.

        Returns
        -------
        coef : ndarray of shape (n_samples, n_features) or (n_samples, n_targets, n_features)
            ``A(x) = sum_k pi_k(x) W_k`` at each sample.
        intercept : ndarray of shape (n_samples,) or (n_samples, n_targets)
            ``a(x) = sum_k pi_k(x) b_k`` at each sample.

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
        X, backend, layer = self._predict_setup(X)
        Xc = backend.to_compute(X)
        coef, intercept = layer.local_linear(Xc, backend.xp)
        return self._output(coef, Xc, backend), self._output(intercept, Xc, backend)

    def jacobian(self, X):
        """The exact derivative ``df/dx`` of the prediction at each sample.

        ``A(x) + sum_k (W_k x + b_k) grad pi_k(x)^T``: the local linear
        coefficients plus the term from the assignments' own variation
        (softmax and similarity derivatives). With ``top_k`` it is the
        derivative of the renormalised softmax over the kept anchors, exact
        away from the points where the kept set changes (where the model is
        not differentiable).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples at which to differentiate.

        Returns
        -------
        jacobian : ndarray of shape (n_samples, n_features) or (n_samples, n_targets, n_features)
            ``df/dx`` at each sample; the second shape for a 2-D ``y``.

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
        X, backend, layer = self._predict_setup(X)
        check_feature_magnitude(X)  # the derivative of the similarities squares x
        Xc = backend.to_compute(X)
        return self._output(layer.jacobian(Xc, backend.xp), Xc, backend)

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
            return cache[2]
        state = self._fitted_layer().predictive_state()
        self._predictive_cache = (stats, self._alpha, state)
        return state

    def __getstate__(self):
        state = super().__getstate__()
        # The cached factorisation holds the array module; it is recomputed lazily.
        state.pop("_predictive_cache", None)
        return state

    # -------------------------------------------------------------- helpers
    def _start_spec(self):
        """How a new fit chooses its anchors and softness (plain values)."""
        anchors = self.anchors if isinstance(self.anchors, str) else to_numpy(self.anchors)
        return StartSpec(
            anchors=anchors,
            similarity=self.similarity,
            softness=self.softness,
            top_k=self.top_k,
            linear_solver=self.linear_solver,
            alpha=fixed_alpha(self.alpha),
            learned=self.solver in LEARNED_SOLVERS,
            verbose=self.verbose,
        )

    def _training_options(self):
        return TrainingOptions.from_params(self.get_params())

    def _fitted_layer(self):
        """The fitted layer, from the fitted attributes (in their namespace)."""
        assignment = make_assignment(self.anchors_, self.similarity_, self.softness_, self.top_k_)
        return FittedLayer(
            assignment,
            as_3d(self.coef_),
            as_2d(self.intercept_),
            stats=self.__dict__.get("_stats"),
            alpha=self.__dict__.get("_alpha"),
        )

    def _set_fitted(self, layer, y_ndim, to_output, history=None):
        """Store a fitted layer (in the compute namespace) as the fitted attributes."""
        coef, intercept = layer.coef, layer.intercept
        if y_ndim == 1:  # 1-D y: no target axis
            coef, intercept = coef[:, 0, :], intercept[:, 0]
        a = layer.assignment
        self.anchors_, self.coef_, self.intercept_ = map(to_output, (a.anchors, coef, intercept))
        self.softness_, self.similarity_, self.top_k_ = a.softness, a.similarity, a.top_k
        self.alpha_ = fixed_alpha(self.alpha) if layer.alpha is None else layer.alpha
        if layer.stats is None:  # learned regressors: the statistics were the start's
            self.__dict__.pop("_stats", None)
        else:
            # The statistics (where they were solved), for partial_fit and return_std,
            # and the penalty of this solution (the parameter may change before predict).
            self._stats, self._alpha = layer.stats, layer.alpha
        for name in HISTORY_ATTRIBUTES:  # an earlier fit's, e.g. a learned solver's
            self.__dict__.pop(name, None)
        self.n_iter_ = 1  # one pass and one solve
        if history is not None:
            for name, value in history_attributes(history, self.early_stopping).items():
                setattr(self, name, value)

    def _validate_fit_data(self, X, y, sample_weight, reset):
        X, Y, w, y_ndim = validate_fit_data(self, X, y, sample_weight, reset=reset)
        if reset:
            self._check_anchor_count(X)
        return X, Y, w, y_ndim

    def _check_anchor_count(self, X):
        """Set ``n_anchors_`` for a fit on ``X``; the given anchors validated, or None."""
        self.n_anchors_, anchor_array = resolve_anchors(self.n_anchors, self.anchors, X.shape)
        return anchor_array

    def _predict_setup(self, X):
        """Validated ``X``, its backend, and the fitted layer in the compute namespace."""
        X = validate_predict_data(self, X)
        backend = Backend(self.device, X)
        return X, backend, self._fitted_layer().moved(backend.to_compute)

    def _output(self, a, Xc, backend, predictions=False):
        """A float64 compute-namespace result in the input's dtype and namespace.

        Predictions that overflow the input's dtype are refused.
        """
        xp = backend.xp
        a = cast_predictions(a, Xc.dtype, xp) if predictions else xp.astype(a, Xc.dtype)
        a = backend.to_output(a)
        return a[:, 0, ...] if self.coef_.ndim == 2 else a  # 1-D y: no target axis

    def _fit_dask(self, X, y, sample_weight):
        """Dask input: anchors from sampled blocks, statistics summed over blocks."""
        X, Y, w = _dask.validate_fit(X, y, sample_weight)
        self.__dict__.pop("feature_names_in_", None)
        self.n_features_in_ = X.shape[1]
        anchor_array = self._check_anchor_count(X)
        # The blocks run on the CPU; the small system is solved where `device`
        # says (the GPU for "cuda"), and the attributes come back as numpy.
        backend = Backend(self.device, np.empty((0, X.shape[1])))
        layer = _dask.fit_dask(
            X,
            Y,
            w,
            self.n_anchors_,
            self._start_spec(),
            anchor_array,
            batch_size=self.batch_size,
            random_state=self.random_state,
            backend=backend,
        )
        self._set_fitted(layer, Y.ndim, backend.to_output)
        return self

    def _predict_dask(self, X, method, state=None):
        check_is_fitted(self)
        return _dask.predict(
            self._fitted_layer(),
            X,
            method=method,
            n_features=self.n_features_in_,
            y_ndim=self.coef_.ndim - 1,
            estimator_name=type(self).__name__,
            state=state,
            device=self.device,
            batch_size=self.batch_size,
        )
