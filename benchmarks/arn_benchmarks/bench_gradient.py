"""Gradient solvers: epoch time (and its ratio to the epoch's GEMMs) and Deep ARN fit."""

from .common import make_data  # noqa: I001  (sets up the import path first)

import warnings

from sklearn.exceptions import ConvergenceWarning

from arn_sklearn import ARNRegressor, DeepARNRegressor
from gradient_arn import epoch_seconds_and_gemm_seconds


class GradientEpoch:
    params = ([(20_000, 16, 1, 64), (20_000, 24, 81, 64)],)
    param_names = ["n_d_t_m"]
    timeout = 300

    def track_epoch_over_gemms(self, n_d_t_m):
        epoch, gemm = epoch_seconds_and_gemm_seconds(*n_d_t_m, batch=1000)
        return epoch / gemm

    track_epoch_over_gemms.unit = "epoch time / time of its GEMMs"


class LearnedFit:
    params = (["adam", "sgd", "deep"],)
    param_names = ["solver"]
    timeout = 300

    def setup(self, solver):
        self.X, self.y, self.X_test, self.y_test = make_data(5_000, 8)

    def _model(self, solver):
        common = dict(max_iter=10, n_iter_no_change=11, learning_rate_init=0.01, random_state=0)
        if solver == "deep":
            return DeepARNRegressor(2, 16, **common)
        return ARNRegressor(16, solver=solver, **common)

    def _fit(self, solver):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._model(solver).fit(self.X, self.y)

    def time_fit_10_epochs(self, solver):
        self._fit(solver)

    def track_test_r2(self, solver):
        return self._fit(solver).score(self.X_test, self.y_test)
