"""The coarse-to-fine row schedule of the variable-projection solvers.

Against independent references: the full-data fit it must reach on a
zero-residual problem, the training objective written out independently, and
the start it must never end above.
"""

import math
import warnings

import numpy as np
import pytest
from _synthetic import cells
from array_api_compat import array_namespace
from sklearn.exceptions import ConvergenceWarning
from test_varpro import weighted_objective

from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._assignment import SIMILARITIES
from arn_sklearn._learning import _gauss_newton, _training
from arn_sklearn._learning._gauss_newton import fit_gauss_newton
from arn_sklearn._learning._history import TrainingHistory
from arn_sklearn._learning._training import (
    VARPRO_SOLVERS,
    TrainingOptions,
    coarse_to_fine_rows,
    learn_varpro,
)
from arn_sklearn._learning._varpro import reduced_objective

xp = array_namespace(np.empty(0))
rng = np.random.RandomState

# A schedule small enough for test data: 150 rows to convergence, then 3 steps on all.
SMALL_SCHEDULE = ((150, None, 5), (None, 3, None))


@pytest.fixture
def small_schedule(monkeypatch):
    for solver in VARPRO_SOLVERS:
        monkeypatch.setitem(_training.SCHEDULES, solver, SMALL_SCHEDULE)


def teacher_problem(n=600, seed=0):
    """Targets made by an ARN (3 anchors, softness 2): the residual can vanish."""
    random = rng(seed)
    X = random.normal(size=(n, 2))
    anchors = np.array([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.2]])
    W = random.normal(size=(3, 3, 1))
    logits = -2.0 * ((X[:, None, :] - anchors[None]) ** 2).sum(axis=2)
    A = np.exp(logits - logits.max(axis=1, keepdims=True))
    A /= A.sum(axis=1, keepdims=True)
    X1 = np.hstack([X, np.ones((n, 1))])
    Y = np.einsum("ik,ij,kjt->it", A, X1, W)
    return X, Y, anchors + 0.15 * random.normal(size=anchors.shape)


def test_stages_are_nested_sorted_subsets_then_all_rows():
    schedule = ((50, None, 3), (120, 4, 2), (None, 2, None))
    stages = coarse_to_fine_rows(1000, rng(0), schedule)
    assert [None if r is None else r.size for r, _, _ in stages] == [50, 120, None]
    assert [(cap, patience) for _, cap, patience in stages] == [(None, 3), (4, 2), (2, None)]
    first, second = stages[0][0], stages[1][0]
    assert np.all(np.diff(first) > 0) and np.all(np.diff(second) > 0)
    assert set(first) <= set(second) and second.max() < 1000
    # A stage needs more than COARSE_MIN_FACTOR times its rows; none: one stage, all rows.
    sizes = [
        None if r is None else r.size for r, _, _ in coarse_to_fine_rows(200, rng(0), schedule)
    ]
    assert sizes == [50, None]
    assert coarse_to_fine_rows(100, rng(0), schedule) == [(None, None, None)]
    assert coarse_to_fine_rows(1000, rng(0), ()) == [(None, None, None)]


def test_extended_history_concatenates_and_keeps_the_later_best():
    coarse, fine = TrainingHistory(), TrainingHistory()
    coarse.start(1.0, "c0")
    coarse.n_iter = 2
    coarse.record(0.5, "c1", 1e-4)
    coarse.record(0.4, "c2", 1e-4)
    fine.start(0.45, "f0")
    fine.n_iter = 1
    fine.record(0.44, "f1", 1e-4)
    fine.converged = True
    both = coarse.extended(fine)
    assert both.n_iter == 3 and both.loss_curve == [0.5, 0.4, 0.44]
    assert (both.best, both.best_loss, both.converged) == ("f1", 0.44, True)


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
def test_schedule_reaches_the_full_data_optimum_on_a_zero_residual_problem(solver, small_schedule):
    # Where the residual vanishes the subsample's optimum is the full data's:
    # the schedule (150 rows, then a few steps on all 600) must reach the
    # objective that the single full-data fit reaches.
    X, Y, start = teacher_problem()
    w = np.ones(X.shape[0])
    options = TrainingOptions(
        solver=solver, alpha=1e-10, max_iter=300, tol=1e-12, n_iter_no_change=5
    )
    minimise = fit_gauss_newton if solver == "gauss_newton" else _training.fit_varpro
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        anchors, softness, history = learn_varpro(
            options, start, 1.5, X, Y, w, xp, rng(0), minimise=minimise
        )
    full = reduced_objective(
        anchors, math.log(softness), X, Y, w, "euclidean", 1e-10, xp, gradient=False
    )[0]
    assert full <= 1e-8 * Y.var()
    assert history.best_loss == pytest.approx(full, rel=1e-6, abs=1e-14)


