"""Learned anchors for ARNRegressor (solver="sgd"/"adam"/"lbfgs"/"gauss_newton") and Deep ARN.

:func:`train_layers` and :func:`learn_varpro` turn the solver options
(:class:`TrainingOptions`) into an optimiser, a validation split and the
closures that ``_optim.run_epochs`` (minibatch solvers) or
``_varpro.fit_varpro`` (``solver="lbfgs"``) or ``_gauss_newton.fit_gauss_newton``
(``solver="gauss_newton"``) call; the numerics live in
``_gradients`` (forward/backward), ``_optim`` (updates, epoch loop) and
``_varpro`` (reduced objective, L-BFGS driver).
"""

import math
from dataclasses import dataclass, fields, replace
from numbers import Integral, Real

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval

from .._kernels._gradients import network_predict, objective, weight_penalty
from .._utils._arrays import to_numpy
from .._utils._threads import _WorkerPool, single_threaded_blas
from .._utils._warnings import warn_user
from ._optim import make_optimizer, run_epochs
from ._ridge import HeldOutRidge
from ._varpro import closed_form_weights, fit_varpro, statistics_objective
from ._varpro import predict as varpro_predict

# Minibatch solvers (ARN and Deep ARN); the variable-projection solvers (one
# layer, the regressors always the closed form) complete those that learn anchors.
GRADIENT_SOLVERS = ("sgd", "adam")
VARPRO_SOLVERS = ("lbfgs", "gauss_newton")
LEARNED_SOLVERS = (*GRADIENT_SOLVERS, *VARPRO_SOLVERS)

# Coarse-to-fine rows of a variable-projection solver: (rows, step cap,
# patience) of each stage, None for all training rows / the options' max_iter
# and n_iter_no_change. A stage runs only on more than COARSE_MIN_FACTOR times
# its rows; the last stage is all rows (the closed form on all rows follows).
# Gauss-Newton on report.py data (n = 20,000, d = 16, 16 anchors, early
# stopping, loaded machine): test MSE 0.0055 in 1.7 CPU-s against 0.0047 in
# 6.6 CPU-s on all rows; friedman and arm at the same error in about a third of
# the time (benchmarks/learned_vs_mlp.py). L-BFGS keeps all rows: its coarse
# stage stopped early (report: MSE 0.0109 in 8.8 CPU-s against 0.0067 in 49).
SCHEDULES = {"gauss_newton": ((6000, None, 5), (None, 1, None))}
COARSE_MIN_FACTOR = 2

# alpha="auto" (the default) for the closed form and the minibatch solvers;
# the variable-projection solvers choose theirs on held-out rows (_ridge.py).
DEFAULT_ALPHA = 1.0

# The paper's minibatch size; batch_size=None uses min(1000, n_samples).
DEFAULT_GRADIENT_BATCH = 1000

GRADIENT_PARAMETER_CONSTRAINTS = {
    "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
    "momentum": [Interval(Real, 0, 1, closed="both")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "learn_softness": ["boolean"],
    "warm_start": ["boolean"],
}


@dataclass(frozen=True)
class TrainingOptions:
    """The estimator parameters that a learned solver reads (plain values).

    Same names and meanings as :class:`~arn_sklearn.ARNRegressor`'s.
    """

    solver: str = "adam"
    alpha: float | str = 1.0
    similarity: str = "euclidean"
    batch_size: int | None = None
    learning_rate_init: float = 0.001
    momentum: float = 0.9
    max_iter: int = 200
    tol: float = 1e-4
    n_iter_no_change: int = 10
    early_stopping: bool = False
    validation_fraction: float = 0.1
    learn_softness: bool = True
    verbose: int = 0

    @classmethod
    def from_params(cls, params):
        """The options named in ``params`` (an estimator's ``get_params()``)."""
        return cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})


