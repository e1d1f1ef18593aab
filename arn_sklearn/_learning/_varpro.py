"""Variable projection: learn anchors and softness with the regressors eliminated.

For fixed anchors ``C`` and softness ``K`` the regressors have an exact ridge
solution ``W*(C, K)`` (paper eq. 17). Variable projection minimises the
*reduced* objective

    ``J(C, K) = [sum_i w_i ||z_i(C, K)^T W* - (y_i - y_mean)||^2 + alpha ||W*||^2] / sum_i w_i``

over the anchors and the softness only. Because ``W*`` minimises the objective
in ``W``, ``dJ/dW = 0`` there and, by the envelope theorem, the gradient of
``J`` is the partial gradient with ``W`` held at ``W*``: one closed-form fit
(statistics and solve) and one forward/backward pass per evaluation, with the
existing kernels.

The search variables are the anchors and ``log K`` (or, with
``parametrisation="scaled"``, the scaled anchors ``U = K C`` and ``log K``;
see :data:`PARAMETRISATIONS` for the measured choice). For ``"dot"`` and
``"absdot"`` the logits ``K s(x, c)`` are ``s(x, U)``, so ``log K`` is
redundant and only ``U`` is searched.

Nothing here knows the estimator API.
"""

import functools
import math
import operator
import time

import numpy as np
from scipy.optimize import minimize

from .._kernels._assignment import similarity as similarity_matrix
from .._kernels._assignment import similarity_backward, soft_assignments, softmax
from .._kernels._lifting import iter_chunks, lift, lifted_size, predict_lifted
from .._kernels._moments import (
    lifted_moment_sums,
    lifted_moments,
    n_symmetric_pairs,
    pair_form_pays,
)
from .._kernels._parametrisation import _Parametrisation
from .._kernels._solve import centered_rhs
from .._model._statistics import SufficientStatistics
from .._utils._arrays import device_of
from .._utils._chunks import rows_for
from .._utils._threads import single_threaded_blas
from ._history import TrainingHistory

# Rows per chunk: a lifted block of about this many bytes, as in the closed form.
_CHUNK_BYTES = 64 * 2**20


def _chunk_rows(n_lifted):
    return rows_for(n_lifted, _CHUNK_BYTES)


