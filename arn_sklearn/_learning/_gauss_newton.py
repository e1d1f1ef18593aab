"""Levenberg-Marquardt on the variable-projection residual (Golub-Pereyra, Kaufman).

With the regressors eliminated (``W*(theta)``, the ridge solution for the
anchors and softness ``theta``, see :mod:`arn_sklearn._learning._varpro`), the training
objective is a sum of squares again,

    ``J(theta) = [sum_i w_i ||r_i(theta)||^2 + alpha ||W*||^2] / sum_i w_i``,
    ``r_i = Phi_i(theta) W* - (y_i - y_mean)``.

Gauss-Newton on the joint problem in ``(theta, W)``, with ``W`` eliminated by
its Schur complement, gives the step

    ``(H + mu D) delta = -B^T r``,  ``H = B^T B - M^T (G + alpha I)^{-1} M``,

where ``B = d(Phi W)/d theta`` at fixed ``W = W*`` (the per-row Jacobian that
the envelope gradient ``2 B^T r / sum w`` already contracts), ``G = Phi^T Phi``
the closed form's Gram matrix and ``M = Phi^T B``. ``H`` is Kaufman's
approximation of the reduced Hessian (``(I - P) B`` with ``P`` the ridge hat
matrix): the second-order terms in the residual are dropped. It typically
converges in tens of iterations where L-BFGS on the same objective needs
hundreds (``benchmarks/learned_vs_mlp.py``). ``D`` is the largest ``diag(H)`` met so
far (Moré's scaling, as in MINPACK) and ``mu`` follows Nielsen's update of the
gain ratio.

One accepted iteration is two passes over the rows: the closed form at the
trial point (similarities, assignments, Gram matrix, solve; the objective then
comes from the statistics) and, if the step is accepted, the Jacobian pass
(residuals, ``B``, ``B^T B``, ``Phi^T B`` from the kept similarities and
assignments). A rejected step costs the first pass only. With few anchors
both passes sum through anchor pairs and the inputs' quadratic features
(:mod:`arn_sklearn._kernels._moments`): the same sums, neither ``B`` nor the
lifted block formed, in about two thirds of the time on the ``report.py`` data.

Nothing here knows the estimator API: arrays and a namespace ``xp`` in,
arrays out. ``theta`` itself (a few hundred numbers) lives on the host.
"""

import functools
import math
import time

import numpy as np
from scipy import linalg

from .._kernels._assignment import _NORM_EPS
from .._kernels._lifting import lift, lifted_size
from .._kernels._moments import (
    cross_from_pairs,
    gram_from_pairs,
    inputs_transposed,
    n_symmetric_pairs,
    pair_form_pays,
    quadratic_features,
    symmetric_pair_products,
)
from .._kernels._parametrisation import _Parametrisation
from .._utils._arrays import is_numpy, to_numpy
from .._utils._threads import _WorkerPool, single_threaded_blas
from ._history import TrainingHistory
from ._varpro import add_terms, closed_form_weights, statistics_objective

# Rows per chunk of the Jacobian pass: its widest block, ``B`` of shape
# (rows, n_targets, n_theta), about this many bytes.
_JACOBIAN_CHUNK_BYTES = 32 * 2**20

# Levenberg-Marquardt damping: the first mu (relative to D), and the
# bounds past which the step is hopeless (mu large) or plain Gauss-Newton.
INITIAL_DAMPING = 1e-3
MAX_DAMPING = 1e10
MIN_DAMPING = 1e-12

# A step is accepted when it achieves at least this fraction of the predicted decrease.
ACCEPT_RATIO = 1e-4


