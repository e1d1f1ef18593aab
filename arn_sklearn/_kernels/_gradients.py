"""Analytic gradients of ARN layers and of residual stacks of them (paper section 3.2).

A layer maps ``X`` to ``lift(X, A) @ W`` with ``A = softmax(K s(X, C))``: the
lifted weights ``W`` (shape ``(m (d + 1), t)``, biases folded in, see
:func:`~arn_sklearn._kernels._lifting.pack_weights`) are the per-anchor regressors of
eq. (20)-(22), ``C`` the anchors and ``K = exp(log_softness)`` the softness
(learned in log space so that it stays positive). Forward and backward are a
few matrix products on the lifted block, in any array namespace ``xp``; these
functions know nothing of the estimator API.

A layer is a dict with keys ``"anchors"``, ``"weights"`` and ``"log_softness"``
(a 0-d array); a network is a list of layers, every layer but the last one
wrapped in a residual shortcut ``h + f(h)`` (Deep ARN).
"""

from .._utils._chunks import rows_for
from ._assignment import similarity, similarity_backward, softmax
from ._lifting import lift, pack_weights

LAYER_PARAMETERS = ("anchors", "weights", "log_softness")

# network_predict evaluates rows in chunks whose widest lifted block is about
# this many bytes, so evaluating all rows keeps memory flat, as in the closed form.
_PREDICT_CHUNK_BYTES = 64 * 2**20


def make_layer(anchors, coef, intercept, softness, xp):
    """A layer dict from per-anchor regressors (``coef`` (m, t, d), ``intercept`` (m, t))."""
    return {
        "anchors": xp.astype(anchors, xp.float64),
        "weights": pack_weights(coef, intercept, xp),
        "log_softness": xp.log(xp.asarray(float(softness), dtype=xp.float64)),
    }


def layer_forward(X, layer, kind, xp):
    """Output of one ARN layer and what its backward pass needs.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    layer : dict
        ``anchors`` (m, d), ``weights`` (m (d + 1), t), ``log_softness`` (0-d).
    kind : {"euclidean", "dot", "absdot", "cosine"}
    xp : array namespace

    Returns
    -------
    out : array of shape (n_samples, t)
    cache : tuple
        Intermediate arrays for :func:`layer_backward`.
    """
    anchors, weights = layer["anchors"], layer["weights"]
    softness = xp.exp(layer["log_softness"])
    S = similarity(X, anchors, kind, xp)
    A = softmax(softness * S, xp)
    Z = lift(X, A, xp)
    return Z @ weights, (X, anchors, weights, softness, S, A, Z)


def layer_backward(cache, grad_out, kind, xp, *, input_grad=False):
    """Gradients of a scalar loss through one layer, given ``dL/d out``.

    Parameters
    ----------
    cache : tuple
        From :func:`layer_forward`.
    grad_out : array of shape (n_samples, t)
    kind : {"euclidean", "dot", "absdot", "cosine"}
    xp : array namespace
    input_grad : bool, default=False
        Also return ``dL/dX`` (needed below a layer, not for the first one).

    Returns
    -------
    grads : dict
        ``dL/d anchors``, ``dL/d weights`` and ``dL/d log_softness``.
    grad_X : array of shape (n_samples, n_features) or None
    """
    X, anchors, weights, softness, S, A, Z = cache
    n_samples, n_features = X.shape
    n_anchors = anchors.shape[0]
    grad_weights = Z.T @ grad_out
    # H[i, k, :] = W_k~ grad_out[i]: the gradient reaching the lifted block.
    H = xp.reshape(grad_out @ weights.T, (n_samples, n_anchors, n_features + 1))
    X1 = xp.concat([X, xp.ones((n_samples, 1), dtype=X.dtype)], axis=1)
    # dL/dA[i, k] = grad_out[i] . (W_k x_i + b_k), then back through the softmax.
    grad_A = xp.sum(H * X1[:, None, :], axis=2)
    grad_logits = A * (grad_A - xp.sum(A * grad_A, axis=1, keepdims=True))
    grad_S = softness * grad_logits
    grad_anchors, grad_X_similarity = similarity_backward(
        X, anchors, S, grad_S, kind, xp, input_grad=input_grad
    )
    grads = {
        "anchors": grad_anchors,
        "weights": grad_weights,
        "log_softness": softness * xp.sum(grad_logits * S),
    }
    if not input_grad:
        return grads, None
    grad_X = xp.sum(A[:, :, None] * H[:, :, :n_features], axis=1) + grad_X_similarity
    return grads, grad_X