def train_layers(options, layers, X, Y, w, xp, random_state):
    """Train ``layers`` (targets ``Y`` already centred); return the best ones and the history.

    ``options`` is a :class:`TrainingOptions`; ``X``, ``Y`` (2-D) and ``w`` are
    float64 arrays in namespace ``xp``.
    """
    n_samples = X.shape[0]
    kind = options.similarity
    if options.early_stopping:
        train_rows, validation_rows = _validation_split(
            n_samples, options.validation_fraction, random_state
        )
        X_train, Y_train, w_train = _take_rows(xp, train_rows, X, Y, w)
    else:
        validation_rows = None
        X_train, Y_train, w_train = X, Y, w
    weight_sum = float(xp.sum(w_train))
    if not weight_sum > 0:
        raise ValueError("The sum of sample weights of the training rows is zero.")
    penalty = fixed_alpha(options.alpha) / weight_sum

    def batch_gradient(params, rows):
        X_b, Y_b, w_b = _take_rows(xp, rows, X_train, Y_train, w_train)
        # Zero-weight rows, or a step that overflowed: no gradient (the
        # epoch's loss is then infinite and the best earlier epoch is kept).
        if not float(xp.sum(w_b)) > 0 or not _all_finite(params, xp):
            return [{name: 0.0 * value for name, value in layer.items()} for layer in params]
        return objective(params, X_b, Y_b, w_b, penalty, kind, xp)[1]

    def training_loss(params):
        if not _all_finite(params, xp):  # diverged: reported, not raised from deep inside
            return math.inf
        residual = network_predict(X_train, params, kind, xp) - Y_train
        squared = float(xp.sum(w_train * xp.sum(residual * residual, axis=1)))
        return squared / weight_sum + penalty * float(weight_penalty(params, xp))

    validation_score = None
    if validation_rows is not None:
        X_val, Y_val, w_val = _take_rows(xp, validation_rows, X, Y, w)

        def validation_score(params):
            return weighted_r2(Y_val, network_predict(X_val, params, kind, xp), w_val, xp)

    names = ("anchors", "weights") + (("log_softness",) if options.learn_softness else ())
    batch_size = options.batch_size or min(DEFAULT_GRADIENT_BATCH, X_train.shape[0])
    optimizer = make_optimizer(options.solver, options.learning_rate_init, options.momentum)
    # A diverging rate overflows before the loss shows it; that is reported
    # once, as a ConvergenceWarning, not as a burst of RuntimeWarnings.
    with np.errstate(over="ignore", invalid="ignore"):
        layers, history = run_epochs(
            layers,
            names,
            batch_gradient,
            training_loss,
            X_train.shape[0],
            optimizer=optimizer,
            batch_size=batch_size,
            max_iter=options.max_iter,
            tol=options.tol,
            n_iter_no_change=options.n_iter_no_change,
            validation_score=validation_score,
            random_state=random_state,
            verbose=options.verbose,
        )
    warn_if_unfinished(history, options)
    return layers, history


def learn_varpro(options, anchors, softness, X, Y, w, xp, random_state, minimise=fit_varpro):
    """``solver="lbfgs"`` or ``"gauss_newton"``: anchors and softness by variable projection.

    ``X``, ``Y`` (2-D, not centred) and ``w`` are float64 arrays in ``xp``.
    Returns the kept anchors (numpy) and softness; the regressors are then
    the closed form for them, solved by the caller on all rows with the
    penalty ``history.alpha``. ``minimise`` is
    :func:`~arn_sklearn._learning._varpro.fit_varpro` (L-BFGS) or
    :func:`~arn_sklearn._learning._gauss_newton.fit_gauss_newton` (same signature).

    With ``options.alpha="auto"`` the penalty is chosen on held-out rows (the
    ``early_stopping`` split; without it, the same split held out for this
    choice only) at the start of each stage, for the stage's start anchors
    (:class:`~arn_sklearn._learning._ridge.HeldOutRidge`); a stage then
    minimises the objective of that penalty, and the final closed form keeps
    the last stage's penalty per unit of row weight.
    """
    kind = options.similarity
    auto = options.alpha == "auto"
    validation_score, ridge = None, None
    X_train, Y_train, w_train = X, Y, w
    if options.early_stopping or auto:
        split = _held_out_split(X, Y, w, options, xp, random_state)
        if split is None:
            # alpha="auto" alone, too few rows (or weight) to hold any out: the
            # closed form's penalty.
            options, auto = replace(options, alpha=DEFAULT_ALPHA), False
        else:
            (X_train, Y_train, w_train), (X_val, Y_val, w_val) = split
            if auto:
                ridge = HeldOutRidge(Y_val, w_val)
    if options.early_stopping:

        def validation_score(anchors, softness, W, y_mean):
            Y_pred = varpro_predict(X_val, anchors, softness, kind, W, y_mean, xp)
            return weighted_r2(Y_val, Y_pred, w_val, xp)

    if not float(xp.sum(w_train)) > 0:
        raise ValueError("The sum of sample weights of the training rows is zero.")
    stages = coarse_to_fine_rows(X_train.shape[0], random_state, SCHEDULES.get(options.solver, ()))
    train_weight = float(xp.sum(w_train))
    # The penalty per unit of row weight: each stage's system gets its share.
    alpha_per_weight = None if auto else options.alpha / train_weight
    start, history = (anchors, softness), None
    for stage, (rows, max_iter, patience) in enumerate(stages):
        X_s, Y_s, w_s = (
            (X_train, Y_train, w_train)
            if rows is None
            else _take_rows(xp, rows, X_train, Y_train, w_train)
        )
        stage_weight = float(xp.sum(w_s))
        if not stage_weight > 0:
            continue  # a zero-weight subsample: nothing to learn from it
        if options.verbose and len(stages) > 1:
            print(f"[ARN] {options.solver} stage {stage + 1}/{len(stages)}: {X_s.shape[0]} rows")
        anchors = xp.asarray(np.asarray(to_numpy(anchors), dtype=np.float64))
        # alpha="auto": the minimiser chooses it from its start point's statistics.
        alpha = (
            _alpha_chooser(ridge, (X_val, Y_val, w_val), options, xp)
            if ridge is not None
            else alpha_per_weight * stage_weight
        )
        anchors, softness, stage_history = minimise(
            X_s,
            Y_s,
            w_s,
            anchors,
            softness,
            kind,
            alpha,
            xp,
            learn_softness=options.learn_softness,
            max_iter=options.max_iter if max_iter is None else min(max_iter, options.max_iter),
            tol=options.tol,
            n_iter_no_change=options.n_iter_no_change
            if patience is None
            else min(patience, options.n_iter_no_change),
            validation_score=validation_score,
            verbose=options.verbose,
        )
        if ridge is not None:
            alpha_per_weight = stage_history.alpha / stage_weight
        history = stage_history if history is None else history.extended(stage_history)
    if len(stages) > 1:
        # The last stage's step cap is the schedule, not a failure to converge.
        history.converged = history.converged or not history.diverged
        anchors, softness = _start_competes(
            start,
            anchors,
            softness,
            history,
            X_train,
            Y_train,
            w_train,
            alpha_per_weight * train_weight,
            options.similarity,
            xp,
            validation_score,
        )
    history.alpha = alpha_per_weight * float(xp.sum(w))
    if history.statistics is None and stages[-1][0] is None:
        # The kept iterate's statistics on all training rows (Gauss-Newton keeps them).
        history.statistics = getattr(history.best, "stats", None)
    if history.statistics is not None and X_train is not X:
        history.remaining_rows = (X_val, Y_val, w_val)
    warn_if_unfinished(history, options)
    return anchors, softness, history


