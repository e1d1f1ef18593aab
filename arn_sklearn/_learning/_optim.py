"""Minibatch optimisers and the epoch loop for the gradient solvers.

The parameters are a list of layers (dicts of arrays, see ``_gradients``); the
optimisers update them functionally (new arrays, no in-place writes), so a
reference to an earlier list keeps its values: that is how the best epoch is
kept. Nothing here knows the estimator API.
"""

import math
import time

from ._history import TrainingHistory

# The paper's super-resolution recipe: the rate is halved every 20 epochs.
STEP_DECAY = 0.5
STEP_EPOCHS = 20

ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPSILON = 1e-8


class SGDMomentum:
    """SGD with (heavy-ball) momentum and a step learning-rate schedule.

    ``v <- momentum v - lr_e g``, ``p <- p + v``, with
    ``lr_e = learning_rate * STEP_DECAY ** (epoch // STEP_EPOCHS)``.
    """

    def __init__(self, learning_rate, momentum):
        self.learning_rate = learning_rate
        self.momentum = momentum
        self._velocity = {}

    def rate(self, epoch):
        return self.learning_rate * STEP_DECAY ** (epoch // STEP_EPOCHS)

    def step(self, params, grads, names, epoch):
        rate = self.rate(epoch)
        updated = []
        for index, (layer, grad) in enumerate(zip(params, grads, strict=True)):
            layer = dict(layer)
            for name in names:
                key = (index, name)
                velocity = -rate * grad[name]
                if key in self._velocity:
                    velocity = velocity + self.momentum * self._velocity[key]
                self._velocity[key] = velocity
                layer[name] = layer[name] + velocity
            updated.append(layer)
        return updated


class Adam:
    """Adam (Kingma & Ba, 2015) with scikit-learn's MLP defaults."""

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate
        self._moments = {}
        self._t = 0

    def rate(self, epoch):
        return self.learning_rate

    def step(self, params, grads, names, epoch):
        self._t += 1
        correction = math.sqrt(1 - ADAM_BETA2**self._t) / (1 - ADAM_BETA1**self._t)
        rate = self.learning_rate * correction
        updated = []
        for index, (layer, grad) in enumerate(zip(params, grads, strict=True)):
            layer = dict(layer)
            for name in names:
                g = grad[name]
                first, second = self._moments.get((index, name), (0.0, 0.0))
                first = ADAM_BETA1 * first + (1 - ADAM_BETA1) * g
                second = ADAM_BETA2 * second + (1 - ADAM_BETA2) * (g * g)
                self._moments[(index, name)] = (first, second)
                layer[name] = layer[name] - rate * first / (second**0.5 + ADAM_EPSILON)
            updated.append(layer)
        return updated


def make_optimizer(solver, learning_rate, momentum):
    if solver == "sgd":
        return SGDMomentum(learning_rate, momentum)
    if solver == "adam":
        return Adam(learning_rate)
    raise ValueError(f"Unknown gradient solver {solver!r}.")


def run_epochs(
    params,
    names,
    batch_gradient,
    training_loss,
    n_samples,
    *,
    optimizer,
    batch_size,
    max_iter,
    tol,
    n_iter_no_change,
    validation_score=None,
    random_state,
    verbose=0,
):
    """Minibatch epochs from ``params``; return the best parameters seen.

    Parameters
    ----------
    params : list of dicts
        The starting point; it competes as "epoch 0", so the result is never
        worse than the start by the selection criterion.
    names : tuple of str
        The parameters of each layer that are learned.
    batch_gradient : callable
        ``batch_gradient(params, rows) -> grads`` on a numpy index array.
    training_loss : callable
        ``training_loss(params) -> float``: the objective on all training rows,
        evaluated once per epoch (it picks the best epoch and drives ``tol``).
    n_samples : int
    optimizer : SGDMomentum or Adam
    batch_size, max_iter, n_iter_no_change : see the estimators.
    tol : float
        Relative tolerance: an epoch improves when it lowers the best
        objective by more than ``tol`` times its value (or raises the best
        validation score by more than ``tol`` times its magnitude).
    validation_score : callable, optional
        ``validation_score(params) -> float`` (higher is better); when given it
        selects the best epoch and decides early stopping, as in
        scikit-learn's MLP with ``early_stopping=True``.
    random_state : numpy.random.RandomState
        Shuffles the rows every epoch.
    verbose : int

    Returns
    -------
    params : list of dicts
    history : TrainingHistory
    """
    history = TrainingHistory()
    score = None if validation_score is None else validation_score(params)
    history.start(training_loss(params), params, score)
    for epoch in range(max_iter):
        tic = time.perf_counter()
        order = random_state.permutation(n_samples)
        for start in range(0, n_samples, batch_size):
            grads = batch_gradient(params, order[start : start + batch_size])
            params = optimizer.step(params, grads, names, epoch)
        loss = training_loss(params)
        history.n_iter = epoch + 1
        if not math.isfinite(loss):
            history.loss_curve.append(loss)
            history.diverged = True
            break
        score = None if validation_score is None else validation_score(params)
        history.record(loss, params, tol, score)
        if verbose:
            message = f"Epoch {epoch + 1}: loss {loss:.6g}"
            if validation_score is not None:
                message += f", validation score {history.validation_scores[-1]:.6g}"
            rate = optimizer.rate(epoch)
            print(f"{message}, learning rate {rate:.3g}, {time.perf_counter() - tic:.2f} s")
        if history.stalled >= n_iter_no_change:
            history.converged = True
            break
    return history.best, history
