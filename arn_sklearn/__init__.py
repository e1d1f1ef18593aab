"""Anchored Regression Networks for scikit-learn."""

from ._estimators._arn import ARNRegressor
from ._estimators._cv import ARNRegressorCV
from ._estimators._deep import DeepARNRegressor
from ._persistence import UntrustedModelError, load_model, save_model

__all__ = [
    "ARNRegressor",
    "ARNRegressorCV",
    "DeepARNRegressor",
    "UntrustedModelError",
    "load_model",
    "save_model",
]
__version__ = "0.2.0.dev0"
