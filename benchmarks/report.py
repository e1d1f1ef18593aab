"""ARN against the regressors a user would pick instead, on the same data, in one process.

``python benchmarks/report.py [--n 20000] [--d 16] [--m 64] [--skip NAME ...]``
prints, for each model as it finishes, the test R^2 and the fit and predict
times as ratios to ARN's, then the BLAS-efficiency ratio of the ARN
accumulation (see ``efficiency.py``). Peers that are not installed or fail are
listed as "not available: <reason>"; LightGBM comes with the ``benchmark``
extra (``pip install ".[benchmark]"``).

Expected run time at the defaults on 2 cores: 2 minutes on a quiet machine, up to 7
under load, most of it the MLP (two hidden layers of 128, early stopping) and the learned anchors
(``ARNRegressor(solver="lbfgs", max_iter=30)`` and 16 anchors by Gauss-Newton with
early stopping, about a minute each);
``--skip MLPRegressor`` leaves the MLP out. The time of each row is printed as
it ends.

linear-tree (``LinearTreeRegressor``) is not a peer: its last release (0.3.5,
2022) calls ``BaseEstimator._validate_data``, which scikit-learn 1.6 removed,
so it fails to fit with the scikit-learn this package needs; LightGBM's
``linear_tree=True`` is the model-tree peer instead.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arn_benchmarks.common import make_data  # noqa: E402
from efficiency import measure  # noqa: E402
from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: E402
from sklearn.kernel_approximation import Nystroem  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.neighbors import KNeighborsRegressor  # noqa: E402
from sklearn.neural_network import MLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from arn_sklearn import ARNRegressor  # noqa: E402

LBFGS_ITER = 30


def peers(m, seed=0):
    """(name, factory) pairs; a factory may raise ImportError."""

    def lightgbm(linear_tree):
        def make():
            from lightgbm import LGBMRegressor

            return LGBMRegressor(linear_tree=linear_tree, verbose=-1, random_state=seed)

        return make

    return [
        ("ARN dense", lambda: ARNRegressor(n_anchors=m, random_state=seed)),
        ("ARN top_k=4", lambda: ARNRegressor(n_anchors=m, top_k=4, random_state=seed)),
        (
            # 30 L-BFGS iterations (about 2.5 s each at the defaults) keep the
            # report within minutes; the default max_iter=200 takes about 8.
            f"ARN lbfgs ({LBFGS_ITER} it.)",
            lambda: ARNRegressor(
                n_anchors=m, solver="lbfgs", max_iter=LBFGS_ITER, random_state=seed
            ),
        ),
        (
            # Variable projection by Gauss-Newton steps: tens of iterations, stopped
            # on the validation score (see docs/user_guide/learned.md).
            "ARN gauss_newton (16)",
            lambda: ARNRegressor(
                n_anchors=16, solver="gauss_newton", early_stopping=True, random_state=seed
            ),
        ),
        ("Ridge", lambda: Ridge(alpha=1.0)),
        ("KNeighborsRegressor", lambda: KNeighborsRegressor(n_neighbors=10)),
        (
            "Nystroem(500)+Ridge",
            lambda: make_pipeline(Nystroem(n_components=500, random_state=seed), Ridge(1e-3)),
        ),
        (
            "MLPRegressor",
            lambda: MLPRegressor(
                hidden_layer_sizes=(128, 128), early_stopping=True, random_state=seed
            ),
        ),
        ("HistGradientBoosting", lambda: HistGradientBoostingRegressor(random_state=seed)),
        ("LightGBM", lightgbm(False)),
        ("LightGBM linear_tree", lightgbm(True)),
    ]


def run(n, d, m, skip=()):
    X, y, X_test, y_test = make_data(n, d)
    print(f"data: n_train={n}, n_test={len(y_test)}, d={d}; ARN n_anchors={m}")
    print("2-7 minutes at the defaults on 2 cores (most of it the MLP and learned anchors)")
    print("rows print as they end\n")
    header = ("test R2", "fit s", "fit/ARN", "pred s", "pred/ARN")
    print(f"{'model':24s} " + " ".join(f"{h:>8s}" for h in header), flush=True)
    ref = None
    start = time.perf_counter()
    for name, factory in peers(m):
        if name in skip:
            continue
        try:
            model = factory()
            tic = time.perf_counter()
            model.fit(X, y)
            fit_s = time.perf_counter() - tic
            tic = time.perf_counter()
            y_pred = model.predict(X_test)
            pred_s = time.perf_counter() - tic
        except Exception as exc:  # report any peer that cannot run, and go on
            print(f"{name:24s} not available: {type(exc).__name__}: {exc}", flush=True)
            continue
        ss_res = ((y_test - y_pred) ** 2).sum()
        r2 = 1 - ss_res / ((y_test - y_test.mean()) ** 2).sum()
        ref = ref or (fit_s, pred_s)  # ARN dense, the first row
        print(
            f"{name:24s} {r2:8.4f} {fit_s:8.3f} {fit_s / ref[0]:8.3g} "
            f"{pred_s:8.4f} {pred_s / ref[1]:8.3g}   [{time.perf_counter() - start:5.0f} s]",
            flush=True,
        )
    eff = measure(n, m, d)
    print(
        f"\nBLAS efficiency (n={n}, m={m}, d={d}, p={eff['p']}): accumulation "
        f"{eff['accumulate_s']:.3f} s vs one float64 dsyrk {eff['syrk_s']:.3f} s "
        f"= {eff['efficiency']:.0%} of BLAS throughput"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument(
        "--skip", nargs="*", default=(), metavar="NAME", help="model names to leave out"
    )
    args = parser.parse_args()
    if "ARN dense" in args.skip:
        parser.error("ARN dense is the reference of the ratios; it cannot be skipped")
    run(args.n, args.d, args.m, set(args.skip))
