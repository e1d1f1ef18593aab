"""Super-resolution with many anchors on two cores: top-k ARN against the dense model.

Issue-19 target: ARN with 1024 anchors and ``top_k`` trains on the CLI's
default training set (the scikit-image training photographs, 20,000 random
patches each, x3) in under 60 s on the 2-core CPU, with a held-out PSNR at
least that of the dense model with 256 anchors whose alpha ``ARNRegressorCV``
chooses. Every model uses the CLI's features (``absdot`` on unit-norm
features, A+'s spherical anchors, auto softness); the fit time includes the
anchors. Each run is ``ANCHORS[:TOPK][:WEIGHTS][:ALPHA]``: ``TOPK`` a number or
``dense``, ``WEIGHTS`` ``uniform`` (A+) or ``contrast`` (training patches
weighted by their feature norm, ``SuperResolver(patch_weights="contrast")``),
``ALPHA`` a number, ``cv`` (``ARNRegressorCV`` over ``--alphas``, 3 folds, R^2
in the regressor's normalised units) or ``cvmse`` (the same on its weighted
mean squared error). Each row gives the fit's stages (anchors, softness,
accumulation, solve: the solver and its CG iterations) and its CPU time next
to the wall time, since the 2-core machine is shared: on a quiet machine the
wall time is about the CPU time over the cores in use.

    python benchmarks/superres_topk.py        # the table of docs/benchmarks.md
    python benchmarks/superres_topk.py --runs 64:dense:uniform:0.1 256:4:contrast:0.1 \\
        --max-patches 2000
"""

import argparse
import contextlib
import io
import os
import re
import time

import numpy as np
from superres_table5 import evaluate

from arn_sklearn import ARNRegressor, ARNRegressorCV
from arn_sklearn.superres import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    SuperResolver,
    aplus_anchors,
    build_training_set,
    load_skimage_images,
)

DEFAULT_RUNS = (
    "256:dense:contrast:cv",
    "256:dense:contrast:cvmse",
    "256:4:contrast:0.1",
    "1024:4:contrast:0.1",
    "1024:4:contrast:0.3",
)


def parse_run(text):
    """``"1024:4:contrast:0.1"`` -> (1024, 4, "contrast", 0.1); defaults dense, uniform, 0.1."""
    parts = text.split(":")
    parts += ["dense", "uniform", "0.1"][len(parts) - 1 :]
    n_anchors, top_k, weights, alpha = parts
    if weights not in ("uniform", "contrast"):
        raise argparse.ArgumentTypeError(f"weights must be uniform or contrast, not {weights!r}")
    return (
        int(n_anchors),
        None if top_k == "dense" else int(top_k),
        weights,
        alpha if alpha in ("cv", "cvmse") else float(alpha),
    )


def fit(run, features, X, Y, scale, seed, alphas, linear_solver):
    """Anchors and the SuperResolver of one run; returns the model, stages and times."""
    n_anchors, top_k, weights, alpha = run
    tic, cpu = time.perf_counter(), time.process_time()
    anchors = aplus_anchors(X, n_anchors, random_state=seed)
    t_anchors = time.perf_counter() - tic
    common = dict(
        similarity="absdot",
        anchors=anchors,
        top_k=top_k,
        linear_solver=linear_solver if top_k else "auto",
        random_state=seed,
    )
    if alpha in ("cv", "cvmse"):
        scoring = "r2" if alpha == "cv" else "neg_mean_squared_error"
        regressor = ARNRegressorCV(n_anchors, alphas=alphas, cv=3, scoring=scoring, **common)
    else:
        regressor = ARNRegressor(n_anchors, alpha=alpha, verbose=1, **common)
    model = SuperResolver(regressor, scale=scale, patch_weights=weights)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        model.fit_patches(features, X, Y)
    times = (time.perf_counter() - tic, time.process_time() - cpu)
    return model, stages(t_anchors, log.getvalue()), times


def stages(t_anchors, log):
    """``anchors a, softness s, accumulate c, solve v (solver)`` from a verbose fit's lines."""
    softness = re.search(r"softness=\S+ in ([\d.]+) s", log)
    accumulate = re.findall(r"unknowns in ([\d.]+) s", log)
    solve = re.findall(r"solved in ([\d.]+) s(.*)", log)
    parts = [f"anchors {t_anchors:.1f}"]
    if softness:
        parts.append(f"softness {float(softness.group(1)):.1f}")
    if accumulate:
        parts.append(f"accumulate {sum(map(float, accumulate)):.1f}")
    if solve:
        note = solve[-1][1].strip()
        note = re.sub(r"; Gram rows.*in ([\d.]+) s\)", r", setup \1 s)", note)
        total = sum(float(t) for t, _ in solve)
        parts.append(f"solve {total:.1f}" + (f" {note}" if note else ""))
        if len(solve) > 1:
            parts[-1] += f" x{len(solve)} solves"
    return ", ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=parse_run, nargs="+", default=list(DEFAULT_RUNS))
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0])
    parser.add_argument(
        "--linear-solver",
        default="auto",
        choices=("auto", "dense", "sparse", "iterative"),
        help="of the top-k runs",
    )
    parser.add_argument("--max-patches", type=int, default=20_000, help="per training image")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    runs = [parse_run(r) if isinstance(r, str) else r for r in args.runs]

    train = load_skimage_images(TRAIN_IMAGES)
    tests = load_skimage_images(TEST_IMAGES)
    tic = time.perf_counter()
    features, X, Y = build_training_set(
        train.values(), args.scale, max_patches_per_image=args.max_patches, random_state=args.seed
    )
    print(
        f"{X.shape[0]} training patches, {X.shape[1]} PCA dims, {Y.shape[1]} outputs "
        f"(features in {time.perf_counter() - tic:.1f} s); test: {', '.join(tests)}"
    )
    bicubic = evaluate(None, tests, args.scale)
    rows = [("bicubic", "-", "-", "-", "-", "-", (0.0, 0.0), bicubic)]
    for run in runs:
        uptime = load_average()
        model, stage_text, times = fit(
            run, features, X, Y, args.scale, args.seed, args.alphas, args.linear_solver
        )
        scores = evaluate(model, tests, args.scale)
        reg = model.regressor_
        alpha = f"{reg.alpha_:g} ({run[3]})" if hasattr(reg, "alpha_") else f"{reg.alpha:g}"
        n_anchors, top_k, weights, _ = run
        stage_text += f"; load {uptime}"
        row = ("ARN", n_anchors, top_k or "dense", weights, alpha, stage_text, times, scores)
        rows.append(row)
        print(
            f"  ARN ({n_anchors}) top_k={top_k or 'dense'} {weights} alpha={alpha}: "
            f"{np.mean(list(scores.values())):.3f} dB, fit {times[0]:.1f} s "
            f"(CPU {times[1]:.1f} s; {stage_text})",
            flush=True,
        )

    names = list(tests)
    print(
        "\n| model | anchors | top_k | patch weights | alpha | stages (s) | "
        "fit incl. anchors: wall / CPU (s) | " + " | ".join(names) + " | mean PSNR (dB) |"
    )
    print("|---" * (8 + len(names)) + "|")
    for name, m, k, weights, alpha, stage_text, times, scores in rows:
        per_image = " | ".join(f"{scores[n]:.2f}" for n in names)
        mean = np.mean(list(scores.values()))
        print(
            f"| {name} | {m} | {k} | {weights} | {alpha} | {stage_text} | "
            f"{times[0]:.1f} / {times[1]:.1f} | {per_image} | {mean:.3f} |"
        )


def load_average():
    """The 1-minute load average (the machine is shared), or "?"."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
