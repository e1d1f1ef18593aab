"""Lifted features ``x~ = pi(x) (x) [x, 1]``, the packed weights, and row chunks.

With fixed anchors, ARN is ridge regression on the lifted features (paper eq. 17);
the statistics they are accumulated into live in ``_model/_statistics.py``.
"""

import numpy as np


def lift(X, A, xp, out=None):
    """Lifted features: row ``i`` is ``kron(A[i], [X[i], 1])``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    A : array of shape (n_samples, n_anchors)
        Soft assignments.
    xp : array namespace
    out : numpy array of shape (n_samples, n_anchors * (n_features + 1)), optional
        C-contiguous buffer to write into (numpy only). Reusing one buffer
        across chunks avoids mapping fresh pages for every chunk, which costs
        as much as the Gram update itself for large lifted blocks.

    Returns
    -------
    Z : array of shape (n_samples, n_anchors * (n_features + 1))
        Column ``k * (n_features + 1) + j`` is ``A[:, k] * [X, 1][:, j]``; the
        constant column folds each anchor's bias into its weights.
    """
    n_samples, n_features = X.shape
    ones = xp.ones((n_samples, 1), dtype=X.dtype)
    X1 = xp.concat([X, ones], axis=1)
    if out is not None:
        out3 = out.reshape(n_samples, A.shape[1], n_features + 1)
        np.einsum("ik,ij->ikj", A, X1, out=out3)
        return out
    Z = A[:, :, None] * X1[:, None, :]
    return xp.reshape(Z, (n_samples, A.shape[1] * (n_features + 1)))


def lifted_size(n_anchors, n_features):
    """Number of columns of the lifted design, ``m (d + 1)``."""
    return n_anchors * (n_features + 1)


def iter_chunks(X, Y, w, batch_size):
    """Yield ``(X, Y, w)`` slices of at most ``batch_size`` rows."""
    n_samples = X.shape[0]
    for start in range(0, n_samples, batch_size):
        stop = min(start + batch_size, n_samples)
        yield X[start:stop, ...], Y[start:stop, ...], w[start:stop]


def unpack_weights(W, y_mean, n_anchors, n_features, xp):
    """Per-anchor regressors from the lifted solution.

    Parameters
    ----------
    W : array of shape (n_anchors * (n_features + 1), n_targets)
    y_mean : array of shape (n_targets,)
        Target offset; since the assignments sum to one it is added to every
        anchor's intercept.

    Returns
    -------
    coef : array of shape (n_anchors, n_targets, n_features)
    intercept : array of shape (n_anchors, n_targets)
    """
    W3 = xp.reshape(W, (n_anchors, n_features + 1, W.shape[1]))
    coef = xp.permute_dims(W3[:, :n_features, :], (0, 2, 1))
    intercept = W3[:, n_features, :] + y_mean[None, :]
    return coef, intercept


def pack_weights(coef, intercept, xp):
    """Inverse of :func:`unpack_weights` with the offset kept in the intercept.

    Returns
    -------
    W : array of shape (n_anchors * (n_features + 1), n_targets)
    """
    n_anchors, n_targets, n_features = coef.shape
    W3 = xp.concat([xp.permute_dims(coef, (0, 2, 1)), intercept[:, None, :]], axis=1)
    return xp.reshape(W3, (n_anchors * (n_features + 1), n_targets))


def predict_lifted(X, A, W, xp):
    """ARN output ``sum_k A[:, k] (W_k x + b_k)`` as one GEMM on the lifted rows."""
    return lift(X, A, xp) @ W
