"""Learned anchors on SR-like data: many outputs, unit-norm features, mostly noise.

On such data (x3 super-resolution patches: 81 residual pixels, a few thousand
rows) every learned step over-fits; early stopping must then keep the start.
"""

import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from arn_sklearn import ARNRegressor
from arn_sklearn._anchors._init import spherical_kmeans


def sr_like(n, n_features=6, n_targets=12, seed=0):
    """Unit-norm rows; targets a weak |x.c|-gated signal buried in noise."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, n_features))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    gate = np.abs(X[:, :1]) > 0.5
    signal = np.where(gate, X @ rng.normal(size=(n_features, n_targets)), 0.0)
    return X, 0.3 * signal + rng.normal(size=(n, n_targets))


def validation_r2(model_factory, X, Y, train, validation):
    """Mean R^2 over outputs on the validation rows of a fit on the training rows."""
    model = model_factory().fit(X[train], Y[train])
    residual = ((Y[validation] - model.predict(X[validation])) ** 2).sum(axis=0)
    total = ((Y[validation] - Y[validation].mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - residual / total))


@pytest.mark.parametrize("solver", ["lbfgs", "gauss_newton"])
@pytest.mark.parametrize("similarity", ["absdot", "euclidean"])
def test_learned_fit_never_ends_below_its_start_on_validation(solver, similarity):
    X, Y = sr_like(600)
    anchors = spherical_kmeans(X, np.ones(len(X)), 6, np.random.RandomState(0))
    common = dict(similarity=similarity, alpha=0.1, softness=4.0, anchors=anchors)
    model = ARNRegressor(
        6, solver=solver, early_stopping=True, max_iter=15, random_state=0, **common
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, Y)
    # The split early stopping makes (given anchors draw nothing before it).
    train, validation = train_test_split(
        np.arange(len(X)), test_size=math.ceil(0.1 * len(X)), random_state=np.random.RandomState(0)
    )
    start = validation_r2(lambda: ARNRegressor(6, **common), X, Y, train, validation)
    assert model.best_validation_score_ >= start - 1e-10
    # The kept anchors' closed form scores the same on those rows.
    kept = dict(common, anchors=model.anchors_)
    kept_score = validation_r2(
        lambda: ARNRegressor(6, **dict(kept, softness=model.softness_)), X, Y, train, validation
    )
    assert kept_score == pytest.approx(model.best_validation_score_, abs=1e-8)


def test_learned_anchors_do_not_depend_on_a_rotation_of_the_targets():
    # benchmarks/target_components.py learns SR anchors on the leading principal
    # components of the 81 targets: sound because the reduced objective (and so
    # every L-BFGS step) is invariant to an orthogonal rotation of the targets.
    X, Y = sr_like(400, n_targets=5)
    rotation, _ = np.linalg.qr(np.random.RandomState(1).normal(size=(5, 5)))
    w = np.random.RandomState(2).uniform(0.5, 2.0, size=len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = [
            ARNRegressor(
                4, solver="lbfgs", similarity="absdot", alpha=0.1, max_iter=5, tol=0, random_state=0
            ).fit(X, targets, sample_weight=w)
            for targets in (Y, Y @ rotation)
        ]
    assert fits[0].n_iter_ == fits[1].n_iter_ == 5
    np.testing.assert_allclose(fits[1].anchors_, fits[0].anchors_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        fits[1].predict(X), fits[0].predict(X) @ rotation, rtol=1e-6, atol=1e-8
    )
