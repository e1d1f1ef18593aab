"""Learned anchors against scikit-learn's MLP: test error and fit time, same run.

Per task, the test error and fit time of ``ARNRegressor(solver="gauss_newton")``
with its defaults (``alpha="auto"``: the penalty chosen on held-out rows) with
and without ``early_stopping``, with early stopping at a fixed ``--alpha``
(default 1, the previous default, which over-smooths the near-noiseless arm:
test MSE 0.00120 against 0.00013 with the chosen penalty, 16 anchors), and,
with ``--lbfgs``, of ``solver="lbfgs"`` against ``MLPRegressor`` with
``early_stopping=True`` at (128, 128) and (256, 256) hidden units; the ratios
are to the MLP with the lower test error. Every model is fitted behind a
``StandardScaler`` on the inputs and the targets (``TransformedTargetRegressor``),
each with its own threading (the MLP: the machine's BLAS threads; Gauss-Newton:
one BLAS thread per pass, each pass's row chunks over Python threads). On more
than 12,000 training rows Gauss-Newton learns coarse to fine (6,000 rows, then one
step on all; ``SCHEDULES`` in ``arn_sklearn/_learning/_training.py``).
The load average is printed before each model: on a shared machine it moves
the times more than the code does. Tasks:

- ``report``: the data of ``benchmarks/report.py`` (a smooth target of four
  projections of a 16-d Gaussian), n = 20,000;
- ``friedman``: ``make_friedman1`` (10 inputs, noise 1), n = 20,000;
- ``arm``: the demo's forward kinematics of a 4-joint arm (8 outputs), n = 20,000;
- ``sr``: x3 super-resolution patches (A+ pipeline of :mod:`arn_sklearn.superres`):
  PCA gradient features of the mid-resolution patches -> the 81 residual pixels;
  ``n`` random training patches from ``TRAIN_IMAGES``, ``N_TEST`` held-out patches
  from ``TEST_IMAGES`` (other images). Every model sees what ``SuperResolver`` gives
  its regressor (:class:`PatchNormalised`): unit-norm features, targets divided by
  the same norm, predictions multiplied back. ARN is configured as ``arn-superres``
  does (``similarity="absdot"``, ``alpha=0.1``, no scaler: the unit-norm features
  are its geometry, and unscaled targets weigh the pixels as the PSNR does), from
  the spherical KMeans start (``anchors="kmeans"``): the closed form at 16 and 64
  anchors; at ``--anchors``, the closed form with contrast weights and the learned
  row, L-BFGS on the top 16 target components then the closed form on all
  (``target_components.TargetComponentsARN``, same weights; ``--sr-solvers``: also
  solvers on all targets with early stopping); the MLPs get the scalers as
  everywhere else. The line also gives the held-out patch PSNR,
  ``10 log10(1 / MSE)`` (pixels in [0, 1]; not whole-image PSNR, no overlap
  averaging; whole images: ``benchmarks/learned_sr.py``).

    python benchmarks/learned_vs_mlp.py [--n 20000] [--tasks report,friedman,arm,sr]
        [--anchors 16] [--alpha 1] [--lbfgs] [--skip-mlp] [--efficiency]
        [--sr-solvers lbfgs] [--one-blas-thread]

Prints one line per model as it finishes, then a Markdown table: wall-clock fit time
and the process's CPU time (all its threads). On a shared machine the wall ratio
follows the load more than the code (an MLP with multithreaded BLAS took 232 s at load
5.5 where it takes 8.5 s alone); ``--one-blas-thread`` fits every model under one BLAS
thread, so that the CPU-time ratio compares the work done. With
``--efficiency``, first, for each task but ``sr``, the time of one Gauss-Newton
step's two passes over its ``n`` rows (the closed form at the trial point; the
Jacobian pass) against the BLAS time of the same products on arrays of the same
shapes (best of 5, same run, one BLAS thread): the similarity GEMM, the lifted
block's ``syrk`` and ``Z^T [Y, 1]``; ``B^T B`` (``syrk``), ``Z^T B`` and ``B^T r``;
where a pass sums through anchor pairs (``arn_sklearn/_kernels/_moments.py``), its
GEMMs of pair products against quadratic features instead, and the pass forced to
the lifted form, alternating in the same run (the ratio of the two forms).
"""

