"""Data and imports shared by the asv benchmarks."""

import os
import sys

import numpy as np

_BENCHMARKS = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# The helper scripts next to this suite (efficiency.py, gradient_arn.py) are
# imported whether or not arn_sklearn is installed.
if _BENCHMARKS not in sys.path:
    sys.path.insert(0, _BENCHMARKS)

try:
    import arn_sklearn  # noqa: F401
except ImportError:  # run from a checkout, not an installed package
    sys.path.insert(0, os.path.dirname(_BENCHMARKS))


def make_data(n, d, seed=0):
    """Train/test split of a smooth non-linear target of a few projections."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n + 1000, d))
    V = rng.normal(size=(d, 4)) / np.sqrt(d)
    P = X @ V
    y = np.sin(2 * P[:, 0]) + np.abs(P[:, 1]) + P[:, 2] * np.tanh(P[:, 3])
    y = y + 0.05 * rng.normal(size=y.shape[0])
    return X[:n], y[:n], X[n:], y[n:]
