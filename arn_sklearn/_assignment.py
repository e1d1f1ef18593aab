"""Similarity, softmax and soft assignments of samples to anchors.

These kernels know nothing of the estimator API: they take arrays and an array
namespace ``xp`` (numpy, CuPy, array-api-strict, ...) and return arrays.
"""

SIMILARITIES = ("euclidean", "dot", "absdot", "cosine")

# Guards the cosine similarity against zero-norm rows or anchors.
_NORM_EPS = 1e-12


def similarity(X, anchors, kind, xp):
    """Similarity ``s(x, c)`` of every row of ``X`` to every anchor.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    anchors : array of shape (n_anchors, n_features)
    kind : {"euclidean", "dot", "absdot", "cosine"}
        ``"euclidean"`` is ``-||x - c||^2``, ``"dot"`` is ``x.c``,
        ``"absdot"`` is ``|x.c|`` and ``"cosine"`` is ``x.c / (||x|| ||c||)``.
    xp : array namespace

    Returns
    -------
    S : array of shape (n_samples, n_anchors)
    """
    dot = X @ anchors.T
    if kind == "dot":
        return dot
    if kind == "absdot":
        return xp.abs(dot)
    if kind == "euclidean":
        x_sq = xp.sum(X * X, axis=1)[:, None]
        c_sq = xp.sum(anchors * anchors, axis=1)[None, :]
        # The expansion can round to a tiny positive number for x == c.
        return xp.minimum(2.0 * dot - x_sq - c_sq, xp.zeros_like(dot))
    if kind == "cosine":
        x_norm = xp.linalg.vector_norm(X, axis=1)[:, None]
        c_norm = xp.linalg.vector_norm(anchors, axis=1)[None, :]
        return dot / xp.maximum(x_norm * c_norm, xp.full_like(dot, _NORM_EPS))
    raise ValueError(f"Unknown similarity {kind!r}; expected one of {SIMILARITIES}.")


def softmax(S, xp):
    """Row-wise softmax, stable for any magnitude of ``S`` (max-subtracted)."""
    E = xp.exp(S - xp.max(S, axis=1, keepdims=True))
    return E / xp.sum(E, axis=1, keepdims=True)


def soft_assignments(X, anchors, kind, softness, xp):
    """Soft assignments ``alpha(x) = softmax(K s(x, c_1..m))`` (paper eq. 4).

    Returns
    -------
    A : array of shape (n_samples, n_anchors)
        Non-negative rows summing to one.
    """
    return softmax(softness * similarity(X, anchors, kind, xp), xp)


def top_two_gap(X, anchors, kind, xp):
    """Per-sample gap between the largest and second largest similarity.

    The data-driven softness is derived from the median of this gap: it is the
    quantity that decides how far the softmax is from a hard assignment.
    """
    S = xp.sort(similarity(X, anchors, kind, xp), axis=1, descending=True)
    return S[:, 0] - S[:, 1]