def closed_form_weights(
    X, Y, w, anchors, softness, similarity, alpha, xp, *, keep=None, rows=None, pool=None
):
    """Sufficient statistics and the ridge solution for fixed anchors and softness.

    The one place where this module calls the closed-form kernels.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), float64
    Y : array of shape (n_samples, n_targets), float64, not centred
    w : array of shape (n_samples,)
    anchors : array of shape (n_anchors, n_features)
    softness : float
    similarity : str
    alpha : float
    xp : array namespace
    keep : list, optional
        Receives ``(S, A)`` (similarities and assignments) of each chunk of
        ``rows`` rows, in row order, so that the gradient pass need not
        recompute them.
    rows : int, optional
        Rows per chunk; default :func:`_chunk_rows` of the lifted size.
    pool : _WorkerPool, optional
        Spreads the chunks over its threads (numpy; one BLAS thread each),
        each accumulating its own statistics, then summed; ``rows`` is then
        lowered where needed to give each thread a chunk.

    Returns
    -------
    W : array of shape (n_anchors * (n_features + 1), n_targets)
        Lifted weights for the centred targets.
    y_mean : array of shape (n_targets,)
    stats : SufficientStatistics
    """
    n_lifted = lifted_size(anchors.shape[0], X.shape[1])
    rows = _chunk_rows(n_lifted) if rows is None else rows
    if pool is not None:
        rows = max(1, min(rows, -(-X.shape[0] // pool.n_threads)))  # a chunk per thread at least
    starts = range(0, X.shape[0], rows)
    n_groups = 1 if pool is None else max(1, min(pool.n_threads, len(starts)))
    kept = [[] for _ in range(n_groups)]
    sums = [None] * n_groups

    def run_group(group):
        def assign(chunk):
            if keep is None:
                return soft_assignments(chunk, anchors, similarity, softness, xp)
            S = similarity_matrix(chunk, anchors, similarity, xp)
            A = softmax(softness * S, xp)
            kept[group].append((S, A))
            return A

        chunks = (
            (X[start : start + rows, ...], Y[start : start + rows, ...], w[start : start + rows])
            for start in starts[group::n_groups]
        )
        if pairs:
            for X_c, Y_c, w_c in chunks:
                terms = lifted_moment_sums(X_c, Y_c, w_c, assign(X_c), xp)
                sums[group] = terms if sums[group] is None else add_terms(sums[group], terms)
            return
        # The statistics type's own accumulate: the closed form's code path.
        zeros = SufficientStatistics.zeros(n_lifted, Y.shape[1], xp, device=device_of(X))
        sums[group] = zeros.accumulate(chunks, assign, xp)

    n_anchors = anchors.shape[0]
    pairs = X.shape[0] > 0 and closed_form_in_pairs(n_anchors, X.shape[1])
    if n_groups > 1:
        pool.run([lambda group=group: run_group(group) for group in range(n_groups)])
    else:
        run_group(0)
    if pairs:
        total = functools.reduce(add_terms, sums)
        gram, zty, z_sum = lifted_moments(total, n_anchors, xp)
        stats = SufficientStatistics(
            gram, zty, z_sum, total[2], total[3], total[4], n_samples=X.shape[0]
        )
    else:
        stats = functools.reduce(operator.add, sums)
    if keep is not None:
        # Chunk j of group g is chunk g + j n_groups: back to row order.
        keep.extend(kept[index % n_groups][index // n_groups] for index in range(len(starts)))
    W, y_mean = stats.solve(alpha, xp)
    return W, y_mean, stats


def closed_form_in_pairs(n_anchors, n_features):
    """Whether the closed form sums its Gram matrix through anchor pairs and quadratic
    features (:mod:`arn_sklearn._kernels._moments`), which takes less time than the
    lifted block's for few anchors (report.py data and Friedman #1, 16 anchors:
    0.63-0.72 of the pass's time)."""
    n_pairs, n_lifted = n_symmetric_pairs(n_anchors), lifted_size(n_anchors, n_features)
    return pair_form_pays(n_pairs, n_features, n_pairs, n_lifted**2, n_lifted)


def add_terms(first, second):
    """Two chunks' (or threads') sums, term by term (None stays None)."""
    return [None if a is None else a + b for a, b in zip(first, second, strict=True)]


def reduced_objective(anchors, log_softness, X, Y, w, similarity, alpha, xp, *, gradient=True):
    """The reduced objective ``J(C, log K)`` and its envelope gradient.

    Parameters
    ----------
    anchors : array of shape (n_anchors, n_features)
    log_softness : float
    X, Y, w, similarity, alpha, xp : see :func:`closed_form_weights`.
    gradient : bool, default=True

    Returns
    -------
    loss : float
        Eq. (10) at the optimal regressors, divided by the total weight.
    grad_anchors : array of shape (n_anchors, n_features) or None
        ``dJ/dC`` at fixed ``K``.
    grad_log_softness : float or None
        ``dJ/dlog K`` at fixed ``C``.
    solution : tuple
        ``(W, y_mean, stats)`` from :func:`closed_form_weights`.
    """
    softness = math.exp(log_softness)
    kept = []
    W, y_mean, stats = closed_form_weights(
        X, Y, w, anchors, softness, similarity, alpha, xp, keep=kept
    )
    weight_sum = float(xp.sum(w))
    squared = 0.0
    grad_anchors = xp.zeros_like(anchors) if gradient else None
    grad_log_softness = 0.0
    n_anchors, n_features = anchors.shape
    n_targets = W.shape[1]
    # Per row, dJ/dA[i, k] = grad_out[i] . (W_k^T x1_i). With few targets the
    # per-anchor predictions P[i, k] = W_k^T x1_i come from one GEMM on [X, 1]
    # (n m t values); with many, from the lifted block (n m (d + 1) values).
    # Either way no weight gradient is formed: the envelope gradient needs none.
    by_anchor = n_targets <= n_features + 1
    if by_anchor:
        W_by_input = xp.reshape(
            xp.permute_dims(xp.reshape(W, (n_anchors, n_features + 1, n_targets)), (1, 0, 2)),
            (n_features + 1, n_anchors * n_targets),
        )
    # The chunks of closed_form_weights, whose assignments were kept.
    chunks = iter_chunks(X, Y, w, _chunk_rows(W.shape[0]))
    for (X_c, Y_c, w_c), (S, A) in zip(chunks, kept, strict=True):
        n_rows = X_c.shape[0]
        X1 = xp.concat([X_c, xp.ones((n_rows, 1), dtype=X_c.dtype)], axis=1)
        if by_anchor:
            P = xp.reshape(X1 @ W_by_input, (n_rows, n_anchors, n_targets))
            out = xp.sum(A[:, :, None] * P, axis=1)
        else:
            out = lift(X_c, A, xp) @ W
        residual = out - (Y_c - y_mean[None, :])
        squared += float(xp.sum(w_c * xp.sum(residual * residual, axis=1)))
        if not gradient:
            continue
        grad_out = (2.0 / weight_sum) * (w_c[:, None] * residual)
        if by_anchor:
            grad_A = xp.sum(P * grad_out[:, None, :], axis=2)
        else:
            H = xp.reshape(grad_out @ W.T, (n_rows, n_anchors, n_features + 1))
            grad_A = xp.sum(H * X1[:, None, :], axis=2)
        # Back through the softmax and the similarity.
        grad_logits = A * (grad_A - xp.sum(A * grad_A, axis=1, keepdims=True))
        g_anchors, _ = similarity_backward(X_c, anchors, S, softness * grad_logits, similarity, xp)
        grad_anchors = grad_anchors + g_anchors
        grad_log_softness += softness * float(xp.sum(grad_logits * S))
    loss = (squared + alpha * float(xp.sum(W * W))) / weight_sum
    if not gradient:
        return loss, None, None, (W, y_mean, stats)
    return loss, grad_anchors, grad_log_softness, (W, y_mean, stats)


def best_start(X, Y, w, starts, similarity, alpha, xp):
    """Index of the ``(anchors, softness)`` start whose closed form generalises best.

    Starts are ranked by generalised cross-validation of their closed form,
    ``(RSS / n) / (1 - tr(P) / n)^2`` with ``tr(P) = p - alpha tr((G + alpha
    I)^{-1})`` the effective number of parameters and ``n`` the total weight
    (Golub, Heath & Wahba 1979): the training objective alone always prefers
    the harder, more flexible start, which over-fits small data (on
    scikit-learn's diabetes it halved Deep ARN's cross-validated R^2).

    Returns
    -------
    index : int
    values : list of float
        The criterion of each start (``inf`` where it is undefined).
    """
    values = []
    for anchors, softness in starts:
        W, _, stats = closed_form_weights(
            X, Y, w, xp.asarray(anchors), softness, similarity, alpha, xp
        )
        values.append(generalised_cross_validation(stats, W, alpha, xp))
    return int(np.nanargmin(np.where(np.isfinite(values), values, np.nan))), values


def statistics_objective(stats, W, alpha, xp):
    """``sum_i w_i ||r_i||^2 + alpha ||W||^2`` of the ridge solution, from the statistics.

    At the ridge optimum it equals ``sum_i w_i ||y_i - y_mean||^2 - <W, rhs>``,
    so the trial point of a step needs no second pass over the rows.
    """
    rhs, y_mean = centered_rhs(stats, xp)
    total = float(xp.sum(stats.y_sq_sum)) - stats.weight_sum * float(xp.sum(y_mean * y_mean))
    return total - float(xp.sum(W * rhs))


def generalised_cross_validation(stats, W, alpha, xp):
    """GCV score of the ridge solution ``W`` of ``stats`` (lower is better)."""
    rhs, y_mean = centered_rhs(stats, xp)
    n = stats.weight_sum
    total = float(xp.sum(stats.y_sq_sum)) - n * float(xp.sum(y_mean * y_mean))
    # At the ridge optimum RSS = total - <W, rhs> - alpha ||W||^2.
    rss = total - float(xp.sum(W * rhs)) - alpha * float(xp.sum(W * W))
    p = stats.gram.shape[0]
    eye = xp.eye(p, dtype=stats.gram.dtype)
    inverse_trace = float(xp.sum(xp.linalg.diagonal(stats.factorize(alpha, xp).solve(eye))))
    dof = p - alpha * inverse_trace
    if not (math.isfinite(rss) and dof < n):
        return math.inf
    return (max(rss, 0.0) / n) / (1.0 - dof / n) ** 2


def predict(X, anchors, softness, similarity, W, y_mean, xp):
    """ARN output for lifted weights ``W`` (centred) plus ``y_mean``, in chunks."""
    rows = _chunk_rows(W.shape[0])
    parts = []
    for start in range(0, X.shape[0], rows):
        X_c = X[start : min(start + rows, X.shape[0]), ...]
        A = soft_assignments(X_c, anchors, similarity, softness, xp)
        parts.append(predict_lifted(X_c, A, W, xp))
    return xp.concat(parts, axis=0) + y_mean[None, :]


# The search variables: "plain" is (C, log K), "scaled" is (K C, log K). For
# euclidean anchors "plain" was far better on cells cut along low-variance
# directions (test MSE 77x below the closed form against 35x, seed 0 of
# benchmarks/learned_anchors.py): it decouples where a cell border lies (C)
# from how sharp it is (log K). For "dot"/"absdot" they are the same search
# (log K is then redundant and fixed).
PARAMETRISATIONS = ("plain", "scaled")


def fit_varpro(
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
    """Minimise the reduced objective with scipy's L-BFGS-B from ``anchors``, ``softness``.

    Parameters
    ----------
    X, Y, w : arrays in namespace ``xp`` (float64; ``Y`` 2-D, not centred)
        The rows the objective is taken over.
    anchors : array of shape (n_anchors, n_features)
    softness : float
    similarity : str
    alpha : float or callable
        The ridge penalty, or ``alpha(anchors, softness, stats) -> float``
        (``alpha="auto"``), which chooses it from the start's statistics
        (:class:`~arn_sklearn._model._statistics.SufficientStatistics`); it is
        then fixed for the run and recorded as ``history.alpha``.
    xp : array namespace
    learn_softness : bool, default=True
        Also search ``log K`` (ignored for ``"dot"``/``"absdot"``, where it is
        redundant with the scale of the anchors).
    max_iter : int, default=200
        L-BFGS iterations.
    tol : float, default=1e-4
        Relative tolerance: an iteration improves when it lowers the objective
        by more than ``tol`` times its best value (or raises the validation
        score by more than ``tol`` times the best score's magnitude).
    n_iter_no_change : int, default=10
        Stop after this many iterations without improvement.
    validation_score : callable, optional
        ``validation_score(anchors, softness, W, y_mean) -> float`` (higher is
        better). When given it selects the kept iterate and decides stopping.
    parametrisation : {"plain", "scaled"}, default="plain"
        Search ``(C, log K)`` or ``(K C, log K)``, see :data:`PARAMETRISATIONS`.
    verbose : int, default=0

    Returns
    -------
    anchors : ndarray of shape (n_anchors, n_features)
        The kept iterate's anchors (numpy).
    softness : float
    history : TrainingHistory
        ``loss_curve`` holds the objective after each iteration; the start
        competes as iteration 0, so the kept objective (or validation score)
        is never worse than the start's.
    """
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}.")
    scaled = parametrisation == "scaled"
    params = _Parametrisation(anchors.shape, softness, similarity, learn_softness, scaled)
    history = TrainingHistory()
    if callable(alpha):
        with single_threaded_blas():
            stats = closed_form_weights(X, Y, w, anchors, softness, similarity, 1.0, xp)[2]
        alpha = alpha(anchors, softness, stats)
    history.alpha = alpha
    last = {}

    def evaluate(theta):
        key = theta.tobytes()
        if key not in last and not params.representable(theta):
            # A line-search trial beyond float64 (exp(log K) or K C overflows):
            # an infinite loss makes L-BFGS-B step back, rather than an error.
            return math.inf, np.zeros_like(theta), None
        if key not in last:
            anchors_np, log_softness = params.unpack(theta)
            # One BLAS thread, as Gauss-Newton's passes: on a busy 2-core machine a
            # 40,000-row SR evaluation took 3.5-4.0 s threaded against 0.52-0.57 s.
            with single_threaded_blas():
                loss, g_anchors, g_log_softness, solution = reduced_objective(
                    xp.asarray(anchors_np), log_softness, X, Y, w, similarity, alpha, xp
                )
            last.clear()  # the callback only ever asks for the latest iterate
            last[key] = (loss, params.gradient(theta, g_anchors, g_log_softness), solution)
        return last[key]

    def fun(theta):
        loss, grad, _ = evaluate(theta)
        if not math.isfinite(loss):
            return math.inf, np.zeros_like(theta)
        return loss, grad

    def score(theta):
        anchors_np, log_softness = params.unpack(theta)
        W, y_mean, _ = evaluate(theta)[2]
        with single_threaded_blas():
            return validation_score(xp.asarray(anchors_np), math.exp(log_softness), W, y_mean)

    theta0 = params.pack(anchors, softness)
    tic = time.perf_counter()
    history.start(evaluate(theta0)[0], theta0, None if validation_score is None else score(theta0))

    def callback(intermediate_result):
        theta = np.array(intermediate_result.x, copy=True)
        loss = evaluate(theta)[0]
        history.n_iter += 1
        history.record(loss, theta, tol, None if validation_score is None else score(theta))
        if verbose:
            message = f"[ARN] lbfgs iteration {history.n_iter}: objective {loss:.6g}"
            if validation_score is not None:
                message += f", validation score {history.validation_scores[-1]:.6g}"
            print(f"{message}, {time.perf_counter() - tic:.2f} s")
        if history.stalled >= n_iter_no_change:
            history.converged = True
            raise StopIteration

    result = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        # Stopping is ours (relative tol over n_iter_no_change iterations);
        # scipy's own tests are set to exact stationarity.
        options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-12, "maxls": 30},
    )
    history.message = str(result.message)
    if history.n_iter < max_iter and not history.converged:
        # scipy stopped on its own (stationary point or a failed line search).
        history.converged = True
    anchors_np, log_softness = params.unpack(history.best)
    return anchors_np, math.exp(log_softness), history
