"""``alpha="auto"``: the penalty of a learned fit chosen on held-out rows.

Against independent references: a brute-force search (one ridge fit per
penalty, scored by scikit-learn's ``mean_squared_error`` and ``r2_score`` on
the held-out predictions), the closed form refitted on all rows, and the
behaviour the choice exists for (a near-noiseless target wants a tiny
penalty, a noisy one a larger one).
"""

import numpy as np
import pytest
from array_api_compat import array_namespace
from sklearn.base import clone
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._assignment import SIMILARITIES
from arn_sklearn._learning._ridge import RELATIVE_ALPHAS, HeldOutRidge
from arn_sklearn._learning._training import VARPRO_SOLVERS
from arn_sklearn._learning._varpro import closed_form_weights, predict

xp = array_namespace(np.empty(0))
rng = np.random.RandomState


def smooth_problem(n, noise, seed=0, n_targets=2):
    random = rng(seed)
    X = random.normal(size=(n, 3))
    Y = np.stack([np.sin(X[:, 0] + t) * X[:, 1] + 0.3 * X[:, 2] ** 2 for t in range(n_targets)], 1)
    return X, Y + noise * random.normal(size=Y.shape)


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("weighted", [False, True])
def test_choice_is_the_brute_force_best_penalty(similarity, weighted):
    X, Y = smooth_problem(500, 0.05)
    random = rng(1)
    w = random.uniform(0.2, 2.0, size=len(X)) if weighted else np.ones(len(X))
    anchors, softness = random.normal(size=(5, 3)), 1.3
    train, held = slice(0, 350), slice(350, None)
    stats, held_out = (
        closed_form_weights(X[r], Y[r], w[r], anchors, softness, similarity, 1.0, xp)[2]
        for r in (train, held)
    )
    alpha, score = HeldOutRidge(Y[held], w[held]).choose(stats, held_out, xp)

    scale = np.trace(stats.gram) / stats.gram.shape[0]
    errors, scores = [], []
    for candidate in scale * RELATIVE_ALPHAS:
        W, y_mean, _ = closed_form_weights(
            X[train], Y[train], w[train], anchors, softness, similarity, candidate, xp
        )
        Y_pred = predict(X[held], anchors, softness, similarity, W, y_mean, xp)
        errors.append(mean_squared_error(Y[held], Y_pred, sample_weight=w[held]))
        scores.append(r2_score(Y[held], Y_pred, sample_weight=w[held]))
    best = int(np.argmin(errors))
    assert alpha == pytest.approx(scale * RELATIVE_ALPHAS[best], rel=1e-12)
    assert score == pytest.approx(scores[best], rel=1e-8)


def test_noisy_targets_get_a_larger_penalty_than_clean_ones():
    X, Y_clean = smooth_problem(800, 0.0, n_targets=1)
    Y_noisy = Y_clean + 1.5 * rng(3).normal(size=Y_clean.shape)
    common = dict(solver="gauss_newton", early_stopping=True, random_state=0, max_iter=20)
    clean = ARNRegressor(8, **common).fit(X, Y_clean[:, 0])
    noisy = ARNRegressor(8, **common).fit(X, Y_noisy[:, 0])
    assert noisy.alpha_ > 100 * clean.alpha_


def test_near_noiseless_target_beats_the_fixed_default_penalty():
    """What the choice is for (the robot arm of benchmarks/learned_vs_mlp.py, small)."""
    X, Y = smooth_problem(1500, 0.0)
    X_test, Y_test = smooth_problem(1000, 0.0, seed=5)
    common = dict(solver="gauss_newton", early_stopping=True, random_state=0, max_iter=30)
    auto = ARNRegressor(8, **common).fit(X, Y)
    fixed = ARNRegressor(8, alpha=1.0, **common).fit(X, Y)
    assert auto.alpha_ < 1e-2
    auto_error = mean_squared_error(Y_test, auto.predict(X_test))
    assert auto_error < 0.5 * mean_squared_error(Y_test, fixed.predict(X_test))


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
@pytest.mark.parametrize("early_stopping", [False, True])
def test_final_regressors_are_the_closed_form_of_the_chosen_penalty_on_all_rows(
    solver, early_stopping
):
    X, Y = smooth_problem(400, 0.1)
    w = rng(2).uniform(0.5, 1.5, size=len(X))
    model = ARNRegressor(
        6, solver=solver, early_stopping=early_stopping, max_iter=8, random_state=0
    ).fit(X, Y, sample_weight=w)
    reference = ARNRegressor(
        6, anchors=model.anchors_, softness=model.softness_, alpha=model.alpha_
    ).fit(X, Y, sample_weight=w)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-7, atol=1e-9)
    # Chosen on the held-out rows, then given its share of all rows' weight.
    assert 0 < model.alpha_ < np.inf


@pytest.mark.parametrize("solver", ["closed_form", "adam"])
def test_auto_is_the_unit_penalty_for_the_other_solvers(solver):
    X, Y = smooth_problem(300, 0.1)
    common = dict(solver=solver, random_state=0, max_iter=3)
    auto = ARNRegressor(4, **common).fit(X, Y)
    unit = ARNRegressor(4, alpha=1.0, **common).fit(X, Y)
    np.testing.assert_array_equal(auto.coef_, unit.coef_)
    assert auto.alpha_ == 1.0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_is_validated_and_a_grid_search_over_alpha_still_works():
    X, Y = smooth_problem(300, 0.1, n_targets=1)
    with pytest.raises(InvalidParameterError, match="alpha"):
        ARNRegressor(alpha="best").fit(X, Y[:, 0])
    assert clone(ARNRegressor()).get_params()["alpha"] == "auto"
    search = GridSearchCV(
        ARNRegressor(4, solver="gauss_newton", max_iter=3, random_state=0),
        {"alpha": ["auto", 0.01, 1.0]},
        cv=3,
    ).fit(X, Y[:, 0])
    assert search.best_params_["alpha"] in ("auto", 0.01, 1.0)
    fixed = search.cv_results_["params"].index({"alpha": 0.01})
    assert np.isfinite(search.cv_results_["mean_test_score"][fixed])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_without_rows_to_hold_out_uses_the_unit_penalty():
    X, Y = smooth_problem(200, 0.1, n_targets=1)
    common = dict(solver="gauss_newton", max_iter=3, random_state=0)
    # Three rows: no split of 2 + 2 rows exists.
    tiny = ARNRegressor(2, **common).fit(X[:3], Y[:3, 0])
    reference = ARNRegressor(2, alpha=1.0, **common).fit(X[:3], Y[:3, 0])
    assert tiny.alpha_ == 1.0
    np.testing.assert_array_equal(tiny.coef_, reference.coef_)
    # Five weighted rows of 200: the held-out side has no weight.
    w = np.zeros(len(X))
    w[:5] = 1.0
    assert ARNRegressor(2, **common).fit(X, Y[:, 0], sample_weight=w).alpha_ == 1.0
    # With early stopping the split's own error stands.
    with pytest.raises(ValueError, match="early_stopping needs at least 2"):
        ARNRegressor(2, early_stopping=True, **common).fit(X[:3], Y[:3, 0])
