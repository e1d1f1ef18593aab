"""What an iterative fit reports back, and the one keep-best / early-stopping rule.

Every learned solver (minibatch epochs, L-BFGS and Gauss-Newton on the reduced
objective) records its iterates here: the best iterate by the training
objective, or by the validation score with ``early_stopping`` (as scikit-learn's
MLP), is kept, and ``stalled`` counts the iterations since the last improvement
by more than ``tol`` (relative: the objective's scale is the targets' squared
scale). Nothing here knows the estimator API.
"""

import math
from dataclasses import dataclass, field


@dataclass
class TrainingHistory:
    """The curve, the best iterate and how the run ended.

    ``alpha`` is the ridge penalty of a variable-projection run (of
    :func:`~arn_sklearn._learning._training.learn_varpro`: its final closed
    form's, for all its rows). ``statistics`` and ``remaining_rows``, where
    set, give that closed form without a pass over the rows the run saw: the
    kept iterate's statistics on its training rows, and the ``(X, Y, w)`` rows
    (held out) still to add, or None.

    Examples
    --------
    >>> history = TrainingHistory()
    >>> history.start(loss=1.0, params="p0")
    >>> history.record(loss=0.5, params="p1", tol=1e-4)
    True
    >>> history.record(loss=0.49999, params="p2", tol=1e-4)
    False
    >>> history.best, history.best_loss, history.stalled
    ('p2', 0.49999, 1)
    """

    n_iter: int = 0
    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    best_loss: float = math.inf
    best_validation_score: float = -math.inf
    diverged: bool = False
    converged: bool = False
    message: str = ""
    stalled: int = 0
    best: object = field(default=None, repr=False)
    alpha: float | None = None
    statistics: object = field(default=None, repr=False)
    remaining_rows: object = field(default=None, repr=False)

    def start(self, loss, params, score=None):
        """The starting point competes as iteration 0: a fit never ends worse than it."""
        self.best_loss, self.best = loss, params
        if score is not None:
            self.best_validation_score = score

    def record(self, loss, params, tol, score=None):
        """Add an iterate; keep it if it is the best; return whether it improved by ``tol``.

        ``score`` (higher is better) selects the best iterate when given;
        otherwise the training objective ``loss`` does.
        """
        self.loss_curve.append(loss)
        if score is None:
            improved = loss < self.best_loss - tol * abs(self.best_loss)
            if loss < self.best_loss:
                self.best_loss, self.best = loss, params
        else:
            self.validation_scores.append(score)
            best = self.best_validation_score
            improved = score > best + tol * abs(best)
            if score > best:
                self.best_validation_score, self.best = score, params
                self.best_loss = loss
        self.stalled = 0 if improved else self.stalled + 1
        return improved

    def extended(self, later):
        """This run followed by ``later`` (a run that started from this one's best).

        The curves are concatenated and the iterations summed; the best
        iterate, its scores, its penalty and how the run ended are ``later``'s.
        """
        return TrainingHistory(
            n_iter=self.n_iter + later.n_iter,
            loss_curve=self.loss_curve + later.loss_curve,
            validation_scores=self.validation_scores + later.validation_scores,
            best_loss=later.best_loss,
            best_validation_score=later.best_validation_score,
            diverged=later.diverged,
            converged=later.converged,
            message=later.message,
            stalled=later.stalled,
            best=later.best,
            alpha=later.alpha,
        )