import argparse
import os
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from arn_benchmarks.common import make_data  # noqa: E402
from target_components import TargetComponentsARN  # noqa: E402

from arn_sklearn import ARNRegressor  # noqa: E402
from arn_sklearn.demo import make_arm  # noqa: E402
from arn_sklearn.superres import (  # noqa: E402
    TEST_IMAGES,
    TRAIN_IMAGES,
    build_training_set,
    degrade,
    extract_patches,
    gradient_patch_features,
    load_skimage_images,
    luminance,
    modcrop,
)
from arn_sklearn.superres._aplus import normalise_rows, target_scales  # noqa: E402

N_TEST = 5000
# ARN's ridge penalty on the SR task: A+'s lambda, the arn-superres default.
SR_ALPHA = 0.1


class PatchNormalised(RegressorMixin, BaseEstimator):
    """What ``SuperResolver`` does around its regressor, for raw patch rows.

    Features divided by their norm, targets by the same norm (A+'s flat-patch
    rule), predictions multiplied by the norm. ``patch_weights="contrast"``
    weighs each row by its feature norm (``SuperResolver``'s option).
    """

    def __init__(self, regressor, patch_weights="uniform"):
        self.regressor = regressor
        self.patch_weights = patch_weights

    def fit(self, X, Y):
        X, norms = normalise_rows(X)
        fit_params = {"sample_weight": norms} if self.patch_weights == "contrast" else {}
        self.regressor_ = clone(self.regressor).fit(
            X, Y / target_scales(norms)[:, None], **fit_params
        )
        return self

    def predict(self, X):
        X, norms = normalise_rows(X)
        return self.regressor_.predict(X) * norms[:, None]


def sr_models(n_anchors, skip_mlp, solvers=(), seed=0, component_iters=(12,)):
    """``(label, factory)`` of the sr task's models (each already wrapped).

    The learned rows: :class:`target_components.TargetComponentsARN` (L-BFGS,
    each cap of ``component_iters`` steps on the top 16 target components, no
    early stopping, then the closed form on all 81 targets) with contrast
    weights, next to the closed form with the same weights; and with
    ``solvers`` each of them on all targets with early stopping (which kept
    its start on these patches in every run so far). Gauss-Newton is not a
    default: with 81 outputs its Jacobian pass costs ``n t q^2`` (q = 384
    anchor coordinates), 13 s a step on 4,500 rows.
    """
    common = dict(similarity="absdot", alpha=SR_ALPHA, anchors="kmeans", random_state=seed)
    out = [
        (
            f"ARN closed form m={m}, absdot",
            lambda m=m: PatchNormalised(ARNRegressor(m, **common)),
        )
        for m in sorted({16, 64, n_anchors})
    ]
    out.append(
        (
            f"ARN closed form m={n_anchors}, absdot, contrast weights",
            lambda: PatchNormalised(ARNRegressor(n_anchors, **common), "contrast"),
        )
    )
    for cap in component_iters:
        out.append(
            (
                f"ARN lbfgs m={n_anchors}, {cap} steps on 16 target components, "
                "then closed form, contrast weights",
                lambda cap=cap: PatchNormalised(
                    TargetComponentsARN(n_anchors, 16, cap, **common), "contrast"
                ),
            )
        )
    for solver in solvers:
        out.append(
            (
                f"ARN {solver} m={n_anchors}, absdot, early_stopping",
                lambda solver=solver: PatchNormalised(
                    ARNRegressor(n_anchors, solver=solver, early_stopping=True, **common)
                ),
            )
        )
    if not skip_mlp:
        out += [
            (label, lambda factory=factory: PatchNormalised(scaled(factory())))
            for label, factory in models(n_anchors, False, False, None, seed)
            if label.startswith("MLP")
        ]
    return out


