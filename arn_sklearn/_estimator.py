"""The scikit-learn estimator: validation, orchestration and fitted attributes."""

import time
from contextlib import contextmanager
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

from . import _dask
from ._anchors import (
    KMEANS_MIN_ROWS,
    KMEANS_ROWS_PER_ANCHOR,
    auto_softness,
    init_anchors,
    subsample_indices,
)
from ._assignment import SIMILARITIES, soft_assignments
from ._backend import DEVICES, Backend, to_numpy
from ._gradients import make_layer
from ._lifting import (
    SufficientStatistics,
    accumulate,
    iter_chunks,
    lifted_size,
    pack_weights,
    predict_lifted,
    unpack_weights,
)
from ._solve import check_system_fits_memory, solve_ridge
from ._sparse import accumulate_top_k, chunk_row_bytes, densify, predict_top_k, top_k_assignments
from ._training import (
    GRADIENT_PARAMETER_CONSTRAINTS,
    GRADIENT_START_SOFTNESS,
    LEARNED_SOLVERS,
    GradientTrainingMixin,
)
from ._varpro import best_start

# batch_size=None streams chunks whose lifted block is about this many bytes:
# large enough for BLAS to run at full speed, small enough to keep memory flat.
_AUTO_CHUNK_BYTES = 64 * 2**20
_MIN_AUTO_BATCH = 256
_MAX_AUTO_CHUNK_BYTES = 2**30

_GRADIENT_HISTORY = ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_")


