"""Anchored Regression Networks for scikit-learn."""

from ._estimator import ARNRegressor

__all__ = ["ARNRegressor"]
__version__ = "0.1.0"
