"""Anchored Regression Networks for scikit-learn."""

from ._cv import ARNRegressorCV
from ._deep import DeepARNRegressor
from ._estimator import ARNRegressor

__all__ = ["ARNRegressor", "ARNRegressorCV", "DeepARNRegressor"]
__version__ = "0.1.0"
