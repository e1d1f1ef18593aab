"""The search variables of learned anchors and softness, and their chain rule.

Shared by variable projection (``_learning/_varpro.py``) and the k-plane
softness fit (``_anchors/_kplane.py``).
"""

import math

import numpy as np

# Similarities whose logits K s(x, c) depend on K c only.
SCALE_FREE_SIMILARITIES = ("dot", "absdot")

# A representable iterate: exp(log K) stays below the float64 maximum (exp(709.8)).
_MAX_LOG_SOFTNESS = 700.0


class _Parametrisation:
    """``theta = [vec(C), log K]`` or ``[vec(K C), log K]``; ``log K`` dropped when
    it is fixed or redundant."""

    def __init__(self, anchors_shape, softness, similarity, learn_softness, scaled=False):
        self.shape = anchors_shape
        self.fixed_log_softness = math.log(softness)
        self.learn_softness = learn_softness and similarity not in SCALE_FREE_SIMILARITIES
        self.scaled = scaled or similarity in SCALE_FREE_SIMILARITIES

    def pack(self, anchors, softness):
        theta = np.asarray(anchors, dtype=np.float64).ravel()
        if self.scaled:
            theta = softness * theta
        if self.learn_softness:
            theta = np.append(theta, math.log(softness))
        return theta

    def representable(self, theta):
        """False where ``theta`` has non-finite entries or ``K = exp(log K)`` overflows."""
        if not np.all(np.isfinite(theta)):
            return False
        size = self.shape[0] * self.shape[1]
        log_softness = float(theta[size]) if self.learn_softness else self.fixed_log_softness
        return log_softness <= _MAX_LOG_SOFTNESS

    def unpack(self, theta):
        """Anchors (numpy) and log-softness of ``theta``."""
        size = self.shape[0] * self.shape[1]
        log_softness = float(theta[size]) if self.learn_softness else self.fixed_log_softness
        anchors = theta[:size].reshape(self.shape)
        if self.scaled:
            anchors = anchors / math.exp(log_softness)
        return anchors, log_softness

    def gradient(self, theta, grad_anchors, grad_log_softness):
        """Chain rule from ``(dJ/dC, dJ/dlog K)`` to ``dJ/dtheta``.

        Scaled, ``C = U / K``: ``dJ/dU = dJ/dC / K`` and, at fixed ``U``,
        ``dJ/dlog K = dJ/dlog K|_C - <dJ/dC, C>``.
        """
        anchors, log_softness = self.unpack(theta)
        grad_anchors = np.asarray(grad_anchors, dtype=np.float64)
        if not self.scaled:
            grad = grad_anchors.ravel()
            return np.append(grad, grad_log_softness) if self.learn_softness else grad
        grad = (grad_anchors / math.exp(log_softness)).ravel()
        if self.learn_softness:
            grad = np.append(grad, grad_log_softness - float(np.sum(grad_anchors * anchors)))
        return grad
