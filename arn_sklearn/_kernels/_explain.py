"""Exact local explanations of ARN layers: the local linear model and the Jacobian.

An ARN layer predicts ``f(x) = sum_k pi_k(x) (W_k x + b_k)``, so every
prediction is exactly ``A(x) x + a(x)`` with ``A(x) = sum_k pi_k(x) W_k`` and
``a(x) = sum_k pi_k(x) b_k``. Its derivative adds the assignment term,

    ``df/dx = A(x) + sum_k (W_k x + b_k) d pi_k / dx^T``,

and, with ``pi = softmax(K s)``, ``d pi_k / dx = K pi_k (ds_k/dx -
sum_j pi_j ds_j/dx)``. The sum over ``k`` is then a vector-Jacobian product
through the similarity with ``dL/ds_k = K pi_k (f_k - f)``, one per output,
which :func:`~arn_sklearn._kernels._assignment.similarity_backward` already computes.
With top-k assignments the same formulas hold with ``pi`` zero outside the
kept anchors (the softmax is renormalised over them, so its derivative only
involves them), away from the points where the kept set changes.

These kernels take arrays and an array namespace ``xp``; they know nothing of
the estimator API.
"""

from .._utils._chunks import rows_for
from ._assignment import similarity, similarity_backward, softmax
from ._topk import densify, sparse_top_k, top_k_assignments

# Rows per chunk: the per-anchor outputs are (rows, m, t) and the local
# coefficients (rows, t, d); chunks keep them near this many bytes.
_CHUNK_BYTES = 32 * 2**20


def layer_assignments(X, anchors, kind, softness, top_k, xp):
    """Soft assignments and similarities of one layer, dense or top-k.

    Returns
    -------
    A : array of shape (n_samples, n_anchors)
        Assignments, zero outside the ``top_k`` kept anchors when given.
    S : array of shape (n_samples, n_anchors)
        Similarities ``s(x, c_k)``.
    """
    S = similarity(X, anchors, kind, xp)
    m = anchors.shape[0]
    if sparse_top_k(m, top_k) is None:
        return softmax(softness * S, xp), S
    # The same selection as the fitted model's predict (ties broken alike).
    idx, vals = top_k_assignments(X, anchors, kind, softness, top_k, xp)
    return densify(idx, vals, m, xp), S


def local_linear(A, coef, intercept, xp):
    """The local linear model ``(A(x), a(x))`` of each row, from its assignments.

    Parameters
    ----------
    A : array of shape (n_samples, n_anchors)
        Soft assignments (zero outside the kept anchors for top-k).
    coef : array of shape (n_anchors, n_targets, n_features)
    intercept : array of shape (n_anchors, n_targets)
    xp : array namespace

    Returns
    -------
    local_coef : array of shape (n_samples, n_targets, n_features)
        ``sum_k A[:, k] coef[k]``.
    local_intercept : array of shape (n_samples, n_targets)
        ``sum_k A[:, k] intercept[k]``.

    Examples
    --------
    >>> import numpy as np
    >>> from array_api_compat import array_namespace
    >>> A = np.array([[0.25, 0.75]])
    >>> coef = np.array([[[1.0, 0.0]], [[0.0, 2.0]]])
    >>> c, b = local_linear(A, coef, np.array([[1.0], [-1.0]]), array_namespace(A))
    >>> c.tolist(), b.tolist()
    ([[[0.25, 1.5]]], [[-0.5]])
    """
    m, t, d = coef.shape
    local_coef = xp.reshape(A @ xp.reshape(coef, (m, t * d)), (A.shape[0], t, d))
    return local_coef, A @ intercept


def anchor_outputs(X, coef, intercept, xp):
    """Each anchor's regressor at each row, ``W_k x + b_k``: shape (n, m, t)."""
    m, t, d = coef.shape
    F = X @ xp.reshape(coef, (m * t, d)).T
    return xp.reshape(F, (X.shape[0], m, t)) + intercept[None, :, :]


