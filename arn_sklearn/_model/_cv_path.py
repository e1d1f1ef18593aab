"""Cross-validation of alpha from sufficient statistics: the ridge path and held-out errors.

With the anchors and the softness fixed, everything a fold needs is a sum over
its rows (:class:`~arn_sklearn._model._statistics.SufficientStatistics`). One
pass accumulates each test fold separately; the training system of fold ``j``
is the sum of the other folds. One eigendecomposition ``G = Q diag(lam) Q^T``
per fold then gives the ridge solution for every alpha at the price of a matrix
product, and the held-out squared error expands into the fold's own statistics,
so no second pass over the data is needed (see :func:`fold_squared_errors`).
"""

import numpy as np
from array_api_compat import array_namespace

from .._kernels._solve import centered_rhs
from .._utils._arrays import to_numpy

# Eigenvalues of the regularised system below this fraction of the largest are
# treated as zero (minimum-norm solution), as the Cholesky path falls back to lstsq.
_EIG_RCOND = 1e-13


def ridge_path(stats, alphas, xp=None):
    """Ridge solutions of one system for many penalties.

    Dense statistics: one eigendecomposition ``G = Q diag(lam) Q^T`` serves every
    alpha. Block-sparse (top-k) statistics: one sparse solve per alpha.

    Parameters
    ----------
    stats : SufficientStatistics or BlockSparseStatistics
        Training statistics.
    alphas : ndarray of shape (n_alphas,)
    xp : array namespace, default=None
        The statistics' namespace (numpy when None).

    Returns
    -------
    W : array of shape (n_alphas, p, n_targets)
        ``(G + alpha I)^{-1} (Z^T W (Y - y_mean))`` for each alpha.
    y_mean : array of shape (n_targets,)
    """
    xp = array_namespace(stats.zty) if xp is None else xp
    if not hasattr(stats, "gram"):
        solutions = [stats.solve(float(alpha), xp) for alpha in alphas]
        return xp.stack([W for W, _ in solutions]), solutions[0][1]
    rhs, y_mean = centered_rhs(stats, xp)
    lam, Q = xp.linalg.eigh(stats.gram)
    lam = xp.clip(lam, 0.0, None)  # the Gram matrix is PSD; clip rounding noise
    Qt_rhs = Q.T @ rhs
    alphas = xp.asarray(alphas, dtype=lam.dtype, device=getattr(lam, "device", None))
    denom = lam[None, :] + alphas[:, None]
    keep = denom > _EIG_RCOND * xp.max(denom, axis=1, keepdims=True)
    inv = xp.where(keep, 1.0 / xp.where(keep, denom, 1.0), 0.0)
    # W_a = Q diag(inv_a) Q^T rhs, for every alpha a at once.
    return Q[None, :, :] @ (inv[:, :, None] * Qt_rhs[None, :, :]), y_mean


def fold_squared_errors(W, y_mean, fold, y_center, yc_sum, yc_sq):
    """Weighted held-out squared error per alpha and target, from statistics only.

    For predictions ``W^T z + y_mean`` the error of the fold's rows expands as
    ``W^T G W - 2 W^T (zty - z_sum c^T) + 2 d W^T z_sum + sum w (y - c)^2 - 2 d
    sum w (y - c) + n d^2`` with ``d = y_mean - c``. Centring ``y`` on the global
    mean ``c`` keeps the cancellation small when ``y`` has a large offset.

    Parameters
    ----------
    W : ndarray of shape (n_alphas, p, n_targets)
    y_mean : ndarray of shape (n_targets,)
    fold : SufficientStatistics
        Statistics of the held-out rows.
    y_center : ndarray of shape (n_targets,)
    yc_sum, yc_sq : ndarray of shape (n_targets,)
        ``sum w (y - c)`` and ``sum w (y - c)^2`` over the held-out rows.

    Returns
    -------
    sse : ndarray of shape (n_alphas, n_targets)
    """
    xp = array_namespace(W)
    n_alphas, p, n_targets = W.shape
    # G W for every alpha in one product, in the statistics' namespace (GPU or host).
    GW = fold.gram_matmul(xp.reshape(xp.permute_dims(W, (1, 0, 2)), (p, n_alphas * n_targets)))
    GW = np.moveaxis(np.reshape(to_numpy(GW), (p, n_alphas, n_targets)), 1, 0)
    W, y_mean = to_numpy(W), to_numpy(y_mean)
    zty, z_sum = to_numpy(fold.zty), to_numpy(fold.z_sum)
    d = y_mean - y_center
    b = zty - z_sum[:, None] * y_center[None, :]
    quad = np.einsum("apt,apt->at", W, GW)
    lin = np.einsum("apt,pt->at", W, b) - d[None, :] * np.einsum("apt,p->at", W, z_sum)
    const = yc_sq - 2 * d * yc_sum + fold.weight_sum * d**2
    return np.maximum(quad - 2 * lin + const[None, :], 0.0)


def power_of_two_scale(Y):
    """Per-target powers of two with ``max |y| / scale`` in [1, 2) (1 for zero targets)."""
    peak = np.max(np.abs(Y), axis=0) if Y.shape[0] else np.zeros(Y.shape[1])
    # 2^(e-1), not 2^e: the latter overflows for |y| near the float64 maximum.
    return np.where(peak > 0, np.exp2(np.frexp(peak)[1] - 1.0), 1.0)


def scores_of(sse, weight_sum, yc_sum, yc_sq, scoring, y_scale=1.0):
    """Fold scores per alpha: R^2 (averaged over targets) or negative MSE.

    The statistics are of ``y / y_scale``; R^2 does not depend on the scale,
    the MSE is returned in the units of ``y`` (infinite past 1e308).
    """
    if scoring == "neg_mean_squared_error":
        with np.errstate(over="ignore", invalid="ignore"):
            sse = np.where(sse > 0, sse * np.square(y_scale), 0.0)
        return -sse.mean(axis=1) / weight_sum
    sst = yc_sq - yc_sum**2 / weight_sum
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - sse / sst[None, :]
    # As sklearn's r2_score: a constant target scores 1 if predicted exactly, else 0.
    r2 = np.where(sst[None, :] > 0, r2, np.where(sse == 0, 1.0, 0.0))
    return r2.mean(axis=1)