def _held_out_split(X, Y, w, options, xp, random_state):
    """``((X, Y, w) training, (X, Y, w) held out)`` of ``early_stopping`` or ``alpha="auto"``.

    With ``early_stopping`` the split's own errors stand; for ``alpha="auto"``
    alone, None where it cannot be made (under 4 rows, or no weight on a side).
    """
    try:
        train_rows, validation_rows = _validation_split(
            X.shape[0], options.validation_fraction, random_state
        )
    except ValueError:
        if options.early_stopping:
            raise
        return None
    train, held_out = (_take_rows(xp, rows, X, Y, w) for rows in (train_rows, validation_rows))
    if not options.early_stopping and not (
        float(xp.sum(train[2])) > 0 and float(xp.sum(held_out[2])) > 0
    ):
        return None
    return train, held_out


def fixed_alpha(alpha):
    """The penalty of the closed form and the minibatch solvers: ``"auto"`` is
    ``DEFAULT_ALPHA``."""
    return DEFAULT_ALPHA if alpha == "auto" else alpha


def _alpha_chooser(ridge, held_out_rows, options, xp):
    """``alpha(anchors, softness, stats)``: the held-out choice of the penalty for
    the rows of ``stats`` (a minimiser's start point), ``held_out_rows`` ``(X, Y, w)``."""

    def choose(anchors, softness, stats):
        with single_threaded_blas():
            held_out = closed_form_weights(
                *held_out_rows, anchors, softness, options.similarity, DEFAULT_ALPHA, xp
            )[2]
            alpha, score = ridge.choose(stats, held_out, xp)
        if options.verbose:
            print(
                f"[ARN] alpha {alpha:.4g} for {stats.weight_sum:.6g} weight of rows "
                f"({alpha / stats.weight_sum:.3g} per unit weight), held-out R^2 {score:.6g}"
            )
        return alpha

    return choose


def _start_competes(
    start, anchors, softness, history, X, Y, w, alpha, similarity, xp, validation_score
):
    """The start where it beats the learned anchors on all rows (the coarse
    stages chose theirs on a subsample), so that a fit never ends worse than it.

    If it does, its statistics become ``history.statistics`` (the final closed form's).
    """
    # One pass, its chunks over the pool's threads, and the objective from the
    # statistics: no second pass for the residuals.
    pool = _WorkerPool() if isinstance(X, np.ndarray) else None
    try:
        with single_threaded_blas():
            W, y_mean, stats = closed_form_weights(
                X, Y, w, xp.asarray(start[0]), start[1], similarity, alpha, xp, pool=pool
            )
            loss = statistics_objective(stats, W, alpha, xp) / stats.weight_sum
            if validation_score is None:
                better = loss < history.best_loss
            else:
                score = validation_score(start[0], start[1], W, y_mean)
                better = score > history.best_validation_score
                if better:
                    history.best_validation_score = score
    finally:
        if pool is not None:
            pool.close()
    if not better:
        return anchors, softness
    history.best_loss, history.best, history.statistics = loss, None, stats
    return np.asarray(to_numpy(start[0]), dtype=np.float64), start[1]