def chunk_rows(n_anchors, n_features, n_targets, n_theta, kind="euclidean"):
    """Rows per chunk shared by the closed-form and the Jacobian passes."""
    n_lifted = lifted_size(n_anchors, n_features)
    width = n_targets * n_theta + n_lifted + 3 * n_anchors * n_targets
    if jacobian_in_pairs(n_anchors, n_features, n_targets, n_theta, kind):
        n_products = n_anchors * n_anchors * n_targets + n_symmetric_pairs(n_anchors)
        width = max(width, n_products + n_symmetric_pairs(n_features + 1))
    return max(256, _JACOBIAN_CHUNK_BYTES // (8 * width))


def jacobian_in_pairs(n_anchors, n_features, n_targets, n_theta, kind):
    """Whether the Jacobian pass sums through anchor pairs
    (:mod:`arn_sklearn._kernels._moments`).

    Its matrices then come from the products ``u_ik F_tli`` and ``sum_t F_tki
    F_tli`` against the quadratic features, where that takes less time than
    forming ``B`` and the lifted block (report.py data and Friedman #1, 16
    anchors: 0.60-0.77 of the pass's time; not the arm's 8 outputs on 4 inputs).
    """
    n_lifted = lifted_size(n_anchors, n_features)
    n_cross, n_pairs = n_anchors * n_anchors * n_targets, n_symmetric_pairs(n_anchors)
    return pair_form_pays(
        n_cross + n_pairs,
        n_features,
        # the products; those in c (2 GEMMs on [x, 1]) unless euclidean
        n_cross + n_pairs * n_targets + (0 if kind == "euclidean" else n_cross + n_anchors**2),
        n_targets * n_theta * (2 * n_lifted + n_theta),
        # B (a few passes over its t m d values) and the lifted block
        3 * n_targets * n_anchors * n_features + n_lifted,
    )


def similarity_slopes(X, anchors, S, kind, xp):
    """``(a, b)`` with ``ds(x_i, c_k)/dc_k = a_ik x_i + b_ik c_k``.

    Returns
    -------
    a, b : arrays of shape (n_samples, n_anchors)
    """
    if kind == "euclidean":  # s = -||x - c||^2
        two = xp.full_like(S, 2.0)
        return two, -two
    if kind == "dot":
        return xp.ones_like(S), xp.zeros_like(S)
    if kind == "absdot":
        return xp.sign(X @ anchors.T), xp.zeros_like(S)
    if kind == "cosine":  # s = x.c / (|x| |c|), with similarity_backward's guards
        x_norm = xp.linalg.vector_norm(X, axis=1)
        c_norm = xp.linalg.vector_norm(anchors, axis=1)
        denominator = xp.maximum(x_norm[:, None] * c_norm[None, :], xp.full_like(S, _NORM_EPS))
        c_sq = xp.maximum(c_norm * c_norm, xp.full_like(c_norm, _NORM_EPS))
        return 1.0 / denominator, -S / c_sq[None, :]
    raise ValueError(f"Unknown similarity {kind!r}.")


def output_jacobian(X, anchors, softness, S, A, P, params, kind, xp, *, sqrt_w=None, out=None):
    """``d out / d theta`` for one chunk, at fixed regressors.

    Parameters
    ----------
    X : array of shape (b, d)
    anchors : array of shape (m, d)
    softness : float
    S, A : arrays of shape (b, m)
        Similarities and assignments of the rows.
    P : array of shape (b, m, t)
        Per-anchor predictions ``W_k^T [x_i, 1]``.
    params : _Parametrisation
    kind : str
    xp : array namespace
    sqrt_w : array of shape (b,), optional
        Row weights' square roots: ``B`` is then returned with its rows scaled
        (folded into the small ``(b, m, t)`` factor, not the wide ``B``).
    out : numpy array of shape (>= b, t, n_theta), optional
        C-contiguous buffer that ``B`` is written into (its first ``b`` rows; numpy
        only): reused across chunks, it saves mapping fresh pages and a copy of
        ``B`` for the softness column.

    Returns
    -------
    out : array of shape (b, t)
        The model output (centred targets), never scaled.
    B : array of shape (b, t, n_theta)
    """
    n_rows, n_anchors, n_targets = P.shape
    n_features = X.shape[1]
    n_block = n_anchors * n_features
    # sum_k A_ik P_ikt as a batched product (no (b, m, t) temporary).
    prediction = xp.reshape(xp.permute_dims(P, (0, 2, 1)) @ A[:, :, None], (n_rows, n_targets))
    # d out / d S_ik = K A_ik (P_ik - out_i): through the softmax; the row
    # weights fold into the small (b, m) factor.
    factor = softness * A if sqrt_w is None else A * (softness * sqrt_w)[:, None]
    E = P - prediction[:, None, :]
    E *= factor[:, :, None]
    scale = math.exp(-math.log(softness)) if params.scaled else 1.0
    n_theta = n_block + int(params.learn_softness)
    # only the euclidean block is written in place (the common case)
    B = None if out is None or kind != "euclidean" else out[:n_rows, :, :n_theta]
    B_anchors = _anchor_block(
        X, anchors, S, E, kind, scale, xp, out=None if B is None else B[:, :, :n_block]
    )
    B_anchors = xp.reshape(B_anchors, (n_rows, n_targets, n_block))
    if not params.learn_softness:
        return prediction, B_anchors
    B_log = xp.sum(E * S[:, :, None], axis=1)  # (b, t): d out / d log K at fixed C
    if params.scaled:
        # C = U / K: d/dU = d/dC / K; at fixed U, d/dlog K = d/dlog K|_C - <d/dC, C>.
        B_log = B_log - (B_anchors @ xp.reshape(anchors, (n_block,))) / scale
    if B is None:
        return prediction, xp.concat([B_anchors, B_log[:, :, None]], axis=2)
    B[:, :, n_block] = B_log
    return prediction, B


def _anchor_block(X, anchors, S, E, kind, scale, xp, out=None):
    """``scale * E_ikt (a_ik x_i + b_ik c_k)`` of shape (b, t, m, d), with few temporaries.

    ``(a, b)`` are :func:`similarity_slopes`; the euclidean and the dot products
    (the common cases) are written out so that no ``(b, t, m, d)`` array is formed
    twice. ``out`` (numpy, a (b, t, m * d) view) receives the euclidean block.
    """
    Et = xp.permute_dims(E, (0, 2, 1))  # (b, t, m)
    if kind == "euclidean":  # a = 2, b = -2: 2 E (x_i - c_k)
        difference = (2.0 * scale) * (X[:, None, :] - anchors[None, :, :])  # (b, m, d)
        if out is None:
            return Et[:, :, :, None] * difference[:, None, :, :]
        block = np.reshape(out, Et.shape + (X.shape[1],), copy=False)  # a view, or raise
        # One input at a time: numpy's inner loop then runs over the anchors,
        # not over d (4 on the arm); 0.6x the time of the 4-d broadcast.
        for j in range(X.shape[1]):
            np.multiply(Et, difference[:, None, :, j], out=block[..., j])
        return out
    slope_x, slope_c = similarity_slopes(X, anchors, S, kind, xp)
    Ex = Et * (scale * xp.permute_dims(slope_x[:, :, None], (0, 2, 1)))
    block = Ex[:, :, :, None] * X[:, None, None, :]
    if kind in ("dot", "absdot"):  # b = 0
        return block
    Ec = Et * (scale * xp.permute_dims(slope_c[:, :, None], (0, 2, 1)))
    return block + Ec[:, :, :, None] * anchors[None, None]


def jacobian_pass(
    X,
    Y,
    w,
    anchors,
    softness,
    kind,
    W,
    y_mean,
    kept,
    rows,
    params,
    xp,
    *,
    matrices=True,
    pool=None,
):
    """Residuals, the envelope gradient and (``matrices``) the Gauss-Newton matrices.

    The chunks run on one BLAS thread each; with a ``pool`` (numpy) they are
    spread over its Python threads, each summing its own terms. Threads inside
    one BLAS call were measured up to 300x slower than one thread on a busy
    2-core machine (OpenBLAS workers spin waiting for a descheduled peer),
    while independent row chunks degrade gracefully.

    Returns
    -------
    squared : float
        ``sum_i w_i ||r_i||^2``.
    Btr : ndarray of shape (n_theta,)
        ``B^T r`` (weighted); the gradient of ``J`` is ``2 Btr / sum w``.
    BtB : ndarray of shape (n_theta, n_theta) or None
    M : array of shape (n_lifted, n_targets, n_theta) or None
        ``Phi^T B`` (weighted), per target.
    """
    n_anchors, n_features = anchors.shape
    n_targets = W.shape[1]
    # Per-anchor predictions laid out (rows, targets, anchors) in memory (and
    # viewed as (rows, anchors, targets)): the Jacobian's (b, t, m, d) block is
    # then formed in C order and its reshapes are free (the arm's 8 outputs:
    # a copy of the block per chunk, a fifth of the pass, before).
    W_by_input = xp.reshape(
        xp.permute_dims(xp.reshape(W, (n_anchors, n_features + 1, n_targets)), (1, 2, 0)),
        (n_features + 1, n_targets * n_anchors),
    )

    n_theta = n_anchors * n_features + int(params.learn_softness)
    pairs = jacobian_in_pairs(n_anchors, n_features, n_targets, n_theta, kind)

    def chunk_terms(start, S, A, buffer):
        stop = min(start + rows, X.shape[0])
        X_c, Y_c, w_c = X[start:stop, ...], Y[start:stop, ...], w[start:stop]
        n_rows = stop - start
        sqrt_w = xp.sqrt(w_c)
        if pairs:
            X1T = inputs_transposed(X_c, xp)
            PT = xp.reshape(xp.permute_dims(W_by_input, (1, 0)) @ X1T, (n_targets, n_anchors, -1))
            AT, ST = _rows_last(A, xp), _rows_last(S, xp)
            factors = jacobian_factors(X_c, anchors, softness, ST, AT, PT, params, kind, xp, sqrt_w)
            residual = (factors[0] - _rows_last(Y_c - y_mean[None, :], xp)) * sqrt_w[None, :]
            UT = AT * sqrt_w[None, :]
            return _pair_terms(X_c, X1T, UT, residual, factors, kind, matrices, xp)
        X1 = xp.concat([X_c, xp.ones((n_rows, 1), dtype=X_c.dtype)], axis=1)
        P = xp.permute_dims(xp.reshape(X1 @ W_by_input, (n_rows, n_targets, n_anchors)), (0, 2, 1))
        out, Bw = output_jacobian(
            X_c, anchors, softness, S, A, P, params, kind, xp, sqrt_w=sqrt_w, out=buffer[0]
        )
        residual = (out - (Y_c - y_mean[None, :])) * sqrt_w[:, None]
        n_theta = Bw.shape[2]
        B2 = xp.reshape(Bw, (n_rows * n_targets, n_theta))
        terms = [float(xp.sum(residual * residual)), B2.T @ xp.reshape(residual, (-1,))]
        if matrices:
            lifted = None if buffer[1] is None else buffer[1][:n_rows]
            Zw = lift(X_c, A * sqrt_w[:, None], xp, out=lifted)
            ZtB = Zw.T @ xp.reshape(Bw, (n_rows, n_targets * n_theta))
            terms += [B2.T @ B2, xp.reshape(ZtB, (-1, n_targets, n_theta))]
        return terms

    chunks = list(zip(range(0, X.shape[0], rows), kept, strict=True))
    n_groups = 1 if pool is None else min(pool.n_threads, len(chunks))
    sums = [None] * n_groups

    def run_group(group):
        # One B buffer per group, reused by its chunks (numpy, lifted form).
        buffer = (None, None)
        if is_numpy(X) and not pairs:
            n_rows, dtype = min(rows, X.shape[0]), np.result_type(X, anchors, W)
            buffer = (
                np.empty((n_rows, n_targets, n_theta), dtype=dtype),
                np.empty((n_rows, lifted_size(n_anchors, n_features)), dtype=dtype),
            )
        for start, (S, A) in chunks[group::n_groups]:
            terms = chunk_terms(start, S, A, buffer)
            sums[group] = terms if sums[group] is None else add_terms(sums[group], terms)

    if n_groups > 1:
        pool.run([lambda group=group: run_group(group) for group in range(n_groups)])
    else:
        with single_threaded_blas():
            run_group(0)
    total = functools.reduce(add_terms, sums)
    if pairs:
        return _pair_results(total, anchors, n_targets, params, kind, matrices, xp)
    if not matrices:
        return total[0], _host(total[1]), None, None
    return total[0], _host(total[1]), _host(total[2]), total[3]


def jacobian_factors(X, anchors, softness, ST, AT, PT, params, kind, xp, sqrt_w):
    """``B`` of :func:`output_jacobian` as factors, without forming it, rows last.

    ``B[i, t, (l, q)] = F_tli x_iq + H_tli c_lq`` for the anchors and
    ``B[i, t, log K] = G_ti``, rows scaled by ``sqrt_w``.

    Parameters
    ----------
    X : array of shape (b, d)
    anchors : array of shape (m, d)
    softness : float
    ST, AT : arrays of shape (m, b)
        Similarities and assignments, transposed.
    PT : array of shape (t, m, b)
        Per-anchor predictions ``W_k^T [x_i, 1]``.
    params : _Parametrisation
    kind : str
    xp : array namespace
    sqrt_w : array of shape (b,)

    Returns
    -------
    out : array of shape (t, b)
        The model output (centred targets), never scaled.
    F : array of shape (t, m, b)
    H : array of shape (t, m, b) or None
        None where the slope in ``c`` is zero (``"dot"``, ``"absdot"``).
    G : array of shape (t, b) or None
        None where ``log K`` is not searched.
    """
    out = xp.sum(AT[None, :, :] * PT, axis=1)
    E = (softness * AT * sqrt_w[None, :])[None, :, :] * (PT - out[:, None, :])
    scale = math.exp(-math.log(softness)) if params.scaled else 1.0
    if kind == "euclidean":  # a = 2, b = -2
        F = (2.0 * scale) * E
        H = -F
    else:
        slope_x, slope_c = similarity_slopes(X, anchors, ST.T, kind, xp)
        F = E * (scale * _rows_last(slope_x, xp))[None, :, :]
        H = None if kind in ("dot", "absdot") else E * (scale * _rows_last(slope_c, xp))[None, ...]
    if not params.learn_softness:
        return out, F, H, None
    G = xp.sum(E * ST[None, :, :], axis=1)  # d out / d log K at fixed C
    if params.scaled:
        # At fixed U = K C: minus <d out / d C, C> / K, with B . vec(C) = F (x . c) + H |c|^2.
        along = F * (anchors @ X.T)[None, :, :]
        if H is not None:
            along = along + H * xp.sum(anchors * anchors, axis=1)[None, :, None]
        G = G - xp.sum(along, axis=1) / scale
    return out, F, H, G


def _pair_terms(X, X1T, UT, residual, factors, kind, matrices, xp):
    """One chunk's sums of the Jacobian pass in pair form (see :func:`_pair_results`).

    ``UT`` (m, b) is the assignments scaled by ``sqrt_w`` (the lifted rows' factor),
    ``residual`` (t, b) the scaled residuals.
    """
    _, F, H, G = factors
    n_targets, n_anchors, n_rows = F.shape
    terms = [float(xp.sum(residual * residual)), *_contract(residual, X, F, H, xp)]
    if G is not None:
        terms.append(float(xp.sum(residual * G)))
    if not matrices:
        return terms
    Q = xp.permute_dims(quadratic_features(X1T, xp), (1, 0))
    # Products u_ik F_tli, rows (k, l, t) (for Phi^T B), and sum_t F_tki F_tli,
    # k <= l (for B^T B), against the quadratic features.
    F_by_anchor = _by_anchor(F, xp)
    cross = xp.reshape(UT[:, None, None, :] * F_by_anchor[None, ...], (-1, n_rows))
    own = symmetric_pair_products(F[0, ...] if n_targets == 1 else F, xp)
    terms += [cross @ Q, own @ Q]
    if H is not None and kind != "euclidean":
        # The terms in c: u_ik H_tli against [x, 1]; sum_t H_tki F_tli against x; sum H H.
        H_by_anchor = _by_anchor(H, xp)
        cross_c = xp.reshape(UT[:, None, None, :] * H_by_anchor[None, ...], (-1, n_rows))
        own_c = xp.reshape(xp.sum(H[:, :, None, :] * F[:, None, :, :], axis=0), (-1, n_rows))
        H2 = xp.reshape(H_by_anchor, (n_anchors, -1))
        terms += [cross_c @ xp.permute_dims(X1T, (1, 0)), own_c @ X, H2 @ H2.T]
    if G is not None:
        UG = xp.reshape(UT[:, None, :] * G[None, :, :], (-1, n_rows))
        X1 = xp.permute_dims(X1T, (1, 0))
        terms += [*_contract(G, X, F, H, xp), float(xp.sum(G * G)), UG @ X1]
    return terms


def _contract(V, X, F, H, xp):
    """``sum_i,t V_ti B[i, t, anchors]`` as ``[(m, d) in x, (m,) in c or None]``."""
    in_x = xp.sum(V[:, None, :] * F, axis=0) @ X
    in_c = None if H is None else xp.sum(V[:, None, :] * H, axis=(0, 2))
    return [in_x, in_c]


def _by_anchor(F, xp):
    """``F`` (t, m, b) as (m, t, b), C-contiguous (so that its products reshape freely)."""
    if isinstance(F, np.ndarray):
        return np.ascontiguousarray(F.transpose(1, 0, 2))
    return xp.permute_dims(F, (1, 0, 2))


def _rows_last(a, xp):
    """``a`` (rows, k) as (k, rows), C-contiguous (elementwise work then runs along rows)."""
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a.T)
    return xp.permute_dims(a, (1, 0))


