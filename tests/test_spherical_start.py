"""The sign-invariant spherical KMeans start of ``similarity="absdot"``."""

import numpy as np
import pytest

from arn_sklearn import ARNRegressor
from arn_sklearn._anchors._init import init_anchors, spherical_kmeans


def planted_lines(n, n_lines, n_features, noise, seed):
    """Rows along ``n_lines`` random directions, random sign and length, plus noise."""
    rng = np.random.RandomState(seed)
    directions = rng.normal(size=(n_lines, n_features))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    line = rng.randint(n_lines, size=n)
    length = rng.uniform(0.5, 3.0, size=n) * rng.choice([-1.0, 1.0], size=n)
    X = length[:, None] * directions[line] + noise * rng.normal(size=(n, n_features))
    return X, directions, line


@pytest.mark.parametrize("seed", range(4))
def test_spherical_kmeans_recovers_planted_lines(seed):
    X, directions, _ = planted_lines(3000, 6, 8, 0.05, seed)
    anchors = spherical_kmeans(X, np.ones(len(X)), 6, np.random.RandomState(seed))
    np.testing.assert_allclose(np.linalg.norm(anchors, axis=1), 1.0)
    # Each true line has an anchor along it, up to sign.
    cosines = np.abs(directions @ anchors.T)
    assert cosines.max(axis=1).min() > 0.995


def test_euclidean_kmeans_misses_the_lines_that_spherical_finds():
    """Sign-symmetric lines: KMeans centroids pair opposite halves and |x.c| mixes lines."""
    X, directions, line = planted_lines(3000, 4, 6, 0.05, 0)
    rng = np.random.RandomState(0)
    spherical = init_anchors(X, np.ones(len(X)), 4, "kmeans", rng, similarity="absdot")
    euclidean = init_anchors(X, np.ones(len(X)), 4, "kmeans", np.random.RandomState(0))

    def purity(anchors):
        labels = np.argmax(np.abs(X @ anchors.T), axis=1)
        return sum(np.bincount(line[labels == k]).max() for k in np.unique(labels)) / len(X)

    assert purity(spherical) > 0.99
    assert purity(euclidean) < 0.9


def test_spherical_kmeans_ignores_row_signs_and_lengths():
    X, _, _ = planted_lines(1000, 5, 6, 0.1, 1)
    flipped = X * np.random.RandomState(2).choice([-3.0, 0.5, 2.0], size=(len(X), 1))
    first = spherical_kmeans(X, np.ones(len(X)), 5, np.random.RandomState(0))
    second = spherical_kmeans(flipped, np.ones(len(X)), 5, np.random.RandomState(0))
    np.testing.assert_allclose(np.abs(first @ second.T).max(axis=1), 1.0, atol=1e-10)


def test_spherical_kmeans_weights_rows():
    """A zero-weight line gets no anchor; an empty cluster is re-seeded, not left empty."""
    X, directions, line = planted_lines(2000, 3, 5, 0.02, 3)
    w = np.where(line == 0, 0.0, 1.0)
    anchors = spherical_kmeans(X, w, 2, np.random.RandomState(0))
    assert np.abs(directions[0] @ anchors.T).max() < 0.99
    assert np.abs(directions[1:] @ anchors.T).max(axis=1).min() > 0.995
    # More anchors than distinct lines: every anchor is still a unit row.
    few = spherical_kmeans(directions[:2], np.ones(2), 3, np.random.RandomState(0))
    np.testing.assert_allclose(np.linalg.norm(few, axis=1), 1.0)


def test_absdot_estimator_starts_from_unit_directions():
    X, _, _ = planted_lines(2000, 4, 6, 0.05, 4)
    y = np.abs(X[:, 0])
    model = ARNRegressor(4, similarity="absdot", anchors="kmeans", random_state=0).fit(X, y)
    np.testing.assert_allclose(np.linalg.norm(model.anchors_, axis=1), 1.0)
    euclidean = ARNRegressor(4, anchors="kmeans", random_state=0).fit(X, y)
    assert not np.allclose(np.linalg.norm(euclidean.anchors_, axis=1), 1.0)
