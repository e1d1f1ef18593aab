"""Second moments of lifted rows through pairs of anchors and pairs of inputs.

A lifted row is ``kron(a_i, x1_i)`` with ``x1_i = [x_i, 1]`` (D = d + 1 values),
so an entry of its Gram matrix factors into an anchor pair and an input pair:

    ``sum_i (a_ik x1_ip) (a_il x1_iq) = sum_i (a_ik a_il) (x1_ip x1_iq)``.

Both pairs are symmetric, so one GEMM of the ``m (m + 1) / 2`` anchor-pair
products against the ``D (D + 1) / 2`` quadratic features gives every entry:
about ``(m + 1)(D + 1) / (2 m D)`` of the flops of ``Z^T Z`` on the lifted
block (report.py data, 16 anchors, d 16: 0.56), and no lifted block is formed.
The Gauss-Newton matrices of learned anchors factor the same way
(:mod:`arn_sklearn._learning._gauss_newton`); the functions here build the
features and gather the full matrices back from the compact sums.

Arrays and a namespace ``xp`` in, arrays out; the index maps are small host
arrays, cached per shape.
"""

import functools

import numpy as np

# The pair form is used while its per-row width (anchor-pair products plus
# quadratic features) stays under this many values: its GEMM's output grows
# with the square of the anchors and slows down (64 anchors on Friedman #1's
# 10 inputs: 1.05-1.08x the lifted form's time, where the flops say 0.7x;
# 16 anchors: 0.66-0.72x on report.py data and Friedman #1, 6,000 rows).
MAX_PAIR_WIDTH = 1024

# A value written by an elementwise numpy operation costs about the time of this
# many GEMM flops (one BLAS thread): the pair form writes its products, and for
# many targets and few inputs (the arm: 8 outputs, 4 inputs) that outweighs its
# smaller GEMM (Jacobian pass 1.02-1.34x the lifted form's time, 6,000 rows).
ELEMENTWISE_FLOPS = 48


@functools.lru_cache(maxsize=64)
def symmetric_pairs(n):
    """``(first, second, position)``: the pairs ``first <= second`` of ``range(n)``
    and the ``(n, n)`` map of ``(i, j)`` (either order) to the pair's position."""
    first, second = np.triu_indices(n)
    position = np.empty((n, n), dtype=np.intp)
    position[first, second] = np.arange(first.size)
    position[second, first] = np.arange(first.size)
    return first, second, position


def n_symmetric_pairs(n):
    """The number of pairs ``i <= j`` of ``range(n)``."""
    return n * (n + 1) // 2


def quadratic_features(X1T, xp):
    """``x1_ip x1_iq`` for every pair ``p <= q``, rows last: shape (D (D + 1) / 2, b).

    ``X1T`` is ``[X, 1]`` transposed, (D, b): with the rows on the last axis
    every product is a contiguous vector operation.
    """
    return symmetric_pair_products(X1T, xp)


def symmetric_pair_products(UT, xp):
    """``u_ik u_il`` for every pair ``k <= l``, rows last: shape (m (m + 1) / 2, b).

    ``UT`` has shape (m, b), or (s, m, b) to sum the products over its first axis.
    """
    n = UT.shape[-2]
    if isinstance(UT, np.ndarray):
        out = np.empty((n_symmetric_pairs(n), UT.shape[-1]), dtype=UT.dtype)
        position = 0
        for k in range(n):
            block = out[position : position + n - k]
            if UT.ndim == 2:
                np.multiply(UT[k], UT[k:], out=block)
            else:
                np.sum(UT[:, k : k + 1] * UT[:, k:], axis=0, out=block)
            position += n - k
        return out
    blocks = [UT[..., k : k + 1, :] * UT[..., k:, :] for k in range(n)]
    blocks = [xp.sum(b, axis=0) if UT.ndim == 3 else b for b in blocks]
    return xp.concat(blocks, axis=0)


def pair_form_pays(n_products, n_features, pair_values, lifted_flops, lifted_values):
    """Whether the pair form beats the lifted block for these sizes, per row.

    The pair form's GEMM takes ``n_products`` anchor-pair products (``m (m + 1)
    / 2`` for a Gram matrix; more where several matrices share it) against
    the ``D (D + 1) / 2`` quadratic features, and writes ``pair_values``
    elementwise; the lifted form takes ``lifted_flops`` in its GEMMs (``(m
    D)^2`` for a Gram matrix's symmetric rank-k update) and writes
    ``lifted_values``. Each value written counts :data:`ELEMENTWISE_FLOPS`.
    """
    n_quadratic = n_symmetric_pairs(n_features + 1)
    if n_products + n_quadratic > MAX_PAIR_WIDTH:
        return False
    pair = 2 * n_products * n_quadratic + ELEMENTWISE_FLOPS * (pair_values + n_quadratic)
    return pair < lifted_flops + ELEMENTWISE_FLOPS * lifted_values


@functools.lru_cache(maxsize=64)
def _gram_index(n_anchors, n_inputs, rows, columns):
    """Flat positions in a (pairs, quadratic) sum of a Gram block's entries.

    Entry ``((k, p), (l, q))`` for ``p < rows``, ``q < columns`` of the inputs.
    """
    _, _, anchor_pair = symmetric_pairs(n_anchors)
    _, _, input_pair = symmetric_pairs(n_inputs)
    n_quadratic = n_symmetric_pairs(n_inputs)
    index = (
        anchor_pair[:, None, :, None] * n_quadratic + input_pair[:rows, :columns][None, :, None, :]
    )
    return index.reshape(n_anchors * rows, n_anchors * columns)


