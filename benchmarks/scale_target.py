"""The super-resolution scale on this machine: many anchors, top-k assignments.

``python benchmarks/scale_target.py [n] [m] [d] [top_k] [device]`` fits
``ARNRegressor(n_anchors=m, top_k=top_k)`` on ``n`` synthetic samples of ``d``
features (defaults: 400,000, 1024, 30, 4, "auto"; ``cuda`` runs the
accumulation and the solve on the GPU) and prints the time of each stage
(anchor initialisation, accumulation, solve) and the test R^2.
"""

import sys
import time

import numpy as np

from arn_sklearn import ARNRegressor


def make_data(n, d, seed=0):
    """A smooth, strongly non-linear target of a few projections of ``X``."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    V = rng.normal(size=(d, 4)) / np.sqrt(d)
    P = X @ V
    y = np.sin(2 * P[:, 0]) + np.abs(P[:, 1]) + P[:, 2] * np.tanh(P[:, 3])
    return X, y + 0.05 * rng.normal(size=n)


def main(n=400_000, m=1024, d=30, top_k=4, device="auto"):
    X, y = make_data(n + 20_000, d)
    X_train, y_train, X_test, y_test = X[:n], y[:n], X[n:], y[n:]
    model = ARNRegressor(
        n_anchors=m, top_k=top_k, alpha=1.0, device=device, random_state=0, verbose=1
    )
    tic = time.perf_counter()
    model.fit(X_train, y_train)
    fit_s = time.perf_counter() - tic
    tic = time.perf_counter()
    r2 = model.score(X_test, y_test)
    predict_s = time.perf_counter() - tic
    print(
        f"n={n} m={m} d={d} top_k={top_k} device={device}: fit {fit_s:.1f} s, "
        f"predict {len(y_test)} rows {predict_s:.2f} s, test R^2 {r2:.4f}"
    )


if __name__ == "__main__":
    args = [int(a) if a != "None" else None for a in sys.argv[1:5]]
    main(*args, *sys.argv[5:6])
