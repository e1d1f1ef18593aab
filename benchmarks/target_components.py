"""Learned anchors for many outputs: learn on the leading target components, solve on all.

Used by ``learned_sr.py`` and the ``sr`` task of ``learned_vs_mlp.py`` (x3
super-resolution: 81 residual pixels per patch). The reduced objective of
variable projection is invariant to a rotation of the targets, and an L-BFGS
evaluation's gradient pass costs ``n m (d + 1) t`` for ``t`` targets; on the
leading 16 of the 81 principal directions (54% of the weighted variance) the
anchors learned in 12 steps on 40,000 patches gave about the whole-image gain
of 26 steps on all 81 (+0.057 against +0.059 dB), at about half the time per
evaluation (0.77 s against 1.45 s, both at load 6-8 on 2 cores). The closed
form of the learned anchors then fits all targets.
"""

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from arn_sklearn import ARNRegressor


def leading_target_components(Y, sample_weight, n_components):
    """Orthonormal ``(n_targets, n_components)`` leading principal directions of
    the weighted, centred targets ``Y`` (largest variance first).
    """
    Y = np.asarray(Y, dtype=np.float64)
    w = np.asarray(sample_weight, dtype=np.float64)
    centred = Y - w @ Y / w.sum()
    values, vectors = np.linalg.eigh((centred * w[:, None]).T @ centred)
    return vectors[:, np.argsort(values)[::-1][:n_components]]


class TargetComponentsARN(RegressorMixin, BaseEstimator):
    """ARN whose anchors are learned on the leading components of the targets.

    ``solver`` (no early stopping, ``max_iter`` steps: the cap is the
    schedule) learns the anchors and softness on ``Y V`` (``V`` the leading
    ``n_components`` principal directions of ``Y`` under ``sample_weight``);
    the closed form of those anchors on all of ``Y`` is the model.

    Parameters
    ----------
    n_anchors : int, default=16
    n_components : int, default=16
    max_iter : int, default=12
    solver : {"lbfgs", "gauss_newton"}, default="lbfgs"
    alpha : float, default=0.1
    similarity : str, default="absdot"
    anchors : str, default="kmeans"
    random_state : int or None, default=None

    Attributes
    ----------
    components_ : ndarray of shape (n_targets, n_components)
    closed_form_ : ARNRegressor
        The closed form on all targets (the predictions).
    softness_ : float
    n_iter_ : int
        Steps of the learned solver.
    """

    def __init__(
        self,
        n_anchors=16,
        n_components=16,
        max_iter=12,
        solver="lbfgs",
        alpha=0.1,
        similarity="absdot",
        anchors="kmeans",
        random_state=None,
    ):
        self.n_anchors = n_anchors
        self.n_components = n_components
        self.max_iter = max_iter
        self.solver = solver
        self.alpha = alpha
        self.similarity = similarity
        self.anchors = anchors
        self.random_state = random_state

    def fit(self, X, Y, sample_weight=None):
        """Learn the anchors on the leading target components, then solve on all targets."""
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim != 2 or Y.shape[1] <= self.n_components:
            raise ValueError(
                f"TargetComponentsARN needs 2-D targets with more than n_components="
                f"{self.n_components} columns; got shape {Y.shape}."
            )
        w = np.ones(Y.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
        common = dict(similarity=self.similarity, alpha=self.alpha)
        self.components_ = leading_target_components(Y, w, self.n_components)
        learner = ARNRegressor(
            self.n_anchors,
            solver=self.solver,
            max_iter=self.max_iter,
            early_stopping=False,
            anchors=self.anchors,
            random_state=self.random_state,
            **common,
        ).fit(X, Y @ self.components_, sample_weight=w)
        self.closed_form_ = ARNRegressor(
            self.n_anchors, anchors=learner.anchors_, softness=learner.softness_, **common
        ).fit(X, Y, sample_weight=w)
        self.softness_ = learner.softness_
        self.n_iter_ = learner.n_iter_
        return self

    def predict(self, X):
        """The closed form's predictions."""
        check_is_fitted(self)
        return self.closed_form_.predict(X)
