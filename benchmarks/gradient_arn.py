"""Learned anchors (solver="adam"/"sgd") and Deep ARN against the closed form.

1. A piecewise-linear target with known partitions (16 Voronoi cells in 4-D,
   an affine map per cell, so the target jumps across cell borders): closed
   form on KMeans anchors (auto softness, and the best softness of a grid),
   then the gradient solvers and Deep ARN from the same start.
2. Friedman #1 (scikit-learn's ``make_friedman1``), standardised.
3. Cost of one epoch against the GEMMs it is made of: per minibatch the
   forward ``Z @ W`` and the backward ``Z^T G`` and ``G W^T`` on the lifted
   block ``Z`` (``b x m(d+1)``), i.e. three GEMMs of ``n m (d+1) t`` over an
   epoch; the ratio is measured in one run. The epoch also evaluates the
   objective on all rows (one more forward pass) to keep the best epoch.

    python benchmarks/gradient_arn.py [--quick]
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from arn_sklearn import ARNRegressor, DeepARNRegressor


def known_partitions(n, n_cells=16, n_features=4, seed=0, noise=0.01):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, size=(n, n_features))
    centres = np.random.RandomState(100).uniform(-0.8, 0.8, size=(n_cells, n_features))
    cell = np.argmin(((X[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    W = np.random.RandomState(101).normal(scale=2.0, size=(n_cells, n_features))
    b = np.random.RandomState(102).normal(size=n_cells)
    return X, np.sum(X * W[cell], axis=1) + b[cell] + noise * rng.normal(size=n)


def fit_and_score(model, X, y, X_test, y_test):
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    seconds = time.perf_counter() - tic
    mse = float(np.mean((model.predict(X_test) - y_test) ** 2))
    return mse, getattr(model, "n_iter_", 1), seconds


def compare(title, X, y, X_test, y_test, m, epochs, rate):
    print(f"\n## {title}: n={X.shape[0]}, d={X.shape[1]}, m={m}\n")
    print("| model | test MSE | epochs | fit time (s) |\n|---|---|---|---|")
    auto = ARNRegressor(m, alpha=1e-3, random_state=0).fit(X, y).softness_
    rows = [("closed form, KMeans anchors, K=auto", ARNRegressor(m, alpha=1e-3, random_state=0))]
    best = None
    for factor in (1, 2, 4, 8, 16, 32):
        model = ARNRegressor(m, softness=factor * auto, alpha=1e-3, random_state=0)
        mse = fit_and_score(model, X, y, X_test, y_test)[0]
        if best is None or mse < best[1]:
            best = (factor, mse)
    factor = best[0]
    rows.append(
        (
            f"closed form, K={factor}x auto (best of 1x-32x)",
            ARNRegressor(m, softness=factor * auto, alpha=1e-3, random_state=0),
        )
    )
    # From the KMeans closed form, as labelled (the default start is now "auto").
    common = dict(alpha=1e-3, anchors="kmeans", max_iter=epochs, batch_size=100, random_state=0)
    for start, softness in (("K=auto", "auto"), (f"K={factor}x auto", factor * auto)):
        rows.append(
            (
                f"adam from closed form ({start})",
                ARNRegressor(
                    m, softness=softness, solver="adam", learning_rate_init=rate, **common
                ),
            )
        )
    rows.append(
        (
            f"sgd (momentum 0.9) from closed form (K={factor}x auto)",
            ARNRegressor(
                m, softness=factor * auto, solver="sgd", learning_rate_init=rate / 3, **common
            ),
        )
    )
    for n_layers in (2, 3):
        rows.append(
            (
                f"Deep ARN, {n_layers} layers, adam (K={factor}x auto)",
                DeepARNRegressor(
                    n_layers, m, softness=factor * auto, learning_rate_init=rate, **common
                ),
            )
        )
    for label, model in rows:
        mse, n_iter, seconds = fit_and_score(model, X, y, X_test, y_test)
        print(f"| {label} | {mse:.4g} | {n_iter} | {seconds:.1f} |", flush=True)


def epoch_seconds_and_gemm_seconds(n, d, t, m, batch):
    """One adam epoch of ARNRegressor, and its three GEMMs per minibatch alone."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, t))
    fits = {}
    for epochs in (1, 3):
        model = ARNRegressor(
            m,
            anchors="random",
            solver="adam",
            max_iter=epochs,
            n_iter_no_change=epochs + 1,
            batch_size=batch,
            random_state=0,
        )
        tic = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, Y)
        fits[epochs] = time.perf_counter() - tic
    p = m * (d + 1)
    Z = rng.normal(size=(batch, p))
    W = rng.normal(size=(p, t))
    G = rng.normal(size=(batch, t))
    tic = time.perf_counter()
    for _ in range(n // batch):
        Z @ W, Z.T @ G, G @ W.T
    return (fits[3] - fits[1]) / 2, time.perf_counter() - tic


def epoch_cost(n, d, t, m, batch):
    epoch, gemm = epoch_seconds_and_gemm_seconds(n, d, t, m, batch)
    print(
        f"| {n} | {d} | {t} | {m} | {batch} | {epoch:.3f} | {gemm:.3f} | {epoch / gemm:.1f} |",
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer epochs")
    args = parser.parse_args(argv)
    n, epochs = (4000, 30) if args.quick else (20000, 100)

    X, y = known_partitions(n)
    X_test, y_test = known_partitions(10000, seed=1)
    compare("Known partitions (16 cells, 4-D)", X, y, X_test, y_test, 16, epochs, 0.01)

    X, y = make_friedman1(n + 10000, noise=0.3, random_state=0)
    scaler = StandardScaler().fit(X[:n])
    compare(
        "Friedman #1",
        scaler.transform(X[:n]),
        y[:n],
        scaler.transform(X[n:]),
        y[n:],
        16,
        epochs,
        0.003,
    )

    print("\n## Epoch cost: one adam epoch vs its GEMMs (3 per minibatch), same run\n")
    print("| n | d | t | m | batch | epoch (s) | GEMMs (s) | ratio |\n" + "|---" * 8 + "|")
    for d, t, m in ((16, 1, 64), (24, 81, 64), (32, 32, 128)):
        epoch_cost(n, d, t, m, 1000)


if __name__ == "__main__":
    main()