def _pair_results(total, anchors, n_targets, params, kind, matrices, xp):
    """``jacobian_pass``'s results from the summed pair-form terms."""
    n_anchors, n_features = anchors.shape
    n_inputs = n_features + 1
    has_c, has_log = total[2] is not None, params.learn_softness

    def in_theta(in_x, in_c):
        # sum_l,q of (F x_q + H c_lq) contracted: the anchors' block of a B^T v.
        return xp.reshape(in_x if in_c is None else in_x + anchors * in_c[:, None], (-1,))

    squared, rest = total[0], total[3:]
    Btr = in_theta(total[1], total[2])
    if has_log:
        Btr = xp.concat([Btr, xp.asarray([rest[0]], dtype=Btr.dtype)])
        rest = rest[1:]
    if not matrices:
        return squared, _host(Btr), None, None
    T_cross, T_own, rest = rest[0], rest[1], rest[2:]
    size = n_anchors * n_features
    BtB = gram_from_pairs(T_own, n_anchors, n_inputs, xp, inputs=n_features)
    M = cross_from_pairs(T_cross, n_anchors, n_inputs, n_targets, n_features, xp)
    if has_c:
        if kind == "euclidean":
            # H = -F: the terms in c are the quadratic sums' products with the constant 1.
            L_cross = -cross_from_pairs(T_cross, n_anchors, n_inputs, n_targets, n_inputs, xp)
            L_cross = L_cross[:, :, n_features::n_inputs]  # (m D, t, m): q = the constant
            L_cross = xp.permute_dims(
                xp.reshape(L_cross, (n_anchors, n_inputs, n_targets, n_anchors)), (0, 3, 2, 1)
            )
            own = gram_from_pairs(T_own, n_anchors, n_inputs, xp)
            own = xp.reshape(own, (n_anchors, n_inputs, n_anchors, n_inputs))
            L_own = -own[:, n_features, :, :n_features]
            HtH = own[:, n_features, :, n_features]
        else:
            L_cross, L_own, HtH, rest = rest[0], rest[1], rest[2], rest[3:]
        C = anchors
        L_cross = xp.reshape(L_cross, (n_anchors, n_anchors, n_targets, n_inputs))
        L_own = xp.reshape(L_own, (n_anchors, n_anchors, n_features))
        # c_kp sum_i HF_ikl x_iq, its transpose, and c_kp c_lq sum_i HH_ikl.
        mixed = xp.reshape(C[:, :, None, None] * L_own[:, None, :, :], (size, size))
        both = C[:, :, None, None] * HtH[:, None, :, None] * C[None, None, :, :]
        BtB = BtB + mixed + mixed.T + xp.reshape(both, (size, size))
        # M[(k, p), t, (l, q)] += c_lq sum_i u_ik H_ilt x1_ip.
        in_c = xp.permute_dims(L_cross, (0, 3, 2, 1))[..., None] * C[None, None, None, :, :]
        M = M + xp.reshape(in_c, M.shape)
    if has_log:
        g_x, g_c, GtG, UGtX1 = rest
        column = in_theta(g_x, g_c)
        corner = xp.asarray([[GtG]], dtype=column.dtype)
        BtB = xp.concat(
            [
                xp.concat([BtB, column[:, None]], axis=1),
                xp.concat([column[None, :], corner], axis=1),
            ],
            axis=0,
        )
        # Phi^T G: (m, t, D) -> (m D, t).
        M_log = xp.permute_dims(xp.reshape(UGtX1, (n_anchors, n_targets, n_inputs)), (0, 2, 1))
        M_log = xp.reshape(M_log, (n_anchors * n_inputs, n_targets))
        M = xp.concat([M, M_log[:, :, None]], axis=2)
    return squared, _host(Btr), _host(BtB), M