def sr_data(n, seed=0, scale=3):
    """x3 patch features and residual targets: ``n`` training, ``N_TEST`` held-out rows."""
    train = list(load_skimage_images(TRAIN_IMAGES).values())
    test = list(load_skimage_images(TEST_IMAGES).values())
    features, X, Y = build_training_set(
        train, scale=scale, max_patches_per_image=-(-n // len(train)), random_state=seed
    )
    rng = np.random.RandomState(seed)
    keep = rng.choice(len(X), min(n, len(X)), replace=False)
    raws, targets = [], []
    for image in test:
        hr = modcrop(luminance(image), scale)
        _, mid = degrade(hr, scale)
        raws.append(gradient_patch_features(mid, scale))
        targets.append(extract_patches(hr - mid, scale))
    X_test, Y_test = features.transform_raw(np.vstack(raws)), np.vstack(targets)
    test_rows = rng.choice(len(X_test), min(N_TEST, len(X_test)), replace=False)
    return X[keep], Y[keep], X_test[test_rows], Y_test[test_rows]


def task_data(name, n, seed=0):
    """``X, Y, X_test, Y_test`` of a task."""
    if name == "sr":
        return sr_data(n, seed)
    if name == "report":
        X, y, X_test, y_test = make_data(n + N_TEST, 16, seed)
        X, y = np.vstack([X, X_test]), np.concatenate([y, y_test])
    elif name == "friedman":
        X, y = make_friedman1(n + N_TEST, noise=1.0, random_state=seed)
    elif name == "arm":
        X, y = make_arm(n + N_TEST, random_state=seed)
    else:
        raise ValueError(f"unknown task {name!r}")
    return X[:n], y[:n], X[n : n + N_TEST], y[n : n + N_TEST]


def scaled(model):
    """Inputs and targets standardised, as a user would for an MLP."""
    return TransformedTargetRegressor(
        regressor=make_pipeline(StandardScaler(), model), transformer=StandardScaler()
    )


def models(n_anchors, lbfgs, skip_mlp, alpha=None, seed=0):
    """``(label, factory)`` of every model: ARN first, then the MLPs."""
    out = [
        (
            f"ARN gauss_newton m={n_anchors}, early_stopping",
            lambda: ARNRegressor(
                n_anchors, solver="gauss_newton", early_stopping=True, random_state=seed
            ),
        ),
        (
            f"ARN gauss_newton m={n_anchors}",
            lambda: ARNRegressor(n_anchors, solver="gauss_newton", random_state=seed),
        ),
    ]
    if alpha is not None:
        out.append(
            (
                f"ARN gauss_newton m={n_anchors}, early_stopping, alpha={alpha:g}",
                lambda: ARNRegressor(
                    n_anchors,
                    solver="gauss_newton",
                    early_stopping=True,
                    alpha=alpha,
                    random_state=seed,
                ),
            )
        )
    if lbfgs:
        out.append(
            (
                f"ARN lbfgs m={n_anchors}",
                lambda: ARNRegressor(n_anchors, solver="lbfgs", random_state=seed),
            )
        )
    if not skip_mlp:
        for hidden in ((128, 128), (256, 256)):
            out.append(
                (
                    f"MLP {hidden}",
                    lambda hidden=hidden: MLPRegressor(
                        hidden_layer_sizes=hidden,
                        early_stopping=True,
                        max_iter=500,
                        random_state=seed,
                    ),
                )
            )
    return out


def run_task(name, n, n_anchors, lbfgs, skip_mlp, alpha=None, sr_solvers=(), one_thread=False):
    X, Y, X_test, Y_test = task_data(name, n)
    rows = []
    if name == "sr":
        factories = sr_models(n_anchors, skip_mlp, sr_solvers)
    else:
        factories = [
            (label, lambda f=f: scaled(f()))
            for label, f in models(n_anchors, lbfgs, skip_mlp, alpha)
        ]
    for label, factory in factories:
        model = factory()
        load = os.getloadavg()[0]
        with warnings.catch_warnings(), blas_limit(one_thread):
            warnings.simplefilter("ignore", ConvergenceWarning)
            tic, cpu = time.perf_counter(), time.process_time()
            model.fit(X, Y)
            seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
        mse = float(np.mean((model.predict(X_test) - Y_test) ** 2))
        n_iter = getattr(_final_estimator(model), "n_iter_", "")
        rows.append((label, mse, seconds, n_iter, cpu))
        # Residual pixels in [0, 1]: the patch MSE gives a (patch) PSNR directly.
        psnr = f", patch PSNR {10 * np.log10(1 / mse):.3f} dB" if name == "sr" else ""
        print(
            f"{name}: {label}: test MSE {mse:.5g}{psnr}, fit {seconds:.2f} s "
            f"(CPU {cpu:.2f} s), n_iter {n_iter}, load {load:.1f}"
        )
        sys.stdout.flush()
    return rows


def blas_limit(one_thread):
    """One BLAS thread for the block when ``one_thread``, else the machine's threads."""
    return threadpool_limits(limits=1, user_api="blas") if one_thread else nullcontext()


def _final_estimator(model):
    """The ARN or MLP inside the wrappers."""
    while hasattr(model, "regressor_"):
        model = model.regressor_
    return model[-1] if hasattr(model, "steps") else model


def efficiency(n, n_anchors, task="report", repeats=5):
    """Seconds of each pass of a step and of its BLAS products, best of ``repeats``.

    On ``n`` rows of ``task`` (inputs and targets standardised, as the fits see
    them), random anchors, softness 0.5.
    """
    from array_api_compat import array_namespace
    from scipy.linalg.blas import dsyrk
    from threadpoolctl import threadpool_limits

    from arn_sklearn._kernels._lifting import lift
    from arn_sklearn._kernels._moments import n_symmetric_pairs
    from arn_sklearn._kernels._parametrisation import _Parametrisation
    from arn_sklearn._learning._gauss_newton import (
        _Point,
        chunk_rows,
        jacobian_in_pairs,
        jacobian_pass,
    )
    from arn_sklearn._learning._varpro import closed_form_in_pairs

    xp = array_namespace(np.empty(0))
    X, Y, _, _ = task_data(task, n)
    X = StandardScaler().fit_transform(X)
    Y = StandardScaler().fit_transform(np.asarray(Y).reshape(n, -1))
    n_features, n_targets = X.shape[1], Y.shape[1]
    w = np.ones(n)
    anchors = X[np.random.RandomState(0).choice(n, n_anchors, replace=False)]
    params = _Parametrisation(anchors.shape, 0.5, "euclidean", learn_softness=True)
    theta = params.pack(anchors, 0.5)
    rows = chunk_rows(n_anchors, n_features, n_targets, theta.size)
    best = {}

    def timed(key, f):
        tic = time.perf_counter()
        out = f()
        best[key] = min(best.get(key, np.inf), time.perf_counter() - tic)
        return out

    Z = np.ascontiguousarray(lift(X, np.full((n, n_anchors), 1.0 / n_anchors), xp))
    B = np.random.RandomState(1).normal(size=(n * n_targets, theta.size))
    Y1 = np.hstack([Y, np.ones((n, 1))])
    # The pair form's GEMMs (rows last): anchor-pair products against quadratic features.
    pairs = {
        "closed-form pass": closed_form_in_pairs(n_anchors, n_features),
        "Jacobian pass": jacobian_in_pairs(
            n_anchors, n_features, n_targets, theta.size, "euclidean"
        ),
    }
    n_pairs, n_quadratic = n_symmetric_pairs(n_anchors), n_symmetric_pairs(n_features + 1)
    rng = np.random.RandomState(2)
    own, quadratic = rng.normal(size=(n_pairs, n)), rng.normal(size=(n_quadratic, n))
    cross = rng.normal(size=(n_anchors * n_anchors * n_targets, n))
    # One BLAS thread for both sides: on a shared machine thread contention,
    # not the code, decided the ratio otherwise (0.4 to 1.7 in two runs).
    limit = threadpool_limits(limits=1, user_api="blas")
    for _ in range(repeats):
        # Each pass as the fit runs it, then forced to the lifted form (where the
        # fit uses the pair form), alternating.
        for suffix in ("", " (lifted form)") if any(pairs.values()) else ("",):
            with lifted_form() if suffix else nullcontext():
                p = timed(
                    "closed-form pass" + suffix,
                    lambda: _Point(theta, params, X, Y, w, "euclidean", 1.0, xp, rows),
                )
                timed(
                    "Jacobian pass" + suffix,
                    lambda p=p: jacobian_pass(
                        *(X, Y, w, p.anchors, p.softness, "euclidean", p.W, p.y_mean, p.kept),
                        *(rows, params, xp),
                    ),
                )
        if pairs["closed-form pass"]:
            timed("BLAS of the closed-form pass", lambda: (X @ anchors.T, own @ quadratic.T))
        else:
            timed(
                "BLAS of the closed-form pass", lambda: (X @ anchors.T, dsyrk(1.0, Z.T), Z.T @ Y1)
            )
        if pairs["Jacobian pass"]:
            timed("BLAS of the Jacobian pass", lambda: (cross @ quadratic.T, own @ quadratic.T))
        else:
            timed(
                "BLAS of the Jacobian pass",
                lambda: (
                    dsyrk(1.0, B.T),
                    Z.T @ B.reshape(n, n_targets * theta.size),
                    B.T @ B[:, 0],
                ),
            )
    limit.restore_original_limits()
    print(
        f"{task}: one Gauss-Newton step (one BLAS thread), n={n}, d={n_features}, "
        f"t={n_targets}, m={n_anchors}, {theta.size} unknowns:"
    )
    for key, value in best.items():
        print(f"  {key}: {value:.4f} s")
    for name in ("closed-form pass", "Jacobian pass"):
        form = "pair form" if pairs[name] else "lifted form"
        print(f"  {name} / its BLAS ({form}): {best[name] / best['BLAS of the ' + name]:.2f}")
        if pairs[name]:
            ratio = best[name] / best[name + " (lifted form)"]
            print(f"  {name}, pair form / lifted form: {ratio:.2f}")


@contextmanager
def lifted_form():
    """The learned passes forced to sum through the lifted block (the form before the
    anchor-pair sums; internal names, a development measure)."""
    from arn_sklearn._learning import _gauss_newton, _varpro

    saved = _gauss_newton.pair_form_pays, _varpro.pair_form_pays
    _gauss_newton.pair_form_pays = _varpro.pair_form_pays = lambda *args: False
    try:
        yield
    finally:
        _gauss_newton.pair_form_pays, _varpro.pair_form_pays = saved


def table(results):
    lines = [
        "| task | model | test MSE | fit s | CPU s | iterations | MSE / MLP's | time / MLP's "
        "| CPU / MLP's |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, rows in results.items():
        mlps = [r for r in rows if r[0].startswith("MLP")]
        best = min(mlps, key=lambda r: r[1]) if mlps else None
        for label, mse, seconds, n_iter, cpu in rows:
            if best is None or label.startswith("MLP"):
                ratios = ("", "", "")
            else:
                ratios = (
                    f"{mse / best[1]:.2f}",
                    f"{seconds / best[2]:.2f}",
                    f"{cpu / best[4]:.2f}",
                )
            lines.append(
                f"| {task} | {label} | {mse:.4g} | {seconds:.1f} | {cpu:.1f} | {n_iter} | "
                f"{ratios[0]} | {ratios[1]} | {ratios[2]} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--tasks", default="report,friedman,arm")
    parser.add_argument("--anchors", type=int, default=16)
    parser.add_argument("--lbfgs", action="store_true", help="also solver='lbfgs'")
    parser.add_argument("--skip-mlp", action="store_true")
    parser.add_argument("--efficiency", action="store_true")
    parser.add_argument(
        "--one-blas-thread",
        action="store_true",
        help="fit every model under one BLAS thread (compare CPU times on a busy machine)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="also Gauss-Newton with early stopping at this fixed ridge penalty (0: no such row)",
    )
    parser.add_argument(
        "--sr-solvers",
        default="",
        help="also these learned solvers on all sr targets, early stopping (e.g. lbfgs)",
    )
    args = parser.parse_args(argv)
    if args.efficiency:
        for name in args.tasks.split(","):
            if name != "sr":
                efficiency(args.n, args.anchors, name)
    results = {}
    for name in args.tasks.split(","):
        results[name] = run_task(
            name,
            args.n,
            args.anchors,
            args.lbfgs,
            args.skip_mlp,
            args.alpha or None,
            tuple(filter(None, args.sr_solvers.split(","))),
            args.one_blas_thread,
        )
    print()
    print(table(results))


if __name__ == "__main__":
    main()
