"""Predictive uncertainty: ARN's ``predict(X, return_std=True)`` against BayesianRidge and a GP.

For each task and model, Gaussian intervals ``y_pred +- z sigma(x)`` are scored on
held-out rows: coverage of the nominal 90% and 68% intervals, mean width of the
90% interval (in units of the target's standard deviation), mean Gaussian
negative log-likelihood (NLL) and RMSE, with fit time.

Tasks (everything ships with scikit-learn, nothing is downloaded):

- ``diabetes``: scikit-learn's 442-row diabetes data, 4 repeats of 5-fold CV
  (every row is held out 4 times; features and target standardised on the
  training folds).
- ``synthetic``: ``y = sin(1.5 x0) + 0.5 x1^2 + N(0, 0.3^2)`` on ``[-2, 2]^2``:
  2,000 training rows, 20,000 held-out rows; the table adds the oracle (the true
  function and noise level), the best any model can score.
- ``friedman1``: ``make_friedman1`` (10 features, noise 1), 2,000 training rows,
  10,000 held-out rows.

ARN is fitted in closed form (``alpha`` and ``n_anchors`` chosen by 5-fold
``ARNRegressorCV`` on the training rows only; its refitted ``estimator_`` gives
the standard deviations). The GP uses ``ConstantKernel * RBF`` with one length
scale per feature, plus a ``WhiteKernel``, hyperparameters by marginal likelihood.

Run: ``OPENBLAS_NUM_THREADS=1 python benchmarks/uncertainty.py`` (about 8 minutes on
two shared cores, 6 of them the GP on Friedman #1); writes
``benchmarks/results/uncertainty.md``. On a loaded machine, multithreaded BLAS
made small factorisations hundreds of times slower (a 352-square Cholesky
took 1.05 s, spinning threads), hence one thread.
"""

import os
import sys
import time
import warnings

import numpy as np
from scipy.stats import norm
from sklearn.datasets import load_diabetes, make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import BayesianRidge
from sklearn.model_selection import RepeatedKFold
from sklearn.preprocessing import StandardScaler

from arn_sklearn import ARNRegressorCV

RESULTS = os.path.join(os.path.dirname(__file__), "results", "uncertainty.md")
Z90, Z68 = norm.ppf(0.95), norm.ppf(0.84)
GP_MAX_ROWS = 2000


def arn(n_anchors_grid=(4, 8, 16, 32)):
    """ARN with alpha and n_anchors chosen by CV on the training rows."""

    def fit(X, y):
        best = None
        for m in n_anchors_grid:
            if 5 * m > len(X):
                continue
            cv = ARNRegressorCV(m, alphas=np.logspace(-3, 3, 7), cv=5, random_state=0).fit(X, y)
            if best is None or cv.best_score_ > best.best_score_:
                best = cv
        return best.estimator_

    return fit


def bayesian_ridge(X, y):
    return BayesianRidge().fit(X, y)


def gaussian_process(X, y):
    kernel = ConstantKernel() * RBF(length_scale=np.ones(X.shape[1])) + WhiteKernel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(X, y)


MODELS = {
    "ARN (closed form)": arn(),
    "BayesianRidge": bayesian_ridge,
    "GP (ARD RBF + noise)": gaussian_process,
}


def scores(y, y_pred, y_std):
    y_std = np.maximum(y_std, 1e-12)
    z = np.abs(y - y_pred) / y_std
    nll = 0.5 * np.log(2 * np.pi * y_std**2) + 0.5 * z**2
    return {
        "cover90": np.mean(z <= Z90),
        "cover68": np.mean(z <= Z68),
        "width90": np.mean(2 * Z90 * y_std),
        "nll": np.mean(nll),
        "rmse": np.sqrt(np.mean((y - y_pred) ** 2)),
    }


def evaluate(fit, X_train, y_train, X_test, y_test):
    """Scores in units of the training target's standard deviation."""
    x_scaler = StandardScaler().fit(X_train)
    y_mean, y_scale = y_train.mean(), y_train.std()
    tic = time.perf_counter()
    model = fit(x_scaler.transform(X_train), (y_train - y_mean) / y_scale)
    fit_time = time.perf_counter() - tic
    y_pred, y_std = model.predict(x_scaler.transform(X_test), return_std=True)
    out = scores((y_test - y_mean) / y_scale, y_pred, y_std)
    out["fit_s"] = fit_time
    return out


def synthetic(n, seed, noise=0.3):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-2, 2, size=(n, 2))
    return X, np.sin(1.5 * X[:, 0]) + 0.5 * X[:, 1] ** 2 + noise * rng.normal(size=n)


def tasks():
    X, y = load_diabetes(return_X_y=True)
    splits = RepeatedKFold(n_splits=5, n_repeats=4, random_state=0).split(X)
    yield (
        "diabetes (442 rows, 4 x 5-fold CV)",
        [(X[tr], y[tr], X[te], y[te]) for tr, te in splits],
        None,
    )
    X, y = synthetic(2000, seed=0)
    X_test, y_test = synthetic(20000, seed=1)
    yield (
        "synthetic homoscedastic (2,000 train / 20,000 test, noise 0.3)",
        [(X, y, X_test, y_test)],
        lambda X: (np.sin(1.5 * X[:, 0]) + 0.5 * X[:, 1] ** 2, np.full(len(X), 0.3)),
    )
    X, y = make_friedman1(12000, noise=1.0, random_state=0)
    yield (
        "Friedman #1 (2,000 train / 10,000 test, noise 1)",
        [(X[:2000], y[:2000], X[2000:], y[2000:])],
        None,
    )


def main(argv=()):
    lines = [
        "# `python benchmarks/uncertainty.py` (2-core shared CPU, one run, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')})",
        "",
        "Gaussian intervals `y_pred +- z y_std` on held-out rows. Width, NLL and RMSE are in "
        "units of the training target's standard deviation; lower is better for all three "
        "once the coverage is right.",
        "",
    ]
    for name, splits, oracle in tasks():
        lines += [f"## {name}", ""]
        lines += [
            "| model | 90% coverage | 68% coverage | 90% width | NLL | RMSE | fit time (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for model_name, fit in MODELS.items():
            rows = []
            for split in splits:
                rows.append(evaluate(fit, *split))
                print(f"  {model_name}: split {len(rows)} fitted in {rows[-1]['fit_s']:.2f} s")
            sizes = np.array([len(split[3]) for split in splits], dtype=float)
            mean = {k: np.average([r[k] for r in rows], weights=sizes) for k in rows[0]}
            fit_time = np.sum([r["fit_s"] for r in rows]) / len(rows)
            lines.append(
                f"| {model_name} | {mean['cover90']:.3f} | {mean['cover68']:.3f} | "
                f"{mean['width90']:.3f} | {mean['nll']:.3f} | {mean['rmse']:.3f} | "
                f"{fit_time:.2f} |"
            )
            print(lines[-1], flush=True)
        if oracle is not None:
            X_train, y_train, X_test, y_test = splits[0]
            y_mean, y_scale = y_train.mean(), y_train.std()
            f, noise = oracle(X_test)
            best = scores((y_test - y_mean) / y_scale, (f - y_mean) / y_scale, noise / y_scale)
            lines.append(
                f"| oracle (true function and noise) | {best['cover90']:.3f} | "
                f"{best['cover68']:.3f} | {best['width90']:.3f} | {best['nll']:.3f} | "
                f"{best['rmse']:.3f} | |"
            )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if "--no-write" not in argv:
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            f.write(text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main(sys.argv[1:])