def schur_hessian(BtB, M, factor, xp):
    """``H = B^T B - sum_t M_t^T (G + alpha I)^{-1} M_t``: Gauss-Newton with ``W`` eliminated."""
    n_lifted, n_targets, n_theta = M.shape
    M2 = xp.reshape(M, (n_lifted, n_targets * n_theta))
    GinvM = factor.solve(M2)
    # sum over the lifted rows and the targets of M * G^{-1} M, per (theta, theta) pair
    M3 = xp.reshape(xp.permute_dims(M, (1, 0, 2)), (n_targets * n_lifted, n_theta))
    G3 = xp.reshape(
        xp.permute_dims(xp.reshape(GinvM, (n_lifted, n_targets, n_theta)), (1, 0, 2)),
        (n_targets * n_lifted, n_theta),
    )
    H = BtB - _host(M3.T @ G3)
    return 0.5 * (H + H.T)


def _host(a):
    if isinstance(a, np.ndarray) or isinstance(a, float):
        return np.asarray(a, dtype=np.float64)
    return np.asarray(to_numpy(a), dtype=np.float64)


class _Point:
    """The closed form at ``theta``: solution, statistics, kept assignments, objective.

    ``alpha`` may be a callable ``alpha(anchors, softness, stats) -> float``
    (``alpha="auto"``): it then chooses the penalty from this point's own
    statistics (no second pass over the rows), kept as ``self.alpha``.
    """

    def __init__(self, theta, params, X, Y, w, kind, alpha, xp, rows, pool=None):
        self.theta = theta
        anchors_np, self.log_softness = params.unpack(theta)
        self.softness = math.exp(self.log_softness)
        self.anchors = xp.asarray(anchors_np)
        self.kept = []
        self.W, self.y_mean, self.stats = closed_form_weights(
            X,
            Y,
            w,
            self.anchors,
            self.softness,
            kind,
            1.0 if callable(alpha) else alpha,
            xp,
            keep=self.kept,
            rows=rows,
            pool=pool,
        )
        if callable(alpha):
            alpha = alpha(self.anchors, self.softness, self.stats)
            self.W, self.y_mean = self.stats.solve(alpha, xp)
        self.alpha = alpha
        self.loss = statistics_objective(self.stats, self.W, alpha, xp) / self.stats.weight_sum


