"""Learned anchors with default parameters: closed form, k-plane, L-BFGS, Adam, Deep ARN.

Tables over seeds (test MSE, fit time, training objective = eq. 10 over the
total weight, evaluated independently of the solver) on

1. cells cut along low-variance directions: x ~ N(0, diag(3, 3, 0.3, 0.3)^2),
   four cells by the signs of x2 and x3, an affine map per cell (the target
   jumps across the cuts), noise 0.01; 4 anchors. KMeans anchors follow the
   high-variance directions and miss the cells.
2. Friedman #1 (``make_friedman1``, noise 0.3, so the noise floor is 0.09),
   standardised; 16 anchors.

Every model is what a user writes: ``ARNRegressor(m, solver=...)`` with no
other parameter (``random_state`` aside), plus a few labelled variants (the
old starts, the other L-BFGS parametrisation) that justify the defaults. The
super-resolution columns are in ``benchmarks/superres_table5.py --learned``.

    python benchmarks/learned_anchors.py [--seeds 3] [--out benchmarks/results/learned_anchors.md]
"""

import argparse
import contextlib
import time
import warnings
from unittest import mock

import numpy as np
from array_api_compat import array_namespace
from sklearn.datasets import make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from arn_sklearn import ARNRegressor, DeepARNRegressor
from arn_sklearn._kernels._gradients import objective
from arn_sklearn._kernels._lifting import pack_weights
from arn_sklearn._learning import _varpro
from arn_sklearn._model._layer import as_2d, as_3d

xp = array_namespace(np.empty(0))


def low_variance_cells(n, seed=0, noise=0.01):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 4)) * np.array([3.0, 3.0, 0.3, 0.3])
    cell = (X[:, 2] > 0).astype(int) * 2 + (X[:, 3] > 0)
    W = np.random.RandomState(100).normal(size=(4, 4))
    b = np.random.RandomState(101).normal(size=4)
    return X, np.sum(X * W[cell], axis=1) + b[cell] + noise * rng.normal(size=n)


def friedman(n, seed=0):
    X, y = make_friedman1(n + 10000, noise=0.3, random_state=seed)
    scaler = StandardScaler().fit(X[:n])
    return scaler.transform(X[:n]), y[:n], scaler.transform(X[n:]), y[n:]


def training_objective(model, X, y):
    """Eq. (10) over the total weight for a fitted ARNRegressor (unit weights)."""
    if isinstance(model, DeepARNRegressor):
        return model.best_loss_
    y_mean = y.mean()
    layer = {
        "anchors": model.anchors_,
        "weights": pack_weights(as_3d(model.coef_), as_2d(model.intercept_) - y_mean, xp),
        "log_softness": np.asarray(np.log(model.softness_)),
    }
    value = objective(
        [layer],
        X,
        (y - y_mean)[:, None],
        np.ones(len(y)),
        model.alpha / len(y),
        model.similarity,
        xp,
        gradient=False,
    )
    return float(value[0])


def _scaled_fit_varpro(*args, **kwargs):
    return _varpro.fit_varpro(*args, parametrisation="scaled", **kwargs)


# Variants that are not public parameters are run by patching a module constant.
SCALED_SEARCH = {"arn_sklearn._learning._training.fit_varpro": _scaled_fit_varpro}
# The pre-issue-13 start: softness = the auto rule only (tol is now relative).
OLD_START = {"arn_sklearn._learning._starts.GRADIENT_START_SOFTNESS": 1.0}


def models(m, seed):
    rs = {"random_state": seed}
    return [
        ("closed form (defaults: KMeans, K=auto)", ARNRegressor(m, **rs), {}),
        ("closed form, anchors='kplane'", ARNRegressor(m, anchors="kplane", **rs), {}),
        ("lbfgs (defaults)", ARNRegressor(m, solver="lbfgs", **rs), {}),
        ("lbfgs, anchors='kplane'", ARNRegressor(m, solver="lbfgs", anchors="kplane", **rs), {}),
        ("lbfgs, anchors='kmeans'", ARNRegressor(m, solver="lbfgs", anchors="kmeans", **rs), {}),
        ("lbfgs, (K c, log K) search", ARNRegressor(m, solver="lbfgs", **rs), SCALED_SEARCH),
        (
            "adam, rate 0.01",
            ARNRegressor(m, solver="adam", learning_rate_init=1e-2, **rs),
            {},
        ),
        (
            "adam, rate 0.003",
            ARNRegressor(m, solver="adam", learning_rate_init=3e-3, **rs),
            {},
        ),
        (
            "adam (defaults, rate 0.001)",
            ARNRegressor(m, solver="adam", **rs),
            {},
        ),
        (
            "adam, old start (KMeans, K=auto, rate 0.001)",
            ARNRegressor(m, solver="adam", anchors="kmeans", learning_rate_init=1e-3, **rs),
            OLD_START,
        ),
        (
            "Deep ARN, 2 layers, rate 0.01",
            DeepARNRegressor(2, m, learning_rate_init=1e-2, **rs),
            {},
        ),
        ("Deep ARN, 2 layers (defaults, rate 0.001)", DeepARNRegressor(2, m, **rs), {}),
    ]


