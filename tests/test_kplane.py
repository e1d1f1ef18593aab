"""Supervised k-plane anchor initialisation."""

import numpy as np
import pytest
from _synthetic import cells
from array_api_compat import array_namespace

from arn_sklearn import ARNRegressor
from arn_sklearn._anchors._init import init_anchors
from arn_sklearn._anchors._kplane import anchors_from_labels, kplane_anchors, kplane_labels
from arn_sklearn._kernels._assignment import soft_assignments
from arn_sklearn._learning._starts import StartSpec, initial_anchors

xp = array_namespace(np.empty(0))


def purity(labels, truth):
    """Fraction of rows in their cluster's majority true cell."""
    return sum(np.bincount(truth[labels == k]).max() for k in np.unique(labels)) / len(truth)


@pytest.mark.parametrize("seed", range(5))
def test_kplane_recovers_known_cells_from_every_start(seed):
    X, y, cell = cells(3000, seed)
    Y = (y - y.mean())[:, None]
    labels, _ = kplane_labels(X, Y, np.ones(len(y)), 4, 1.0, np.random.RandomState(seed))
    assert purity(labels, cell) > 0.98


@pytest.mark.parametrize("seed", range(3))
def test_kplane_anchors_reproduce_the_cells_through_the_soft_assignment(seed):
    X, y, _ = cells(3000, seed)
    X_test, _, cell_test = cells(2000, seed + 10)
    anchors, softness = kplane_anchors(
        X, y, np.ones(len(y)), 4, "euclidean", 1.0, np.random.RandomState(seed)
    )
    A = soft_assignments(X_test, anchors, "euclidean", softness, xp)
    assert purity(np.argmax(A, axis=1), cell_test) > 0.97
    # KMeans anchors follow the input variance and miss these cells.
    kmeans = init_anchors(X, np.ones(len(y)), 4, "kmeans", np.random.RandomState(seed))
    nearest = np.argmin(((X_test[:, None] - kmeans[None]) ** 2).sum(axis=2), axis=1)
    assert purity(nearest, cell_test) < 0.7


def test_absdot_anchors_are_the_leading_directions():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3)) * np.array([0.2, 2.0, 0.5])
    labels = np.zeros(200, dtype=int)
    anchors = anchors_from_labels(X, np.ones(200), labels, 1, "absdot")
    _, vectors = np.linalg.eigh(X.T @ X)
    direction = anchors[0] / np.linalg.norm(anchors[0])
    assert abs(direction @ vectors[:, -1]) == pytest.approx(1.0, abs=1e-10)
    euclidean = anchors_from_labels(X, np.ones(200), labels, 1, "euclidean")
    np.testing.assert_allclose(euclidean[0], X.mean(axis=0))


def test_kplane_closed_form_beats_kmeans_closed_form():
    X, y, _ = cells(4000)
    X_test, y_test, _ = cells(2000, seed=1)
    kmeans = ARNRegressor(4, anchors="kmeans", random_state=0).fit(X, y)
    kplane = ARNRegressor(4, anchors="kplane", random_state=0).fit(X, y)
    kmeans_mse = np.mean((kmeans.predict(X_test) - y_test) ** 2)
    kplane_mse = np.mean((kplane.predict(X_test) - y_test) ** 2)
    assert kplane_mse < kmeans_mse / 5


def test_auto_anchors_try_kplane_for_learned_solvers_only(capsys):
    X, y, _ = cells(500)
    for solver, anchors, expected in [
        ("closed_form", "auto", "(kmeans)"),
        ("lbfgs", "auto", "(kmeans|kplane)"),
        ("adam", "random", "(random)"),
    ]:
        params = dict(solver=solver, anchors=anchors, max_iter=1, verbose=1, random_state=0)
        _quiet_fit(ARNRegressor(4, **params), X, y)
        assert f"anchors {expected}" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["cells", "smooth"])
def test_auto_start_is_the_lower_gcv_score(target, capsys):
    X, y, _ = cells(2000)
    if target == "smooth":  # KMeans anchors suit a smooth target better
        X = np.random.RandomState(0).uniform(-2, 2, size=(1500, 3))
        y = np.sin(2 * X[:, 0]) * X[:, 1] + np.abs(X[:, 2])
    initial_anchors(
        X,
        np.ones(len(y)),
        8,
        StartSpec(learned=True, verbose=1),
        np.random.RandomState(0),
        y=y[:, None],
    )
    line = next(
        s for s in capsys.readouterr().out.splitlines() if "generalised cross-validation" in s
    )
    tried = dict(
        part.rsplit(": ", 1)
        for part in line.split("(generalised cross-validation ")[1][:-1].split(", ")
    )
    chosen = line.split("[ARN] start ")[1].split(" (")[0]
    assert len(tried) == 3 and float(tried[chosen]) == min(float(v) for v in tried.values())
    assert chosen.startswith("kplane" if target == "cells" else "kmeans")


def test_kplane_needs_targets():
    X = np.random.RandomState(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="targets"):
        init_anchors(X, np.ones(50), 3, "kplane", np.random.RandomState(0))


def _quiet_fit(model, X, y):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)