def fit_gauss_newton(
    X,
    Y,
    w,
    anchors,
    softness,
    similarity,
    alpha,
    xp,
    *,
    learn_softness=True,
    max_iter=200,
    tol=1e-4,
    n_iter_no_change=10,
    validation_score=None,
    parametrisation="plain",
    verbose=0,
):
    """Minimise the reduced objective by Levenberg-Marquardt from ``anchors``, ``softness``.

    Same parameters and return values as :func:`arn_sklearn._learning._varpro.fit_varpro`;
    ``max_iter`` counts steps tried (accepted or not), each one closed-form
    pass, and ``history.loss_curve`` holds the objective after each of them.
    Stopping: ``n_iter_no_change`` steps in a row that do not improve the best
    objective (or validation score) by ``tol`` times its magnitude, a full
    Gauss-Newton step predicted to gain less than ``tol`` of the objective,
    or a step that cannot decrease the objective at any damping (a
    stationary point).
    """
    params = _Parametrisation(
        anchors.shape, softness, similarity, learn_softness, parametrisation == "scaled"
    )
    n_anchors, n_features = anchors.shape
    n_targets = Y.shape[1]
    theta = params.pack(anchors, softness)
    weight_sum = float(xp.sum(w))
    history = TrainingHistory()
    tic = time.perf_counter()

    # Every pass runs on one BLAS thread (see jacobian_pass) and spreads its
    # row chunks over the pool's threads: at least one chunk per thread.
    pool = _WorkerPool() if isinstance(X, np.ndarray) else None
    rows = chunk_rows(n_anchors, n_features, n_targets, theta.size, similarity)
    if pool is not None:
        rows = max(1, min(rows, -(-X.shape[0] // pool.n_threads)))

    def point(theta):
        with single_threaded_blas():
            return _Point(theta, params, X, Y, w, similarity, alpha, xp, rows, pool)

    def linearise(current):
        with single_threaded_blas():
            return _linearise(current)

    def _linearise(current):
        squared, Btr, BtB, M = jacobian_pass(
            X,
            Y,
            w,
            current.anchors,
            current.softness,
            similarity,
            current.W,
            current.y_mean,
            current.kept,
            rows,
            params,
            xp,
            pool=pool,
        )
        current.kept = None  # not needed any more
        # The exact objective from the residuals (the statistics' one cancels digits).
        current.loss = (squared + alpha * float(xp.sum(current.W * current.W))) / weight_sum
        return Btr, schur_hessian(BtB, M, current.stats.factorize(alpha, xp), xp)

    def score(current):
        with single_threaded_blas():
            return validation_score(current.anchors, current.softness, current.W, current.y_mean)

    try:
        current = point(theta)
        # alpha="auto": chosen at the start point, then fixed for the stage.
        alpha = history.alpha = current.alpha
        Btr, H = linearise(current)
        history.start(current.loss, current, None if validation_score is None else score(current))
        mu, nu = INITIAL_DAMPING, 2.0
        scaling = None
        while history.n_iter < max_iter:
            # Moré's scaling: the largest diag(H) met so far. Marquardt's plain
            # diag(H) lost the damping where the curvature fell, and the next
            # step overshot (report.py data: 10 of 35 steps rejected, 4 of 26 now).
            scaling = _diagonal(H) if scaling is None else np.maximum(scaling, _diagonal(H))
            if (
                mu <= INITIAL_DAMPING
                and _model_decrease(H, scaling, Btr) < tol * current.loss * weight_sum
            ):
                # The Gauss-Newton model itself predicts less than tol of the objective.
                history.converged = True
                break
            step = _damped_step(H, scaling, mu, Btr)
            if step is None:
                mu, nu = mu * nu, 2 * nu
                if mu > MAX_DAMPING:
                    break
                continue
            # Predicted decrease of J by the Gauss-Newton model.
            predicted = -(2.0 * float(Btr @ step) + float(step @ H @ step)) / weight_sum
            trial = _try_point(point, current.theta + step)
            history.n_iter += 1
            actual = current.loss - (math.inf if trial is None else trial.loss)
            ratio = actual / predicted if predicted > 0 else -1.0
            accepted = trial is not None and math.isfinite(trial.loss) and ratio > ACCEPT_RATIO
            if accepted:
                current = trial
                # (At the cap, a Jacobian pass for nothing; with a validation score,
                # linearised below, once the score says that the run goes on.)
                if history.n_iter < max_iter and validation_score is None:
                    Btr, H = linearise(current)
                # (ratio capped at 1, where the factor is already 1/3: a huge ratio overflows)
                mu *= max(1.0 / 3.0, 1.0 - (2.0 * min(ratio, 1.0) - 1.0) ** 3)
                mu, nu = max(mu, MIN_DAMPING), 2.0
            else:
                mu, nu = mu * nu, 2 * nu
            value = None
            if validation_score is not None:
                # A rejected step leaves the model as it was: its score is the last one.
                value = score(current) if accepted else _last_score(history)
            history.record(current.loss, current, tol, value)
            if verbose:
                message = f"[ARN] gauss_newton step {history.n_iter}: objective {current.loss:.6g}"
                if validation_score is not None:
                    message += f", validation score {history.validation_scores[-1]:.6g}"
                if not accepted:
                    message += " (rejected)"
                print(f"{message}, {X.shape[0]} rows, {time.perf_counter() - tic:.2f} s")
            if history.stalled >= n_iter_no_change or mu > MAX_DAMPING:
                # No progress, or no damping decreases the objective (a stationary point).
                history.converged = True
                break
            if accepted and validation_score is not None and history.n_iter < max_iter:
                # The score, not the objective, decides stopping: the step that ends
                # a run needs no Jacobian pass (its objective stays the statistics'
                # one); a run that goes on gets the exact one, from the residuals.
                Btr, H = linearise(current)
                history.loss_curve[-1] = current.loss
                if history.best is current:
                    history.best_loss = current.loss
    finally:
        if pool is not None:
            pool.close()
    history.message = "converged" if history.converged else "maximum iterations reached"
    anchors_np, log_softness = params.unpack(history.best.theta)
    return anchors_np, math.exp(log_softness), history


def _last_score(history):
    scores = history.validation_scores
    return scores[-1] if scores else history.best_validation_score


def _try_point(point, theta):
    """The closed form at ``theta``, or None where it is not finite (a step too far)."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            trial = point(theta)
    except (OverflowError, FloatingPointError, ValueError, np.linalg.LinAlgError):
        return None
    return trial if math.isfinite(trial.loss) else None


def _diagonal(H):
    """``diag(H)``, its zeros (a direction the rows do not see) raised to a tiny floor."""
    diagonal = np.diag(H)
    return np.maximum(diagonal, 1e-12 * max(float(np.max(diagonal)), 1e-300))


def _damped_step(H, diagonal, mu, Btr):
    """``-(H + mu diag) \\ B^T r``, or None when the damped matrix is not positive definite."""
    system = H + mu * np.diag(diagonal)
    try:
        with single_threaded_blas():
            factor = linalg.cho_factor(system, lower=True, check_finite=False)
            step = -linalg.cho_solve(factor, Btr, check_finite=False)
    except linalg.LinAlgError:
        return None
    return step if np.all(np.isfinite(step)) else None


def _model_decrease(H, diagonal, Btr):
    """``B^T r . H^{-1} B^T r``: the decrease that a full Gauss-Newton step predicts."""
    step = _damped_step(H, diagonal, MIN_DAMPING, Btr)
    return math.inf if step is None else -float(Btr @ step)
