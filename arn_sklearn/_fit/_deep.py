"""Deep ARN: a residual stack of ARN layers started from the closed form, trained end to end.

The residual layers start as the identity (zero regressors, unsupervised
anchors on ``X``) and the last layer as the closed-form ARN on ``X`` with the
learned solvers' start, so training starts from the single-layer model.
"""

import time
from dataclasses import replace

import numpy as np
from array_api_compat import array_namespace
from sklearn.utils import check_random_state

from .._anchors._init import auto_softness, init_anchors
from .._kernels._gradients import make_layer
from .._kernels._lifting import unpack_weights
from .._learning._starts import GRADIENT_START_SOFTNESS, initial_anchors
from .._learning._training import train_layers
from .._model._layer import (
    DenseAssignment,
    FittedLayer,
    check_fits_memory,
    closed_form_layer,
    make_assignment,
)
from .._model._network import FittedNetwork
from .._utils._arrays import to_numpy
from .._utils._validation import check_target_count


def fit_deep(X, Y, w, counts, spec, options, *, random_state, backend, start=None):
    """Train a residual stack of ARN layers.

    Parameters
    ----------
    X, Y, w : arrays
        The rows, their targets (2-D, float64) and weights (float64), in any namespace.
    counts : list of int
        Anchors of each layer, the last one included.
    spec : StartSpec
        Anchors (of the last layer), similarity, softness and alpha.
    options : TrainingOptions
    random_state : int, RandomState instance or None
        One generator serves the initialisation and the training.
    backend : Backend
    start : FittedNetwork, default=None
        The fitted stack to continue from (``warm_start``).

    Returns
    -------
    network : FittedNetwork
        In the compute namespace.
    history : TrainingHistory
    """
    random_state = check_random_state(random_state)
    if start is None:
        start = _initial_stack(X, Y, w, counts, spec, random_state, backend)
    else:
        check_target_count(Y, start.layers[-1].coef.shape[1])
    xp = backend.xp
    X, Y, w = (xp.astype(backend.to_compute(a), xp.float64) for a in (X, Y, w))
    y_mean = xp.sum(w[:, None] * Y, axis=0) / xp.sum(w)
    network = []
    for index, layer in enumerate(start.layers):
        layer = layer.moved(backend.to_compute)
        # The last layer is trained on centred targets, like the closed form.
        intercept = (
            layer.intercept - y_mean[None, :] if index == len(start.layers) - 1 else layer.intercept
        )
        network.append(
            make_layer(
                layer.assignment.anchors, layer.coef, intercept, layer.assignment.softness, xp
            )
        )
    tic = time.perf_counter()
    network, history = train_layers(options, network, X, Y - y_mean[None, :], w, xp, random_state)
    if options.verbose:
        print(f"[DeepARN] {history.n_iter} epochs in {time.perf_counter() - tic:.2f} s")
    fitted = []
    for index, layer in enumerate(network):
        n_anchors, n_features = layer["anchors"].shape
        offset = y_mean if index == len(network) - 1 else xp.zeros_like(y_mean[:1])
        coef, intercept = unpack_weights(layer["weights"], offset, n_anchors, n_features, xp)
        softness = float(xp.exp(layer["log_softness"]))
        assignment = DenseAssignment(layer["anchors"], spec.similarity, softness)
        fitted.append(FittedLayer(assignment, coef, intercept))
    return FittedNetwork(tuple(fitted)), history


def _initial_stack(X, Y, w, counts, spec, random_state, backend):
    """Residual layers as the identity, the last layer as the closed-form ARN (host arrays)."""
    X_host, w_host = to_numpy(X).astype(np.float64), to_numpy(w)
    # The same start as ARNRegressor's learned solvers (for "auto", the better
    # of KMeans and k-plane anchors by GCV of the closed form; a softness
    # GRADIENT_START_SOFTNESS times the auto rule for KMeans anchors).
    head_spec = replace(spec, top_k=None, learned=True)
    anchors, softness = initial_anchors(
        X_host, w_host, counts[-1], head_spec, random_state, to_numpy(Y)
    )
    check_fits_memory(counts[-1], None, X.shape[1], Y.shape[1])
    xp = backend.xp
    head = closed_form_layer(
        make_assignment(backend.to_compute(anchors), spec.similarity, softness),
        *(backend.to_compute(a) for a in (X, Y, w)),
        spec.alpha,
        xp,
    ).moved(to_numpy)
    layers = []
    n_features = X.shape[1]
    # Residual layers start as the identity: unsupervised anchors on X.
    method = "random" if isinstance(spec.anchors, str) and spec.anchors == "random" else "kmeans"
    for count in counts[:-1]:
        anchors = init_anchors(X_host, w_host, count, method, random_state)
        if spec.softness == "auto":
            softness = GRADIENT_START_SOFTNESS * auto_softness(
                X_host, anchors, spec.similarity, array_namespace(X_host), random_state
            )
        else:
            softness = float(spec.softness)
        layers.append(
            FittedLayer(
                DenseAssignment(anchors, spec.similarity, softness),
                np.zeros((count, n_features, n_features)),
                np.zeros((count, n_features)),
            )
        )
    layers.append(replace(head, stats=None))
    return FittedNetwork(tuple(layers))