def network_forward(X, layers, kind, xp):
    """Output of a residual stack: ``h <- h + f_l(h)`` for all but the last layer.

    Returns
    -------
    out : array of shape (n_samples, t)
    caches : list of tuples, one per layer
    """
    caches = []
    h = X
    for layer in layers[:-1]:
        out, cache = layer_forward(h, layer, kind, xp)
        caches.append(cache)
        h = h + out
    out, cache = layer_forward(h, layers[-1], kind, xp)
    caches.append(cache)
    return out, caches


def network_backward(caches, grad_out, kind, xp, *, input_grad=False):
    """Gradients of every layer of :func:`network_forward` (and of its input).

    Returns
    -------
    grads : list of dicts, one per layer
    grad_X : array or None
    """
    n_layers = len(caches)
    grads = [None] * n_layers
    grads[-1], grad_h = layer_backward(
        caches[-1], grad_out, kind, xp, input_grad=input_grad or n_layers > 1
    )
    for index in range(n_layers - 2, -1, -1):
        # h_{l+1} = h_l + f_l(h_l): the shortcut passes grad_h through unchanged.
        grads[index], grad_through = layer_backward(
            caches[index], grad_h, kind, xp, input_grad=input_grad or index > 0
        )
        if grad_through is not None:
            grad_h = grad_h + grad_through
    return grads, grad_h if input_grad else None


def objective(layers, X, Y, w, penalty, kind, xp, *, gradient=True):
    """Weighted squared loss with a ridge penalty on every layer's weights.

    ``J = sum_i w_i ||f(x_i) - y_i||^2 / sum_i w_i + penalty * sum_l ||W_l||^2``.
    On all training rows with ``penalty = alpha / sum_i w_i`` this is the
    paper's eq. (10) divided by the total weight (same minimiser); on a
    minibatch it is the estimate that stochastic solvers descend.

    Returns
    -------
    loss : 0-d array
        Left on the device: converting it would synchronise every minibatch.
    grads : list of dicts or None
    """
    out, caches = network_forward(X, layers, kind, xp)
    residual = out - Y
    weight_sum = xp.sum(w)
    loss = xp.sum(w * xp.sum(residual * residual, axis=1)) / weight_sum
    loss = loss + penalty * weight_penalty(layers, xp)
    if not gradient:
        return loss, None
    grad_out = (2.0 / weight_sum) * (w[:, None] * residual)
    grads, _ = network_backward(caches, grad_out, kind, xp)
    for layer, grad in zip(layers, grads, strict=True):
        grad["weights"] = grad["weights"] + (2.0 * penalty) * layer["weights"]
    return loss, grads


def weight_penalty(layers, xp):
    """``sum_l ||W_l||^2`` over the lifted weights (biases included, as in eq. 10)."""
    return sum(xp.sum(layer["weights"] * layer["weights"]) for layer in layers)


def network_predict(X, layers, kind, xp):
    """Output of :func:`network_forward` on all rows, evaluated in bounded chunks."""
    widest = max(layer["weights"].shape[0] for layer in layers)
    rows = rows_for(widest, _PREDICT_CHUNK_BYTES)
    n_samples = X.shape[0]
    parts = [
        network_forward(X[start : min(start + rows, n_samples), ...], layers, kind, xp)[0]
        for start in range(0, n_samples, rows)
    ]
    return xp.concat(parts, axis=0)