def test_coarse_stages_keep_the_penalty_per_unit_of_weight(small_schedule):
    # The objective is [sum w r^2 + alpha ||W||^2] / sum w: on a subsample the
    # same solution needs alpha scaled by the subsample's share of the weight.
    X, Y, start = teacher_problem()
    w = rng(1).uniform(0.5, 2.0, X.shape[0])
    calls = []

    def spy(X_s, Y_s, w_s, anchors, softness, kind, alpha, xp, **kw):
        calls.append((float(np.sum(w_s)), alpha, kw["max_iter"], kw["n_iter_no_change"]))
        history = TrainingHistory()
        history.start(1.0, None)
        return np.asarray(anchors), softness, history

    options = TrainingOptions(solver="gauss_newton", alpha=0.7, max_iter=50, n_iter_no_change=8)
    learn_varpro(options, start, 1.5, X, Y, w, xp, rng(0), minimise=spy)
    (coarse_weight, coarse_alpha, coarse_cap, coarse_patience), fine = calls
    assert coarse_alpha == pytest.approx(0.7 * coarse_weight / np.sum(w), rel=1e-12)
    assert (coarse_cap, coarse_patience) == (50, 5)  # the options' cap, the stage's patience
    assert fine == (pytest.approx(np.sum(w), rel=1e-12), 0.7, 3, 8)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_the_start_competes_with_anchors_learned_on_a_subsample(small_schedule, early_stopping):
    # A coarse stage that ends somewhere useless (here: anchors thrown far away)
    # must not make the fit end above its start on all rows.
    X, Y, start = teacher_problem()
    w = np.ones(X.shape[0])

    def misleading(X_s, Y_s, w_s, anchors, softness, kind, alpha, xp, **kw):
        far = np.asarray(anchors) + 50.0
        loss = reduced_objective(
            far, math.log(softness), X_s, Y_s, w_s, kind, alpha, xp, gradient=False
        )[0]
        history = TrainingHistory()
        history.start(loss, None, -1e9 if kw["validation_score"] is not None else None)
        return far, softness, history

    options = TrainingOptions(solver="gauss_newton", alpha=1e-3, early_stopping=early_stopping)
    anchors, softness, history = learn_varpro(
        options, start, 1.5, X, Y, w, xp, rng(0), minimise=misleading
    )
    np.testing.assert_array_equal(anchors, start)
    assert softness == 1.5


def test_the_last_allowed_step_skips_its_jacobian_pass(monkeypatch):
    # The linearisation after the last step allowed would go unused: the
    # iterate is the same, with one Jacobian pass fewer.
    X, Y, start = teacher_problem(200)
    w = np.ones(X.shape[0])
    passes = []
    original = _gauss_newton.jacobian_pass

    def counted(*args, **kwargs):
        passes.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_gauss_newton, "jacobian_pass", counted)
    one = fit_gauss_newton(X, Y, w, start, 1.5, "euclidean", 1e-6, xp, max_iter=1)
    start_loss = reduced_objective(
        start, math.log(1.5), X, Y, w, "euclidean", 1e-6, xp, gradient=False
    )[0]
    assert one[2].n_iter == 1 and one[2].best_loss < start_loss  # the step was taken
    assert len(passes) == 1  # the start's only
    passes.clear()
    two = fit_gauss_newton(X, Y, w, start, 1.5, "euclidean", 1e-6, xp, max_iter=2)
    assert len(passes) == 2
    np.testing.assert_allclose(two[2].loss_curve[0], one[2].loss_curve[0], rtol=1e-9)


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("weighted", [False, True])
def test_scheduled_fit_never_ends_above_its_start_on_every_similarity(
    solver, kind, weighted, small_schedule
):
    # With the schedule on (600 rows > 2 x 150), the kept objective on all rows
    # is the independently written one of the final model, and not above the
    # start's closed form.
    X, y, _ = cells(600)
    w = rng(3).uniform(0.0, 2.0, len(y)) if weighted else np.ones(len(y))
    start = rng(4).normal(size=(4, 4))
    # A fixed penalty: the objective is then the same function on every stage.
    params = dict(similarity=kind, anchors=start, softness=1.0, alpha=1.0, random_state=0)
    closed = ARNRegressor(4, **params).fit(X, y, sample_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        learned = ARNRegressor(4, solver=solver, max_iter=20, **params).fit(X, y, sample_weight=w)
    assert learned.best_loss_ <= weighted_objective(closed, X, y, w, kind) * (1 + 1e-12)
    assert learned.best_loss_ == pytest.approx(weighted_objective(learned, X, y, w, kind), rel=1e-8)