@contextmanager
def _rollback_on_error(estimator):
    """Restore the estimator's attributes if the block raises.

    Validation sets ``n_features_in_`` before the fit can fail; a failed fit
    must leave neither a half-fitted model nor a corrupted earlier fit.
    """
    saved = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise


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
        training objective: from too soft a start the closed-form regressors
        are large and cancel each other.
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
        lower training objective (its closed form on the same subsample), since
        k-plane anchors suit piecewise targets and KMeans anchors smooth ones.
        An array is used as given.
    solver : {"closed_form", "lbfgs", "adam", "sgd"}, default="closed_form"
        ``"closed_form"``: anchors stay as initialised, regressors solved
        exactly. ``"lbfgs"`` (recommended to learn anchors) is variable
        projection: the regressors are always the exact ridge solution for
        the current anchors and softness, and only the anchors and
        ``log K`` are searched, with scipy's L-BFGS-B on that reduced
        objective (its gradient, by the envelope theorem, costs about one
        closed-form fit); deterministic, no learning rate, monotone in the
        training objective; ``max_iter`` counts its iterations. The model
        keeps the closed-form statistics of the final anchors. ``"sgd"``
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
    coef_ : ndarray of shape (n_anchors, n_features) or (n_anchors, n_targets, n_features)
        ``W_k`` for each anchor; the middle axis is present for 2-D ``y``.
    intercept_ : ndarray of shape (n_anchors,) or (n_anchors, n_targets)
        ``b_k`` for each anchor, including the target mean (the assignments
        sum to one, so it can be carried by every anchor).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
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
        with _rollback_on_error(self):
            gradient = self.solver in LEARNED_SOLVERS
            if gradient and self._sparse_k() is not None:
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
                return _dask.fit(self, X, y, sample_weight)
            warm = gradient and self.warm_start and hasattr(self, "coef_")
            X, Y, w, y_ndim = self._validate_fit_data(X, y, sample_weight, reset=not warm)
            if warm:
                anchors, softness = to_numpy(self.anchors_), self.softness_
            else:
                anchors, softness = self._initial_anchors(X, w, Y)
            if self.solver == "lbfgs":
                self._fit_varpro(X, Y, w, y_ndim, anchors, softness)
                return self
            if not warm:
                stats = self._accumulate(X, Y, w, anchors, softness, stats=None)
                self._set_solution(stats, anchors, softness, y_ndim, X=X)
            if gradient:
                self._fit_gradient(X, Y, w, y_ndim)
        return self

    @available_if(_closed_form_solver)
    @_fit_context(prefer_skip_nested_validation=True)
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
        with _rollback_on_error(self):
            X, Y, w, y_ndim = self._validate_fit_data(X, y, sample_weight, reset=first_call)
            if first_call:
                anchors, softness = self._initial_anchors(X, w, Y)
                stats = None
            else:
                if Y.shape[1] != self._stats.zty.shape[1]:
                    raise ValueError(
                        f"y has {Y.shape[1]} targets but earlier calls to "
                        f"partial_fit had {self._stats.zty.shape[1]}."
                    )
                anchors, softness, stats = self.anchors_, self.softness_, self._stats
            stats = self._accumulate(X, Y, w, anchors, softness, stats=stats)
            self._set_solution(stats, anchors, softness, y_ndim, X=X)
        return self

    # -------------------------------------------------------------- predict
    def predict(self, X):
        """Predict ``sum_k alpha_k(x) (W_k x + b_k)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            A Dask array, computed block by block, when ``X`` is a Dask collection.
        """
        if _dask.is_dask_collection(X):
            return _dask.predict(self, X)
        X = self._validate_predict_data(X)
        backend = Backend(self.device, X)
        xp, Xc = backend.xp, backend.to_compute(X)
        W = pack_weights(self._coef_3d(), self._intercept_2d(), array_namespace(self.coef_))
        W, anchors = backend.to_compute(W), backend.to_compute(self.anchors_)
        batch_size = self._resolve_batch_size(W.shape[0])
        parts = []
        for chunk in _row_chunks(xp.astype(Xc, xp.float64), batch_size):
            if self._sparse_k() is None:
                parts.append(predict_lifted(chunk, self._assign(chunk, anchors, xp), W, xp))
            else:
                idx, vals = self._assign_top_k(chunk, anchors, xp)
                parts.append(predict_top_k(chunk, idx, vals, W, xp))
        y_pred = backend.to_output(xp.astype(xp.concat(parts, axis=0), Xc.dtype))
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
        anchors = backend.to_compute(self.anchors_)
        X64 = xp.astype(Xc, xp.float64)
        if self._sparse_k() is None:
            A = self._assign(X64, anchors, xp)
        else:
            A = densify(*self._assign_top_k(X64, anchors, xp), anchors.shape[0], xp)
        return backend.to_output(xp.astype(A, Xc.dtype))

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
        Y = xp.astype(y, xp.float64)
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
        if isinstance(self.anchors, str):
            if n_samples < self.n_anchors:
                raise ValueError(
                    f"Expected n_samples >= n_anchors, got n_samples={n_samples} "
                    f"< n_anchors={self.n_anchors}. Use fewer anchors or more rows."
                )
            return
        anchors = to_numpy(self.anchors) if hasattr(self.anchors, "shape") else None
        anchors = np.asarray(self.anchors if anchors is None else anchors)
        if anchors.shape != (self.n_anchors, n_features):
            raise ValueError(
                f"anchors has shape {anchors.shape}; expected (n_anchors, n_features) "
                f"= ({self.n_anchors}, {n_features})."
            )
        if not np.all(np.isfinite(anchors)):
            raise ValueError("anchors contains NaN or infinity.")

    def _anchor_method(self):
        """``anchors="auto"``: KMeans for the closed form; for learned anchors the
        better of the KMeans and k-plane starts ("kmeans|kplane")."""
        if self.anchors != "auto":
            return self.anchors
        return "kmeans" if self.solver == "closed_form" else "kmeans|kplane"

    def _initial_anchors(self, X, sample_weight, Y=None):
        random_state = check_random_state(self.random_state)
        tic = time.perf_counter()
        # KMeans and the softness rule run on the host, on bounded subsamples.
        X, sample_weight = to_numpy(X), to_numpy(sample_weight)
        method = self._anchor_method() if isinstance(self.anchors, str) else "given"
        starts, labels = [], []
        for name in method.split("|"):
            for start in self._initial_starts(name, X, sample_weight, Y, random_state):
                starts.append(start)
                labels.append(f"{name} K={start[1]:.4g}")
        anchors, softness = starts[0]
        if len(starts) > 1:
            # Both starts on the same bounded subsample, by the training objective.
            rows = subsample_indices(
                X.shape[0],
                max(KMEANS_MIN_ROWS, KMEANS_ROWS_PER_ANCHOR * self.n_anchors),
                random_state,
            )
            Ys = np.asarray(to_numpy(Y), dtype=np.float64)[rows]
            xp = array_namespace(X)
            index, values = best_start(
                xp.asarray(np.asarray(X[rows], dtype=np.float64)),
                Ys,
                sample_weight[rows],
                starts,
                self.similarity,
                self.alpha,
                xp,
            )
            anchors, softness = starts[index]
            if self.verbose:
                tried = ", ".join(f"{a}: {v:.4g}" for a, v in zip(labels, values, strict=True))
                print(f"[ARN] start {labels[index]} (training objective {tried})")
        if self.verbose:
            print(
                f"[ARN] anchors ({method})"
                f" and softness={softness:.4g} in {time.perf_counter() - tic:.2f} s"
            )
        return anchors, softness

    def _initial_starts(self, method, X, sample_weight, Y, random_state):
        """Candidate ``(anchors, softness)`` starts of one anchor method (numpy ``X``).

        With ``softness="auto"`` a learned solver tries the auto rule and
        ``GRADIENT_START_SOFTNESS`` times it for unsupervised anchors, the
        k-plane classifier's softness for k-plane anchors.
        """
        supervised_softness = None
        if method == "kplane":
            anchors, supervised_softness = init_anchors(
                X,
                sample_weight,
                self.n_anchors,
                method,
                random_state,
                None if Y is None else to_numpy(Y),
                similarity=self.similarity,
                alpha=self.alpha,
                return_softness=True,
            )
        elif method == "given":
            anchors = np.asarray(to_numpy(self.anchors), dtype=np.float64)
        else:
            anchors = init_anchors(X, sample_weight, self.n_anchors, method, random_state)
        if self.softness != "auto":
            return [(anchors, float(self.softness))]
        if supervised_softness is not None:
            return [(anchors, supervised_softness)]
        xp = array_namespace(X)
        softness = auto_softness(
            xp.astype(X, xp.float64), anchors, self.similarity, xp, random_state
        )
        if self.solver in LEARNED_SOLVERS and Y is not None:
            return [(anchors, softness), (anchors, GRADIENT_START_SOFTNESS * softness)]
        return [(anchors, softness)]

    def _resolve_batch_size(self, n_lifted):
        if self.batch_size is not None:
            return self.batch_size
        # Past ~8k unknowns a 64 MiB chunk has too few rows for syrk to be
        # compute-bound (it was 8x slower than one syrk on a GPU at 31,744):
        # up to n_lifted/4 rows, a quarter of the Gram's memory, capped at 1 GiB.
        large = min(n_lifted // 4, _MAX_AUTO_CHUNK_BYTES // (8 * n_lifted))
        return max(_MIN_AUTO_BATCH, _AUTO_CHUNK_BYTES // (8 * n_lifted), large)

    def _accumulate(self, X, Y, w, anchors, softness, stats):
        backend = Backend(self.device, X)
        xp = backend.xp
        X, Y, w, anchors = (backend.to_compute(a) for a in (X, Y, w, anchors))
        n_features = X.shape[1]
        n_lifted = lifted_size(anchors.shape[0], n_features)
        batch_size = self._resolve_batch_size(n_lifted)
        if self._sparse_k() is not None and self.batch_size is None:
            row_bytes = chunk_row_bytes(self.top_k, n_features, Y.shape[1])
            batch_size = max(_MIN_AUTO_BATCH, _AUTO_CHUNK_BYTES // row_bytes)
        if stats is None:
            check_system_fits_memory(anchors.shape[0], n_features, Y.shape[1], batch_size)
            stats = SufficientStatistics.zeros(n_lifted, Y.shape[1], xp, device=_device(X))
        tic = time.perf_counter()
        chunks = iter_chunks(X, Y, w, batch_size)
        if self._sparse_k() is None:

            def assign(chunk):
                return soft_assignments(chunk, anchors, self.similarity, softness, xp)

            stats = accumulate(chunks, assign, xp, stats, verbose=self.verbose)
        else:

            def assign_top_k(chunk):
                return top_k_assignments(chunk, anchors, self.similarity, softness, self.top_k, xp)

            stats = accumulate_top_k(
                chunks, assign_top_k, anchors.shape[0], xp, stats, verbose=self.verbose
            )
        if self.verbose:
            print(
                f"[ARN] accumulated {X.shape[0]} rows into a {n_lifted}-square "
                f"system in {time.perf_counter() - tic:.2f} s"
            )
        return stats

    def _set_solution(self, stats, anchors, softness, y_ndim, X=None):
        xp = array_namespace(stats.gram)
        tic = time.perf_counter()
        W, y_mean = solve_ridge(stats, self.alpha, xp)
        if self.verbose:
            print(f"[ARN] solved in {time.perf_counter() - tic:.2f} s")
        coef, intercept = unpack_weights(W, y_mean, anchors.shape[0], anchors.shape[1], xp)
        if y_ndim == 1:
            coef, intercept = coef[:, 0, :], intercept[:, 0]
        if X is not None:  # attributes follow the input's namespace
            backend = Backend(self.device, X)
            coef, intercept, anchors = map(backend.to_output, (coef, intercept, anchors))
        self.anchors_ = anchors
        self.softness_ = softness
        self.coef_ = coef
        self.intercept_ = intercept
        self._stats = stats
        # One pass and one solve; a gradient solver then records its epochs.
        self.n_iter_ = 1
        for name in _GRADIENT_HISTORY:
            self.__dict__.pop(name, None)

    def _fit_varpro(self, X, Y, w, y_ndim, anchors, softness):
        """``solver="lbfgs"``: learn anchors and softness, then the closed form on all rows."""
        if (
            hasattr(self, "coef_")
            and self.warm_start
            and Y.shape[1] != self._intercept_2d().shape[1]
        ):
            raise ValueError(
                f"y has {Y.shape[1]} targets but the model being warm-started has "
                f"{self._intercept_2d().shape[1]}."
            )
        backend = Backend(self.device, X)
        xp = backend.xp
        Xc, Yc, wc = (xp.astype(backend.to_compute(a), xp.float64) for a in (X, Y, w))
        tic = time.perf_counter()
        anchors, softness, history = self._learn_varpro(
            xp.asarray(np.asarray(to_numpy(anchors), dtype=np.float64)),
            float(softness),
            Xc,
            Yc,
            wc,
            xp,
            check_random_state(self.random_state),
        )
        if self.verbose:
            print(f"[ARN] lbfgs: {history.n_iter} iterations in {time.perf_counter() - tic:.2f} s")
        # The regressors are the exact ridge solution for the kept anchors on
        # all rows, so the statistics kept in the model are theirs.
        stats = self._accumulate(X, Y, w, anchors, softness, stats=None)
        self._set_solution(stats, anchors, softness, y_ndim, X=X)
        self._record_history(history)

    def _fit_gradient(self, X, Y, w, y_ndim):
        """Learn anchors and regressors from the current (closed-form) model."""
        if Y.shape[1] != self._intercept_2d().shape[1]:
            raise ValueError(
                f"y has {Y.shape[1]} targets but the model being warm-started has "
                f"{self._intercept_2d().shape[1]}."
            )
        backend = Backend(self.device, X)
        xp = backend.xp
        X, Y, w = (xp.astype(backend.to_compute(a), xp.float64) for a in (X, Y, w))
        y_mean = xp.sum(w[:, None] * Y, axis=0) / xp.sum(w)
        coef, intercept, anchors = (
            backend.to_compute(a) for a in (self._coef_3d(), self._intercept_2d(), self.anchors_)
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
        # The statistics belong to the initial anchors, not the learned ones.
        self.__dict__.pop("_stats", None)

    def _assign(self, X, anchors, xp):
        return soft_assignments(X, anchors, self.similarity, self.softness_, xp)

    def _assign_top_k(self, X, anchors, xp):
        return top_k_assignments(X, anchors, self.similarity, self.softness_, self.top_k, xp)

    def _sparse_k(self):
        """``top_k`` when it sparsifies, None for the dense model."""
        if self.top_k is None or self.top_k >= self.n_anchors:
            return None
        return self.top_k

    def _coef_3d(self):
        return self.coef_[:, None, :] if self.coef_.ndim == 2 else self.coef_

    def _intercept_2d(self):
        return self.intercept_[:, None] if self.intercept_.ndim == 1 else self.intercept_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _device(X):
    return None if isinstance(X, np.ndarray) else getattr(X, "device", None)


def _row_chunks(X, batch_size):
    for start in range(0, X.shape[0], batch_size):
        yield X[start : min(start + batch_size, X.shape[0]), ...]