def gram_from_pairs(T, n_anchors, n_inputs, xp, *, inputs=None):
    """The Gram matrix ``G[(k, p), (l, q)] = T[pair(k, l), pair(p, q)]``.

    Parameters
    ----------
    T : array of shape (m (m + 1) / 2, D (D + 1) / 2)
        Symmetric anchor-pair products against the quadratic features, summed over rows.
    n_anchors, n_inputs : int
        ``m`` and ``D``.
    xp : array namespace
    inputs : int, optional
        Keep the first ``inputs`` of the ``D`` inputs per anchor (default all).

    Returns
    -------
    G : array of shape (m inputs, m inputs)
    """
    inputs = n_inputs if inputs is None else inputs
    index = _gram_index(n_anchors, n_inputs, inputs, inputs)
    return _gather(T, index, xp)


@functools.lru_cache(maxsize=64)
def _cross_index(n_anchors, n_inputs, n_targets, columns):
    """Flat positions of ``M[(k, p), t, (l, q)]`` in a (m m t, quadratic) sum."""
    _, _, input_pair = symmetric_pairs(n_inputs)
    n_quadratic = n_symmetric_pairs(n_inputs)
    k = np.arange(n_anchors)[:, None, None, None, None]
    t = np.arange(n_targets)[None, None, :, None, None]
    m_ = np.arange(n_anchors)[None, None, None, :, None]
    row = (k * n_anchors + m_) * n_targets + t
    index = row * n_quadratic + input_pair[:, :columns][None, :, None, None, :]
    return index.reshape(n_anchors * n_inputs, n_targets, n_anchors * columns)


def cross_from_pairs(T, n_anchors, n_inputs, n_targets, columns, xp):
    """``M[(k, p), t, (l, q)] = T[(k, l, t), pair(p, q)]`` for ``q < columns``.

    Parameters
    ----------
    T : array of shape (m m t, D (D + 1) / 2)
        Products ``u_ik v_ilt`` (row ``(k m + l) t + t``) against the quadratic
        features, summed over rows.

    Returns
    -------
    M : array of shape (m D, t, m columns)
    """
    index = _cross_index(n_anchors, n_inputs, n_targets, columns)
    return _gather(T, index, xp)


def lifted_moment_sums(X, Y, w, A, xp):
    """One chunk's compact sums of the closed form's statistics (no lifted block).

    Parameters
    ----------
    X : array of shape (b, d)
    Y : array of shape (b, t)
    w : array of shape (b,)
    A : array of shape (b, m)
        Soft assignments.
    xp : array namespace

    Returns
    -------
    list
        ``[T, ZtY1, y_sum, y_sq_sum, weight_sum]``: ``T`` the weighted
        anchor-pair products against the quadratic features (see
        :func:`gram_from_pairs`), ``ZtY1`` of shape (m, D, t + 1) the sums
        ``w_i a_ik x1_ip [y_i, 1]``, then the target sums and the total weight.
        Chunks add term by term; :func:`lifted_moments` makes the statistics.
    """
    n_rows = X.shape[0]
    X1T = inputs_transposed(X, xp)
    UT = xp.permute_dims(A * xp.sqrt(w)[:, None], (1, 0))
    T = symmetric_pair_products(UT, xp) @ xp.permute_dims(quadratic_features(X1T, xp), (1, 0))
    Y1T = xp.concat([xp.permute_dims(Y, (1, 0)), xp.ones((1, n_rows), dtype=Y.dtype)], axis=0)
    inputs_targets = xp.reshape(X1T[:, None, :] * Y1T[None, :, :], (-1, n_rows))
    ZtY1 = (A * w[:, None]).T @ xp.permute_dims(inputs_targets, (1, 0))
    Yw = Y * w[:, None]
    return [
        T,
        xp.reshape(ZtY1, (A.shape[1], X1T.shape[0], -1)),
        xp.sum(Yw, axis=0),
        xp.sum(Yw * Y, axis=0),
        float(xp.sum(w)),
    ]


def inputs_transposed(X, xp):
    """``[X, 1]`` transposed, C-contiguous: shape (d + 1, b)."""
    ones = xp.ones((1, X.shape[0]), dtype=X.dtype)
    return xp.concat([xp.permute_dims(X, (1, 0)), ones], axis=0)


def lifted_moments(sums, n_anchors, xp):
    """``(gram, zty, z_sum)`` of the lifted rows from :func:`lifted_moment_sums`' sums."""
    T, ZtY1 = sums[0], sums[1]
    n_inputs = ZtY1.shape[1]
    gram = gram_from_pairs(T, n_anchors, n_inputs, xp)
    n_lifted = n_anchors * n_inputs
    zty = xp.reshape(ZtY1[:, :, :-1], (n_lifted, ZtY1.shape[2] - 1))
    return gram, zty, xp.reshape(ZtY1[:, :, -1], (n_lifted,))


def _gather(T, index, xp):
    flat = xp.reshape(T, (-1,))
    if isinstance(T, np.ndarray):
        return flat[index]
    return xp.reshape(xp.take(flat, _on_device(index.reshape(-1), T, xp)), index.shape)


def _on_device(index, like, xp):
    device = getattr(like, "device", None)
    return xp.asarray(index) if device is None else xp.asarray(index, device=device)
