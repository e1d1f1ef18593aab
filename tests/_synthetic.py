"""Synthetic tasks shared by the learned-anchor tests."""

import numpy as np


def cells(n, seed=0):
    """Four cells cut along the low-variance directions x2 = 0 and x3 = 0."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 4)) * np.array([3.0, 3.0, 0.3, 0.3])
    cell = (X[:, 2] > 0).astype(int) * 2 + (X[:, 3] > 0)
    W = np.random.RandomState(100).normal(size=(4, 4))
    b = np.random.RandomState(101).normal(size=4)
    return X, np.sum(X * W[cell], axis=1) + b[cell] + 0.01 * rng.normal(size=n), cell
