"""Anchored Regression Networks for scikit-learn."""

from ._cv import ARNRegressorCV
from ._deep import DeepARNRegressor
from ._estimator import ARNRegressor
from ._persistence import UntrustedModelError, load_model, save_model

__all__ = [
    "ARNRegressor",
    "ARNRegressorCV",
    "DeepARNRegressor",
    "UntrustedModelError",
    "load_model",
    "save_model",
]
__version__ = "0.1.0"
