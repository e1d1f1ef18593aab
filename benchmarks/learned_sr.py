"""Learned anchors on x3 super-resolution: whole-image PSNR against the closed form and Adam.

Issue 21's target: at 16 anchors, ``similarity="absdot"`` and the spherical
KMeans start, a learned solver (``"lbfgs"`` or ``"gauss_newton"``) reaches the
closed form's held-out PSNR + 0.10 dB in at most twice the time of 10 Adam
epochs, same run. Every model is an :class:`~arn_sklearn.ARNRegressor` inside
:class:`~arn_sklearn.superres.SuperResolver` (the A+ pipeline that
``arn-superres`` trains: unit-norm PCA gradient features, targets divided by
the same norm, residual patches averaged where they overlap), fitted on the
same training patches of ``TRAIN_IMAGES`` and scored as ``arn-superres
benchmark`` scores: mean PSNR on the Y channel of ``TEST_IMAGES``, 3 pixels
shaved. Rows:

- ``closed form``: the spherical KMeans anchors (``anchors="kmeans"``, which
  is sign-invariant spherical KMeans for ``absdot``) and the auto softness;
- ``adam, E epochs``: anchors and regressors trained together from that
  closed form (batch 1000, rate 1e-3), with the machine's BLAS threads and,
  for the first ``E``, also on one BLAS thread; the faster of those two is
  the time reference;
- each learned solver of ``--solvers``, from the same start, with
  ``early_stopping`` (10% of the patches held out; ``--no-early-stopping``:
  none) and ``--max-iter``;
  with ``--subsample N`` also the schedule "learn the anchors on N random
  patches, then the closed form of those anchors on all patches" (the times
  of both fits summed);
  with ``--components R`` (default 16; 0: none) also
  :class:`target_components.TargetComponentsARN`: L-BFGS learns the anchors
  on the leading R principal components of the (normalised, weighted)
  residual targets, then the closed form of those anchors fits all 81
  targets, once per step cap of ``--component-iters``.

The fit time of each row is the whole ``fit_patches`` (start included). The
load average is printed before each model; ratios are taken in one run.

Adam's time is the most load-sensitive of all (threaded BLAS on 1000-row
batches): 10 epochs on 40,000 patches took 4.3 s at load 0.9 and 21-36 s at
load 5-6 while L-BFGS's single-threaded evaluations slowed far less; compare
ratios from quiet runs only.

    python benchmarks/learned_sr.py [--max-patches 5000] [--anchors 16] [--alpha 0.1]
        [--epochs 10,30] [--solvers lbfgs,gauss_newton] [--max-iter 50] [--subsample 10000]
        [--components 16] [--component-iters 6,12] [--patch-weights contrast] [--seed 0]
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from arn_sklearn import ARNRegressor
from arn_sklearn.superres import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    SuperResolver,
    build_training_set,
    degrade,
    load_skimage_images,
    luminance,
    modcrop,
    psnr,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from target_components import TargetComponentsARN  # noqa: E402

SCALE = 3
# The target: the learned solver's margin over the closed form, and
# its time in units of the Adam reference.
TARGET_GAIN_DB = 0.10
TARGET_TIME_RATIO = 2.0


def mean_psnr(model, tests):
    """Mean PSNR (Y, ``SCALE`` pixels shaved) of ``model`` on the HR ``tests``."""
    values = []
    for image in tests.values():
        hr = modcrop(luminance(image), SCALE)
        lr, _ = degrade(hr, SCALE)
        values.append(psnr(hr, np.clip(model.upscale_y(lr), 0, 1), border=SCALE))
    return float(np.mean(values))


def fit(regressor, features, X, Y, patch_weights, blas_threads=None):
    """A ``SuperResolver`` around ``regressor`` fitted on the prepared patches; its seconds."""
    model = SuperResolver(regressor, scale=SCALE, patch_weights=patch_weights)
    with warnings.catch_warnings(), threadpool_limits(blas_threads, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        tic = time.perf_counter()
        model.fit_patches(features, X, Y)
    return model, time.perf_counter() - tic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-patches", type=int, default=5000, help="per training image")
    parser.add_argument("--anchors", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument(
        "--epochs",
        default="10",
        help="Adam rows (comma-separated epoch counts); the first is the time reference",
    )
    parser.add_argument(
        "--solvers", default="lbfgs", help="learned on all patches (comma-separated; '' none)"
    )
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument(
        "--tol",
        type=float,
        default=1e-4,
        help="of the learned solvers (relative to an objective that is mostly noise here)",
    )
    parser.add_argument(
        "--subsample",
        default="",
        help="comma-separated patch counts: also learn on that many, then the closed form on all",
    )
    parser.add_argument(
        "--subsample-solvers", default="lbfgs,gauss_newton", help="learned on the subsamples"
    )
    parser.add_argument(
        "--components",
        type=int,
        default=16,
        help="also learn on this many leading target components, then the closed form (0: no)",
    )
    parser.add_argument(
        "--component-iters",
        default="6,12",
        help="comma-separated L-BFGS step caps of the --components rows",
    )
    parser.add_argument(
        "--no-early-stopping",
        action="store_true",
        help="learned solvers run --max-iter iterations on all their rows (no validation split)",
    )
    parser.add_argument("--patch-weights", default="contrast", choices=("uniform", "contrast"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = [int(e) for e in args.epochs.split(",")]

    tic = time.perf_counter()
    features, X, Y = build_training_set(
        list(load_skimage_images(TRAIN_IMAGES).values()),
        SCALE,
        max_patches_per_image=args.max_patches,
        random_state=args.seed,
    )
    tests = load_skimage_images(TEST_IMAGES)
    print(
        f"{X.shape[0]} training patches, {X.shape[1]} PCA dims, {Y.shape[1]} targets "
        f"(features in {time.perf_counter() - tic:.1f} s); {args.anchors} anchors, absdot, "
        f"alpha={args.alpha}, patch_weights={args.patch_weights}"
    )
    common = dict(similarity="absdot", alpha=args.alpha, anchors="kmeans", random_state=args.seed)
    rows = []  # (label, PSNR, seconds, iterations, load, learned?)
    stopping = "" if args.no_early_stopping else ", early stopping"

    def report(label, model, seconds, n_iter, load, is_learned=True):
        value = mean_psnr(model, tests)
        rows.append((label, value, seconds, n_iter, load, is_learned))
        regressor = model.regressor_
        print(
            f"{label}: {value:.3f} dB, fit {seconds:.1f} s, {n_iter} iterations, "
            f"K={regressor.softness_:.3g}, load {load:.1f}",
            flush=True,
        )

    def learned(solver, max_iter=args.max_iter, early_stopping=not args.no_early_stopping):
        return ARNRegressor(
            args.anchors,
            solver=solver,
            early_stopping=early_stopping,
            max_iter=max_iter,
            tol=args.tol,
            **common,
        )

    def then_closed_form(label, sub_model, first, load, Y_all=Y):
        """The closed form of ``sub_model``'s learned anchors on all patches and targets."""
        regressor = sub_model.regressor_
        closed = ARNRegressor(
            args.anchors, softness=regressor.softness_, **dict(common, anchors=regressor.anchors_)
        )
        model, second = fit(closed, features, X, Y_all, args.patch_weights)
        report(label, model, first + second, regressor.n_iter_, load)

    runs = [("closed form", ARNRegressor(args.anchors, **common), False, None)]
    for index, count in enumerate(epochs):
        adam = ARNRegressor(args.anchors, solver="adam", max_iter=count, tol=0, **common)
        runs.append((f"adam, {count} epochs", adam, False, None))
        if index == 0:
            # Threaded BLAS on 1000-row batches is what a shared machine slows
            # most (10 epochs: 31 s threaded, 11 s on one thread, at load 8.5).
            runs.append((f"adam, {count} epochs, one BLAS thread", clone(adam), False, 1))
    for solver in filter(None, args.solvers.split(",")):
        runs.append((f"{solver}{stopping}", learned(solver), True, None))
    for label, regressor, is_learned, blas_threads in runs:
        load = os.getloadavg()[0]
        model, seconds = fit(regressor, features, X, Y, args.patch_weights, blas_threads)
        n_iter = getattr(model.regressor_, "n_iter_", 1)
        report(label, model, seconds, n_iter, load, is_learned)
    for cap in (int(c) for c in filter(None, args.component_iters.split(","))):
        if not args.components:
            break
        regressor = TargetComponentsARN(args.anchors, args.components, cap, **common)
        load = os.getloadavg()[0]
        model, seconds = fit(regressor, features, X, Y, args.patch_weights)
        report(
            f"lbfgs, {cap} steps on the top {args.components} target components, "
            "then the closed form on all",
            model,
            seconds,
            model.regressor_.n_iter_,
            load,
        )
    rng = np.random.RandomState(args.seed)
    for count in (int(c) for c in filter(None, args.subsample.split(","))):
        rows_sub = rng.choice(X.shape[0], min(count, X.shape[0]), replace=False)
        for solver in filter(None, args.subsample_solvers.split(",")):
            load = os.getloadavg()[0]
            sub_model, first = fit(
                learned(solver), features, X[rows_sub], Y[rows_sub], args.patch_weights
            )
            then_closed_form(
                f"{solver}{stopping} on {rows_sub.size} patches, then the closed form on all",
                sub_model,
                first,
                load,
            )

    closed, adam = rows[0], min(rows[1:3], key=lambda row: row[2])
    print()
    print(f"time reference: {adam[0]}")
    print("| model | mean PSNR (dB) | gain (dB) | fit s | time / Adam's | iterations | load |")
    print("|---|---|---|---|---|---|---|")
    for label, value, seconds, n_iter, load, _ in rows:
        print(
            f"| {label} | {value:.3f} | {value - closed[1]:+.3f} | {seconds:.1f} | "
            f"{seconds / adam[2]:.2f} | {n_iter} | {load:.1f} |"
        )
    learned_rows = [row for row in rows if row[5]]
    if learned_rows:
        in_time = [row for row in learned_rows if row[2] <= TARGET_TIME_RATIO * adam[2]]
        best = max(in_time or learned_rows, key=lambda row: row[1])
        met = best[1] - closed[1] >= TARGET_GAIN_DB and best[2] <= TARGET_TIME_RATIO * adam[2]
        print(
            f"\nbest learned{' in time' if in_time else ''}: {best[0]}: "
            f"{best[1] - closed[1]:+.3f} dB over the closed form in "
            f"{best[2] / adam[2]:.2f}x the time of {epochs[0]} Adam epochs (target: "
            f"+{TARGET_GAIN_DB} dB in {TARGET_TIME_RATIO}x): {'met' if met else 'not met'}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
