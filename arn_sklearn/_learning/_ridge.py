"""The ridge penalty of a learned fit, chosen on held-out rows (``alpha="auto"``).

For fixed anchors and softness every penalty's ridge solution comes from one
eigendecomposition of the training Gram matrix, and its held-out error from
the held-out rows' own sufficient statistics (:mod:`~arn_sklearn._model._cv_path`,
as ``ARNRegressorCV`` scores a fold): a choice costs one closed-form pass over
the held-out rows (done by the caller) and a ``p x p`` eigendecomposition.

Nothing here knows the estimator API.
"""

import numpy as np

from .._model._cv_path import fold_squared_errors, ridge_path, scores_of
from .._utils._arrays import to_numpy

# Candidate penalties, relative to the mean eigenvalue of the training Gram
# matrix (tr(G) / p), so that the grid follows the rows' weight and the lifted
# features' scale: 21 values, half a decade apart, from 1e-10 to 1. On the
# learned benchmarks (standardised data, 16 anchors) the choices spanned 1e-10
# (the near-noiseless robot arm) to 1e-2 (Friedman #1) of that scale.
RELATIVE_ALPHAS = np.logspace(-10.0, 0.0, 21)


class HeldOutRidge:
    """Chooses the penalty with the lowest held-out squared error.

    Parameters
    ----------
    Y : array of shape (n_held_out, n_targets)
        The held-out targets (any namespace).
    w : array of shape (n_held_out,)
        Their weights.

    Examples
    --------
    >>> import numpy as np
    >>> from array_api_compat import numpy as xp
    >>> from arn_sklearn._learning._varpro import closed_form_weights
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(400, 2))
    >>> Y = np.sin(2 * X[:, :1]) + 0.01 * rng.normal(size=(400, 1))
    >>> anchors, w = X[:4].copy(), np.ones(400)
    >>> train, held = (closed_form_weights(
    ...     X[rows], Y[rows], w[rows], anchors, 1.0, "euclidean", 1.0, xp
    ... )[2] for rows in (slice(0, 300), slice(300, None)))
    >>> alpha, score = HeldOutRidge(Y[300:], w[300:]).choose(train, held, xp)
    >>> float(alpha / (np.trace(train.gram) / train.gram.shape[0])) in RELATIVE_ALPHAS
    True
    """

    def __init__(self, Y, w):
        Y, w = (np.asarray(to_numpy(a), dtype=np.float64) for a in (Y, w))
        self.weight_sum = float(w.sum())
        if not self.weight_sum > 0:
            raise ValueError("The sum of sample weights of the held-out rows is zero.")
        # Held-out moments about the rows' own mean, once (cv_path's centring).
        self.y_center = w @ Y / self.weight_sum
        centred = Y - self.y_center
        self.yc_sum = w @ centred
        self.yc_sq = w @ (centred * centred)

    def choose(self, stats, held_out, xp):
        """The penalty for ``stats``' rows with the lowest held-out error, and its R^2.

        Parameters
        ----------
        stats : SufficientStatistics
            The training rows' statistics.
        held_out : SufficientStatistics
            The held-out rows' statistics, for the same anchors and softness.
        xp : array namespace

        Returns
        -------
        alpha : float
            One of ``RELATIVE_ALPHAS`` times ``tr(G) / p``; ties go to the larger.
        score : float
            Held-out R^2 (averaged over targets) of that penalty's solution.
        """
        scale = float(xp.sum(xp.linalg.diagonal(stats.gram))) / stats.gram.shape[0]
        alphas = max(scale, np.finfo(np.float64).tiny) * RELATIVE_ALPHAS
        W, y_mean = ridge_path(stats, alphas, xp)
        sse = fold_squared_errors(W, y_mean, held_out, self.y_center, self.yc_sum, self.yc_sq)
        errors = sse.sum(axis=1)
        best = len(alphas) - 1 - int(np.argmin(errors[::-1]))
        scores = scores_of(sse[best : best + 1], self.weight_sum, self.yc_sum, self.yc_sq, "r2")
        return float(alphas[best]), float(scores[0])
