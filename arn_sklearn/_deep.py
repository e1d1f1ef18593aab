"""Deep ARN: residual stacks of ARN layers trained end to end (paper section 4.2)."""

import time
from numbers import Integral, Real

import numpy as np
from array_api_compat import array_namespace
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._array_api import get_namespace
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _explain
from ._anchors import auto_softness, init_anchors
from ._assignment import SIMILARITIES
from ._backend import DEVICES, Backend, to_numpy
from ._base import (
    cast_predictions,
    check_anchor_counts,
    resolve_n_anchors,
    rollback_on_error,
    validate_targets,
)
from ._estimator import ARNRegressor
from ._gradients import make_layer, network_predict
from ._lifting import unpack_weights
from ._pipeline import as_2d, as_3d, initial_anchors
from ._training import (
    GRADIENT_PARAMETER_CONSTRAINTS,
    GRADIENT_SOLVERS,
    GRADIENT_START_SOFTNESS,
    GradientTrainingMixin,
)


def _is_str(value, name):
    return isinstance(value, str) and value == name


class DeepARNRegressor(GradientTrainingMixin, RegressorMixin, BaseEstimator):
    """Deep Anchored Regression Network: residual ARN layers, then an ARN head.

    ``n_layers - 1`` ARN layers map ``R^d -> R^d`` with residual shortcuts,
    ``h <- h + f_l(h)``; a final ARN layer maps ``R^d -> R^t`` (paper section
    4.2, "Deep ARN"). All anchors, regressors and (optionally) softnesses are
    trained end to end by minibatch gradient descent with analytic gradients.

    The residual layers start as the identity (zero regressors, anchors from
    KMeans on ``X``) and the final layer as the closed-form
    :class:`ARNRegressor` on ``X``, so training starts from the single-layer
    closed-form model; the epoch with the lowest training objective (or the
    best validation score, with ``early_stopping``) is kept, so the training
    objective never ends above that model's.

    Parameters
    ----------
    n_layers : int, default=2
        Number of ARN layers, the final one included (1 is a single ARN layer
        with learned anchors).
    n_anchors : int or sequence of int, default=16
        Anchors per layer: one count for every layer, or one per layer.
    similarity : {"euclidean", "dot", "absdot", "cosine"}, default="euclidean"
        See :class:`ARNRegressor`.
    softness : "auto" or float > 0, default="auto"
        Initial softness of every layer; ``"auto"`` takes the k-plane
        classifier's softness for k-plane anchors, else applies
        ``GRADIENT_START_SOFTNESS`` (4) times the rule of
        :class:`ARNRegressor` to each layer's anchors on ``X``.
    alpha : float >= 0, default=1.0
        Ridge penalty on the regressors of every layer (biases included).
    anchors : {"auto", "kmeans", "kplane", "random"} or array-like of shape \
            (n_anchors[-1], n_features), default="auto"
        Initial anchors: ``"auto"`` (or ``"kplane"``) gives the last layer
        the supervised k-plane anchors (see :class:`ARNRegressor`) and the
        residual layers KMeans anchors; an array gives the last layer's (the
        closed-form start) and the residual layers use KMeans.
    solver : {"adam", "sgd"}, default="adam"
        See :class:`ARNRegressor`.
    batch_size : int, default=None
        Minibatch size; ``None`` is ``min(1000, n_samples)``.
    device : {"auto", "cpu", "cuda"}, default="auto"
        See :class:`ARNRegressor`.
    learning_rate_init : float, default=0.001
    momentum : float, default=0.9
    max_iter : int, default=200
    tol : float, default=1e-4
    n_iter_no_change : int, default=10
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the rows, keep the epoch with the
        best validation R^2 (the closed-form start competes as epoch 0) and
        stop when it stalls, as in :class:`ARNRegressor`. On by default: a
        residual stack has several times the parameters of one layer, and
        without it 200 Adam epochs over-fit small data (5-fold R^2 on
        scikit-learn's diabetes, in a ``StandardScaler`` pipeline: 0.09 without,
        0.475 with, against 0.487 for ``RidgeCV``).
    validation_fraction : float, default=0.1
    learn_softness : bool, default=True
    warm_start : bool, default=False
        As in :class:`ARNRegressor` with a gradient solver.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the validation split and the minibatch order.
    verbose : int, default=0
        Prints each epoch's loss and time.

    Attributes
    ----------
    anchors_ : list of ndarray of shape (n_anchors[l], n_features)
    coefs_ : list of ndarray of shape (n_anchors[l], n_outputs[l], n_features)
        Per-anchor weights of each layer; ``n_outputs`` is ``n_features`` for
        the residual layers and the number of targets (1 for 1-D ``y``) for the
        last one.
    intercepts_ : list of ndarray of shape (n_anchors[l], n_outputs[l])
        Per-anchor biases (the target mean is carried by the last layer's).
    softness_ : list of float
        Softness ``K`` of each layer.
    n_iter_, loss_curve_, best_loss_, validation_scores_, best_validation_score_
        As in :class:`ARNRegressor` with a gradient solver.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)

    See Also
    --------
    ARNRegressor : One ARN layer, closed-form or learned.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn import DeepARNRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-2, 2, size=(400, 2))
    >>> y = np.sin(X[:, 0]) * X[:, 1]
    >>> model = DeepARNRegressor(n_layers=2, n_anchors=8, alpha=1e-3, max_iter=20,
    ...                          learning_rate_init=0.01, random_state=0).fit(X, y)
    >>> [c.shape for c in model.coefs_]
    [(8, 2, 2), (8, 1, 2)]
    >>> bool(model.best_loss_ <= model.loss_curve_[0])
    True
    """

    _parameter_constraints: dict = {
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "n_anchors": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "similarity": [StrOptions(set(SIMILARITIES))],
        "softness": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "anchors": [StrOptions({"auto", "kmeans", "kplane", "random"}), "array-like"],
        "solver": [StrOptions(set(GRADIENT_SOLVERS))],
        "batch_size": [None, Interval(Integral, 1, None, closed="left")],
        "device": [StrOptions(set(DEVICES))],
        **GRADIENT_PARAMETER_CONSTRAINTS,
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_layers=2,
        n_anchors=16,
        *,
        similarity="euclidean",
        softness="auto",
        alpha=1.0,
        anchors="auto",
        solver="adam",
        batch_size=None,
        device="auto",
        learning_rate_init=0.001,
        momentum=0.9,
        max_iter=200,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=True,
        validation_fraction=0.1,
        learn_softness=True,
        warm_start=False,
        random_state=None,
        verbose=0,
    ):
        self.n_layers = n_layers
        self.n_anchors = n_anchors
        self.similarity = similarity
        self.softness = softness
        self.alpha = alpha
        self.anchors = anchors
        self.solver = solver
        self.batch_size = batch_size
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

    @_fit_context(prefer_skip_nested_validation=True)
    @rollback_on_error
    def fit(self, X, y, sample_weight=None):
        """Initialise from the closed-form ARN, then train all layers end to end.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : DeepARNRegressor
        """
        warm = self.warm_start and hasattr(self, "coefs_")
        xp, _ = get_namespace(X)
        X, y = validate_data(
            self,
            X,
            y,
            reset=not warm,
            multi_output=True,
            y_numeric=True,
            dtype=[xp.float64, xp.float32],
        )
        validate_targets(y)
        w = _check_sample_weight(sample_weight, X, dtype=xp.float64, ensure_non_negative=True)
        random_state = check_random_state(self.random_state)
        if warm:
            self._check_warm_targets(y)
        else:
            self._initialise(X, y, w, random_state)
        backend = Backend(self.device, X)
        xp = backend.xp
        X, Y, w = (xp.astype(backend.to_compute(a), xp.float64) for a in (X, y, w))
        Y = xp.reshape(Y, (Y.shape[0], -1))
        y_mean = xp.sum(w[:, None] * Y, axis=0) / xp.sum(w)
        layers = self._layers(backend, y_mean)
        tic = time.perf_counter()
        layers = self._train_layers(layers, X, Y - y_mean[None, :], w, xp, random_state)
        if self.verbose:
            print(f"[DeepARN] {self.n_iter_} epochs in {time.perf_counter() - tic:.2f} s")
        self._set_layers(layers, y_mean, backend)
        return self

    def predict(self, X):
        """Predict with the residual stack.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        check_is_fitted(self)
        xp, _ = get_namespace(X)
        X = validate_data(self, X, reset=False, dtype=[xp.float64, xp.float32])
        backend = Backend(self.device, X)
        xp = backend.xp
        Xc = backend.to_compute(X)
        layers = self._layers(backend, None)
        y_pred = network_predict(xp.astype(Xc, xp.float64), layers, self.similarity, xp)
        y_pred = backend.to_output(cast_predictions(y_pred, Xc.dtype, xp))
        return y_pred[:, 0] if self._y_ndim == 1 else y_pred

    def jacobian(self, X):
        """The exact derivative ``df/dx`` of the prediction at each sample.

        The chain rule through the residual layers,
        ``J_L(h_{L-1}) (I + J_{L-1}(h_{L-2})) ... (I + J_1(x))``, each layer's
        Jacobian as in :meth:`ARNRegressor.jacobian`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        jacobian : ndarray of shape (n_samples, n_features) or \
                (n_samples, n_targets, n_features)
        """
        return self._explain(X, _explain.network_jacobian)

    def local_linear(self, X):
        """An exact affine decomposition ``f(x) = A(x) x + a(x)`` of each prediction.

        Every layer is affine at its own input (``f_l(h) = A_l(h) h + a_l(h)``,
        see :meth:`ARNRegressor.local_linear`), so composing the layers with
        the assignments frozen at the sample's activations gives an affine map
        of ``x`` that reproduces :meth:`predict` to rounding. Unlike the single
        layer's, ``A(x)`` mixes the regressors of every layer; it is exact as
        a decomposition of the prediction, not a derivative (see
        :meth:`jacobian`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        coef : ndarray of shape (n_samples, n_features) or (n_samples, n_targets, n_features)
        intercept : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        return self._explain(X, _explain.network_local_linear)

    def _explain(self, X, kernel):
        check_is_fitted(self)
        xp, _ = get_namespace(X)
        X = validate_data(self, X, reset=False, dtype=[xp.float64, xp.float32])
        backend = Backend(self.device, X)
        xp = backend.xp
        Xc = backend.to_compute(X)
        layers = [
            {
                "anchors": xp.astype(backend.to_compute(anchors), xp.float64),
                "coef": xp.astype(backend.to_compute(coef), xp.float64),
                "intercept": xp.astype(backend.to_compute(intercept), xp.float64),
                "softness": softness,
            }
            for anchors, coef, intercept, softness in zip(
                self.anchors_, self.coefs_, self.intercepts_, self.softness_, strict=True
            )
        ]
        rows = min(_explain.chunk_rows(*layer["coef"].shape) for layer in layers)
        X64 = xp.astype(Xc, xp.float64)
        parts = []
        for start in range(0, X64.shape[0], rows):
            chunk = X64[start : min(start + rows, X64.shape[0]), ...]
            out = kernel(chunk, layers, self.similarity, None, xp)
            parts.append(out if isinstance(out, tuple) else (out,))
        out = [
            backend.to_output(xp.astype(xp.concat(list(p), axis=0), Xc.dtype))
            for p in zip(*parts, strict=True)
        ]
        if self._y_ndim == 1:
            out = [a[:, 0, ...] for a in out]
        return tuple(out) if len(out) > 1 else out[0]

    # -------------------------------------------------------------- helpers
    def _anchor_counts(self):
        return check_anchor_counts(self.n_anchors, self.n_layers)

    def _initialise(self, X, y, w, random_state):
        """Residual layers as the identity, the last layer as the closed-form ARN."""
        counts = [resolve_n_anchors(m, X.shape[0], self.anchors) for m in self._anchor_counts()]
        if X.shape[0] < max(counts):  # only with given anchors (residual layers use KMeans)
            raise ValueError(
                f"Expected n_samples >= n_anchors, got n_samples={X.shape[0]} "
                f"< n_anchors={max(counts)}. Use fewer anchors or more rows."
            )
        # The same start as ARNRegressor's learned solvers (for "auto", the better
        # of KMeans and k-plane anchors by GCV of the closed form; a softness
        # GRADIENT_START_SOFTNESS times the auto rule for KMeans anchors).
        params = dict(similarity=self.similarity, alpha=self.alpha, device=self.device)
        X_host, w_host = to_numpy(X).astype(np.float64), to_numpy(w)
        head_anchors, head_softness = initial_anchors(
            X_host,
            w_host,
            counts[-1],
            self.anchors if isinstance(self.anchors, str) else to_numpy(self.anchors),
            self.similarity,
            self.softness,
            None,
            random_state,
            y=to_numpy(y).reshape(y.shape[0], -1),
            alpha=self.alpha,
            learned=True,
        )
        head = ARNRegressor(counts[-1], softness=head_softness, anchors=head_anchors, **params).fit(
            X, y, sample_weight=w
        )
        X_host, w_host = to_numpy(X).astype(np.float64), to_numpy(w)
        anchors, coefs, intercepts, softness = [], [], [], []
        n_features = X.shape[1]
        # Residual layers start as the identity: unsupervised anchors on X.
        method = "random" if _is_str(self.anchors, "random") else "kmeans"
        for count in counts[:-1]:
            layer_anchors = init_anchors(X_host, w_host, count, method, random_state)
            anchors.append(layer_anchors)
            coefs.append(np.zeros((count, n_features, n_features)))
            intercepts.append(np.zeros((count, n_features)))
            softness.append(self._initial_softness(X_host, layer_anchors, random_state))
        anchors.append(to_numpy(head.anchors_))
        coefs.append(to_numpy(as_3d(head.coef_)))
        intercepts.append(to_numpy(as_2d(head.intercept_)))
        softness.append(head.softness_)
        self.anchors_, self.coefs_, self.intercepts_ = anchors, coefs, intercepts
        self.softness_ = softness
        self.n_anchors_ = counts
        self._y_ndim = y.ndim

    def _initial_softness(self, X, anchors, random_state):
        if self.softness != "auto":
            return float(self.softness)
        xp = array_namespace(X)
        return GRADIENT_START_SOFTNESS * auto_softness(
            X, anchors, self.similarity, xp, random_state
        )

    def _check_warm_targets(self, y):
        n_targets = 1 if y.ndim == 1 else y.shape[1]
        if n_targets != self.intercepts_[-1].shape[1]:
            raise ValueError(
                f"y has {n_targets} targets but the model being warm-started has "
                f"{self.intercepts_[-1].shape[1]}."
            )

    def _layers(self, backend, y_mean):
        """Fitted attributes as layer dicts in the compute namespace.

        With ``y_mean``, the last layer's biases are centred (training form).
        """
        xp = backend.xp
        layers = []
        last = len(self.coefs_) - 1
        for index, (anchors, coef, intercept, softness) in enumerate(
            zip(self.anchors_, self.coefs_, self.intercepts_, self.softness_, strict=True)
        ):
            anchors, coef, intercept = map(backend.to_compute, (anchors, coef, intercept))
            if index == last and y_mean is not None:
                intercept = intercept - y_mean[None, :]
            layers.append(make_layer(anchors, coef, intercept, softness, xp))
        return layers

    def _set_layers(self, layers, y_mean, backend):
        xp = backend.xp
        anchors, coefs, intercepts, softness = [], [], [], []
        for index, layer in enumerate(layers):
            n_anchors, n_features = layer["anchors"].shape
            offset = y_mean if index == len(layers) - 1 else xp.zeros_like(y_mean[:1])
            coef, intercept = unpack_weights(layer["weights"], offset, n_anchors, n_features, xp)
            anchors.append(backend.to_output(layer["anchors"]))
            coefs.append(backend.to_output(coef))
            intercepts.append(backend.to_output(intercept))
            softness.append(float(xp.exp(layer["log_softness"])))
        self.anchors_, self.coefs_, self.intercepts_ = anchors, coefs, intercepts
        self.softness_ = softness

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
