"""Predictive uncertainty of the closed-form ARN from its sufficient statistics.

With the anchors fixed, ARN is ridge regression on the lifted features ``z``,
and ridge regression is the posterior mean of a Gaussian linear model with
noise variance ``sigma^2`` and prior ``W ~ N(0, sigma^2 / alpha I)``. The
posterior covariance of ``W`` is ``sigma^2 (G + alpha I)^{-1}`` with
``G = sum_i w_i z_i z_i^T``, so the predictive standard deviation of a new
target is

    ``y_std(x) = sigma sqrt(1 + z(x)^T (G + alpha I)^{-1} z(x))``

(noise plus the uncertainty of the regressors; the anchors and the softness
are taken as fixed, and the target mean's own uncertainty, ``sigma^2 / n``,
is neglected). ``sigma^2`` is estimated per output from the weighted residual
sum of squares, which the statistics give without a second pass over the data:

    ``RSS = sum_i w_i (y_i - m)^2 - 2 W^T r + W^T G W``, ``r = sum_i w_i z_i (y_i - m)``,

divided by the residual degrees of freedom ``n - tr(P)``: ``n`` is the sum of
the sample weights (read as frequency weights) and ``P`` the linear map from
``y`` to the fitted values, mean included, whose trace is

    ``tr(P) = 1 + tr((G + alpha I)^{-1} G) - s^T (G + alpha I)^{-1} s / n``

with ``s = sum_i w_i z_i`` (the second term is the effective number of
parameters of the ridge fit, the last one the weighted centring of ``y``).

The kernels only use the statistics' interface (``zty``, ``z_sum``, ``y_sum``,
``y_sq_sum``, ``weight_sum``, ``gram_matmul`` and ``factorize(alpha, xp)``),
so they serve the dense and the block-sparse statistics alike, and statistics
accumulated by ``partial_fit`` or on Dask blocks.
"""

from .._kernels._solve import centered_rhs

# Columns of the identity solved at once for the trace: a (p, block) panel.
_TRACE_BLOCK = 512


def effective_parameters(stats, factor, xp):
    """``tr(P)``: the trace of the fitted-value map, mean included.

    Costs ``p / block`` solves and Gram products on ``(p, block)`` panels,
    ``O(p^3)`` in all, with memory bounded by the panel.
    """
    zty = stats.zty
    p = zty.shape[0]
    device = getattr(zty, "device", None)
    kw = {"dtype": zty.dtype} if device is None else {"dtype": zty.dtype, "device": device}
    eye = xp.eye(p, **kw)
    trace = 0.0
    for start in range(0, p, _TRACE_BLOCK):
        stop = min(start + _TRACE_BLOCK, p)
        panel = factor.solve(stats.gram_matmul(eye[:, start:stop]))
        trace += float(xp.sum(xp.linalg.diagonal(panel[start:stop, :])))
    s = stats.z_sum[:, None]
    centring = float(xp.sum(s * factor.solve(s))) / stats.weight_sum
    return 1.0 + trace - centring


def noise_variance(stats, factor, xp):
    """Per-output noise variance ``sigma^2`` from the statistics and the factor.

    Parameters
    ----------
    stats : statistics with the interface of
        :class:`~arn_sklearn._model._statistics.SufficientStatistics`
    factor : object with ``solve(B)``
        ``stats.factorize(alpha, xp)``, the factorisation of ``G + alpha I``.
    xp : array namespace

    Returns
    -------
    sigma2 : array of shape (n_targets,)
    dof : float
        Residual degrees of freedom ``n - tr(P)``.

    Raises
    ------
    ValueError
        If the fit has no residual degrees of freedom left (as many effective
        parameters as samples), where ``sigma`` cannot be estimated.
    """
    rhs, y_mean = centered_rhs(stats, xp)
    W = factor.solve(rhs)
    centred_sq = stats.y_sq_sum - stats.weight_sum * y_mean * y_mean
    rss = centred_sq - 2.0 * xp.sum(W * rhs, axis=0) + xp.sum(W * stats.gram_matmul(W), axis=0)
    # Rounding can leave a tiny negative sum for an interpolating fit.
    rss = xp.maximum(rss, xp.zeros_like(rss))
    dof = stats.weight_sum - effective_parameters(stats, factor, xp)
    if not dof > 0:
        raise ValueError(
            f"The fit has {stats.weight_sum:g} samples (sum of weights) and "
            f"{stats.weight_sum - dof:.4g} effective parameters: no residual degrees of "
            "freedom are left to estimate the noise variance for return_std=True. "
            "Increase alpha, use fewer anchors, or fit on more rows."
        )
    return rss / dof, dof


def leverage(Z, factor, xp):
    """``z_i^T (G + alpha I)^{-1} z_i`` for each lifted row ``z_i`` of ``Z`` (b, p)."""
    Zt = Z.T
    return xp.sum(Zt * factor.solve(Zt), axis=0)


def predictive_std(lev, sigma2, xp):
    """``sigma sqrt(1 + leverage)``: shape (b, n_targets)."""
    return xp.sqrt(sigma2[None, :] * (1.0 + lev[:, None]))