def layer_jacobian(X, anchors, coef, intercept, kind, softness, top_k, xp):
    """Exact Jacobian ``df/dx`` of one ARN layer at each row of ``X``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    anchors : array of shape (n_anchors, n_features)
    coef : array of shape (n_anchors, n_targets, n_features)
    intercept : array of shape (n_anchors, n_targets)
    kind : {"euclidean", "dot", "absdot", "cosine"}
    softness : float
    top_k : int or None
        Keep only the ``top_k`` largest assignments (renormalised).
    xp : array namespace

    Returns
    -------
    J : array of shape (n_samples, n_targets, n_features)
        ``A(x) + sum_k (W_k x + b_k) grad pi_k(x)^T``.
    """
    A, S = layer_assignments(X, anchors, kind, softness, top_k, xp)
    J, _ = local_linear(A, coef, intercept, xp)
    F = anchor_outputs(X, coef, intercept, xp)
    f = xp.sum(A[:, :, None] * F, axis=1)
    parts = []
    for t in range(coef.shape[1]):
        # d pi_k/dx = K pi_k (ds_k/dx - sum_j pi_j ds_j/dx), contracted
        # with f_k: a vector-Jacobian product with dL/ds_k = K pi_k (f_k - f).
        grad_S = softness * A * (F[:, :, t] - f[:, t : t + 1])
        _, grad_X = similarity_backward(X, anchors, S, grad_S, kind, xp, input_grad=True)
        parts.append(grad_X[:, None, :])
    return J + xp.concat(parts, axis=1)


def chunk_rows(n_anchors, n_targets, n_features):
    """Rows per chunk so that the (rows, m, t) and (rows, t, d) temporaries stay bounded."""
    widest = max(n_anchors * max(n_targets, 1), n_targets * n_features, n_anchors * n_features)
    return rows_for(widest, _CHUNK_BYTES, minimum=64)


def network_jacobian(X, layers, kind, top_k, xp):
    """Jacobian of a residual stack ``h <- h + f_l(h)`` followed by a last layer.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    layers : list of dict
        ``anchors`` (m, d), ``coef`` (m, t, d), ``intercept`` (m, t) and
        ``softness`` (float); every layer but the last maps ``R^d -> R^d``.
    kind : {"euclidean", "dot", "absdot", "cosine"}
    top_k : int or None
    xp : array namespace

    Returns
    -------
    J : array of shape (n_samples, n_targets, n_features)
        The chain rule ``J_L(h_{L-1}) prod_l (I + J_l(h_l))``.
    """
    h = X
    n, d = X.shape
    eye = xp.eye(d, dtype=X.dtype)
    M = None  # dh/dx, None for the identity
    for layer in layers[:-1]:
        J = layer_jacobian(h, *_layer_args(layer), kind, layer["softness"], top_k, xp)
        step = eye[None, :, :] + J
        M = step if M is None else step @ M
        h = h + layer_output(h, layer, kind, top_k, xp)
    J = layer_jacobian(h, *_layer_args(layers[-1]), kind, layers[-1]["softness"], top_k, xp)
    return J if M is None else J @ M


def network_local_linear(X, layers, kind, top_k, xp):
    """The composed affine map ``f(x) = M(x) x + m(x)`` of a residual stack.

    Each layer is exactly affine at its input, ``f_l(h) = A_l(h) h + a_l(h)``,
    so ``h_{l+1} = (I + A_l) h_l + a_l`` and the composition is affine in ``x``
    with coefficients frozen at the sample's own activations. It reproduces
    the prediction exactly; unlike the Jacobian it ignores how the
    assignments move with ``x``.

    Returns
    -------
    local_coef : array of shape (n_samples, n_targets, n_features)
    local_intercept : array of shape (n_samples, n_targets)
    """
    h = X
    d = X.shape[1]
    eye = xp.eye(d, dtype=X.dtype)
    M, offset = None, None
    for layer in layers:
        A, _ = layer_assignments(h, layer["anchors"], kind, layer["softness"], top_k, xp)
        c, b = local_linear(A, layer["coef"], layer["intercept"], xp)
        last = layer is layers[-1]
        step = c if last else eye[None, :, :] + c
        if M is None:
            M, offset = step, b
        else:
            offset = xp.sum(step * offset[:, None, :], axis=2) + b
            M = step @ M
        if not last:
            h = h + xp.sum(c * h[:, None, :], axis=2) + b
    return M, offset


def layer_output(X, layer, kind, top_k, xp):
    """One layer's output ``sum_k pi_k (W_k x + b_k)``: shape (n, t)."""
    A, _ = layer_assignments(X, layer["anchors"], kind, layer["softness"], top_k, xp)
    c, b = local_linear(A, layer["coef"], layer["intercept"], xp)
    return xp.sum(c * X[:, None, :], axis=2) + b


def _layer_args(layer):
    return layer["anchors"], layer["coef"], layer["intercept"]