def run(model, patches, X, y, X_test, y_test):
    tic = time.perf_counter()
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore", ConvergenceWarning)
        for target, value in patches.items():
            stack.enter_context(mock.patch(target, value))
        model.fit(X, y)
    seconds = time.perf_counter() - tic
    mse = float(np.mean((model.predict(X_test) - y_test) ** 2))
    return mse, seconds, training_objective(model, X, y), getattr(model, "n_iter_", 1)


def table(title, datasets, m, lines, only=None):
    print(f"\n## {title}\n", flush=True)
    results = {}
    for seed, (X, y, X_test, y_test) in enumerate(datasets):
        candidates = models(m, seed)
        for label, model, patch in candidates:
            # The first model (the default closed form) is the ratios' reference.
            if only and label != candidates[0][0] and not any(word in label for word in only):
                continue
            results.setdefault(label, []).append(run(model, patch, X, y, X_test, y_test))
            mse, seconds, obj, n_iter = results[label][-1]
            print(
                f"seed {seed} | {label} | {mse:.4g} | {seconds:.1f} s | {obj:.4g} | {n_iter}",
                flush=True,
            )
    base = np.array([r[0] for r in results[next(iter(results))]])
    lines += [
        f"\n## {title}\n",
        "| model | test MSE per seed | closed form / test MSE per seed | fit time (s) per seed "
        "| training objective per seed | iterations |",
        "|---|---|---|---|---|---|",
    ]
    for label, rows in results.items():
        mse = np.array([r[0] for r in rows])
        lines.append(
            f"| {label} | {' / '.join(f'{v:.3g}' for v in mse)} | "
            f"{' / '.join(f'{v:.0f}x' if v >= 10 else f'{v:.1f}x' for v in base / mse)} | "
            f"{' / '.join(f'{r[1]:.1f}' for r in rows)} | "
            f"{' / '.join(f'{r[2]:.3g}' for r in rows)} | "
            f"{' / '.join(str(r[3]) for r in rows)} |"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-cells", type=int, default=8000)
    parser.add_argument("--n-friedman", type=int, default=10000)
    parser.add_argument("--out", default="benchmarks/results/learned_anchors.md")
    parser.add_argument(
        "--datasets", nargs="+", default=["cells", "friedman"], choices=["cells", "friedman"]
    )
    parser.add_argument(
        "--only", nargs="*", help="run only the models whose label contains one of these words"
    )
    args = parser.parse_args(argv)
    lines = [
        "# `python benchmarks/learned_anchors.py` (2-core CPU shared with other jobs, one run)",
        "",
        "Test MSE, fit time and training objective (eq. 10 over the total weight; Deep ARN: "
        "its own objective) per seed; the ratio is the default closed form's test MSE over "
        "the model's, per seed.",
    ]
    if "cells" in args.datasets:
        cells = []
        for seed in range(args.seeds):
            X, y = low_variance_cells(args.n_cells, seed)
            X_test, y_test = low_variance_cells(10000, seed + 100)
            cells.append((X, y, X_test, y_test))
        title = f"(i) Cells cut along low-variance directions: n={args.n_cells}, d=4, m=4"
        table(title + ", noise 0.01", cells, 4, lines, args.only)
    if "friedman" in args.datasets:
        fried = [friedman(args.n_friedman, seed) for seed in range(args.seeds)]
        title = f"(ii) Friedman #1: n={args.n_friedman}, d=10, m=16, noise floor 0.09"
        table(title, fried, 16, lines, args.only)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