def coarse_to_fine_rows(n_samples, random_state, schedule):
    """The stages of a variable-projection fit: ``[(rows, max_iter, patience)]``.

    ``schedule`` is one of :data:`SCHEDULES`. ``rows`` are sorted indices of
    nested random subsets, the last stage's None (all rows); ``max_iter`` and
    ``patience`` None mean the options'. Small data (or an empty schedule)
    gets the single stage ``[(None, None, None)]``.
    """
    coarse = [stage for stage in schedule[:-1] if COARSE_MIN_FACTOR * stage[0] < n_samples]
    if not coarse:
        return [(None, None, None)]
    order = random_state.permutation(n_samples)
    stages = [(np.sort(order[:rows]), max_iter, patience) for rows, max_iter, patience in coarse]
    return [*stages, (None, *schedule[-1][1:])]


def warn_if_unfinished(history, options):
    """A ``ConvergenceWarning`` if training diverged or ran out of iterations."""
    if history.diverged:
        rate = options.learning_rate_init
        hint = (
            f"try a smaller learning_rate_init than {rate:g} (e.g. {rate / 10:g})"
            if options.solver in GRADIENT_SOLVERS
            else "scale the features and targets, or increase alpha"
        )
        warn_user(
            f"{options.solver}: the optimiser diverged (non-finite loss or parameters) "
            f"at epoch {history.n_iter}; the best parameters before it are kept. "
            f"To train further, {hint}.",
            ConvergenceWarning,
        )
    elif not history.converged:
        warn_user(
            f"{options.solver}: maximum iterations ({options.max_iter}) reached and the "
            "optimisation hasn't converged yet.",
            ConvergenceWarning,
        )


# The fitted attributes a learned solver records (the last two with early stopping).
HISTORY_ATTRIBUTES = (
    "n_iter_",
    "loss_curve_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
)


def history_attributes(history, early_stopping):
    """The fitted attributes of a training ``history``, by name."""
    attributes = {
        "n_iter_": history.n_iter,
        "loss_curve_": history.loss_curve,
        "best_loss_": history.best_loss,
    }
    if early_stopping:
        attributes["validation_scores_"] = history.validation_scores
        attributes["best_validation_score_"] = history.best_validation_score
    return attributes


def weighted_r2(Y, Y_pred, w, xp):
    """Weighted R^2 averaged over outputs, as ``RegressorMixin.score`` computes it."""
    w_sum = xp.sum(w)
    mean = xp.sum(w[:, None] * Y, axis=0) / w_sum
    residual = xp.sum(w[:, None] * (Y - Y_pred) ** 2, axis=0)
    total = xp.sum(w[:, None] * (Y - mean[None, :]) ** 2, axis=0)
    ones = xp.ones_like(total)
    # sklearn's convention for a constant output: 1 if predicted exactly, else 0.
    constant = xp.where(residual == 0, ones, xp.zeros_like(total))
    scores = xp.where(total > 0, 1.0 - residual / xp.where(total > 0, total, ones), constant)
    return float(xp.mean(scores))


def _all_finite(params, xp):
    """True if every array of every layer is finite (a diverging step makes NaN/inf)."""
    return all(
        bool(xp.all(xp.isfinite(xp.asarray(value)))) for layer in params for value in layer.values()
    )


def _validation_split(n_samples, fraction, random_state):
    # At least 2 validation rows (an R^2 needs them), so that small data still fits.
    n_validation = max(2, math.ceil(fraction * n_samples))
    if n_samples - n_validation < 2:
        raise ValueError(
            f"early_stopping needs at least 2 training and 2 validation rows; "
            f"validation_fraction={fraction} of n_samples={n_samples} gives {n_validation}."
        )
    train, validation = train_test_split(
        np.arange(n_samples), test_size=n_validation, random_state=random_state
    )
    return np.sort(train), np.sort(validation)


def _take_rows(xp, rows, *arrays):
    device = getattr(arrays[0], "device", None)
    index = xp.asarray(rows, device=device) if device is not None else xp.asarray(rows)
    return tuple(xp.take(a, index, axis=0) for a in arrays)
