"""Where a learned fit's time goes: stage timers of ``ARNRegressor(solver="gauss_newton")``.

Fits the default learned model of ``learned_vs_mlp.py`` (16 anchors, early
stopping, behind the same scalers) and prints, per fit, the test MSE, wall and
process CPU time, then the wall seconds and calls of each stage, timed from the
main thread by wrapping the package's internal functions: the starts (KMeans,
k-plane and their ranking), each Gauss-Newton stage (closed-form passes at the
trial points, Jacobian passes, Schur complement, damped solves, validation
predictions), the start's competition on all rows and the final closed form.
The closed-form and Jacobian passes also count the rows they pass (deterministic,
unlike the timers): the measure of a change in the number of Gauss-Newton steps.
Internal names: a development tool, not an API. ``--profile-starts N`` also
prints, after all fits, the N functions of most cumulative time within the
starts (cProfile over every fit's start stage; it slows the starts down).

    PYTHONPATH=. python benchmarks/learned_stages.py [--tasks report,friedman,arm]
        [--seeds 0,1,2] [--data-seed 0] [--n 20000] [--profile-starts 25]

Run it from the repository root with ``PYTHONPATH=.`` to time the checkout (a
script's own folder, not the working directory, comes first on ``sys.path``).
"""

import argparse
import collections
import cProfile
import os
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from learned_vs_mlp import scaled, task_data  # noqa: E402

import arn_sklearn._fit._learned as learned  # noqa: E402
import arn_sklearn._learning._gauss_newton as gauss_newton  # noqa: E402
import arn_sklearn._learning._training as training  # noqa: E402
from arn_sklearn import ARNRegressor  # noqa: E402

TIMERS = collections.defaultdict(lambda: [0.0, 0])
# Rows passed by the Gauss-Newton passes: a deterministic measure of their work
# (wall time is noisy on a shared machine). Label -> position of ``X`` in the arguments.
ROWS = collections.Counter()
ROW_ARGUMENT = {"  closed-form passes": 3, "  Jacobian passes": 0}

# (module, function name, label): the stages, outermost first.
STAGES = [
    (learned, "_initial_anchors", "starts"),
    (learned, "fit_gauss_newton", "Gauss-Newton stages"),
    # The closed form at every trial point (and at each stage's start).
    (gauss_newton._Point, "__init__", "  closed-form passes"),
    (gauss_newton, "jacobian_pass", "  Jacobian passes"),
    (gauss_newton, "schur_hessian", "  Schur complements"),
    (gauss_newton, "_damped_step", "  damped solves"),
    (training, "varpro_predict", "  validation predictions"),
    (training, "_start_competes", "start competes on all rows"),
    (learned, "closed_form_layer", "final closed form"),
]


def timed(function, label):
    def wrapper(*args, **kwargs):
        tic = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            entry = TIMERS[label]
            entry[0] += time.perf_counter() - tic
            entry[1] += 1
            if label in ROW_ARGUMENT:
                ROWS[label] += args[ROW_ARGUMENT[label]].shape[0]

    return wrapper


def profiled(function, profile):
    def wrapper(*args, **kwargs):
        profile.enable()
        try:
            return function(*args, **kwargs)
        finally:
            profile.disable()

    return wrapper


def install(profile=None):
    if profile is not None:  # innermost, so that the stage timer still sees the whole start
        learned._initial_anchors = profiled(learned._initial_anchors, profile)
    for module, name, label in STAGES:
        setattr(module, name, timed(getattr(module, name), label))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="report")
    parser.add_argument("--seeds", default="0", help="the model's random_state values")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument(
        "--profile-starts",
        type=int,
        default=0,
        metavar="N",
        help="print the N costliest functions (cumulative) of the start stages, cProfile",
    )
    args = parser.parse_args(argv)
    profile = cProfile.Profile() if args.profile_starts else None
    install(profile)
    for task in args.tasks.split(","):
        X, Y, X_test, Y_test = task_data(task, args.n, args.data_seed)
        for seed in (int(s) for s in args.seeds.split(",")):
            TIMERS.clear()
            ROWS.clear()
            model = scaled(
                ARNRegressor(16, solver="gauss_newton", early_stopping=True, random_state=seed)
            )
            load = os.getloadavg()[0]
            tic, cpu = time.perf_counter(), time.process_time()
            model.fit(X, Y)
            seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
            mse = float(np.mean((model.predict(X_test) - Y_test) ** 2))
            n_iter = model.regressor_[-1].n_iter_
            print(
                f"{task}, seed {seed}: test MSE {mse:.5g}, fit {seconds:.2f} s "
                f"(CPU {cpu:.2f} s), {n_iter} steps, {sum(ROWS.values())} rows passed "
                f"by the Gauss-Newton passes, load {load:.1f}"
            )
            for _, _, label in STAGES:
                if label in TIMERS:
                    total, calls = TIMERS[label]
                    rows = f", {ROWS[label]} rows" if label in ROWS else ""
                    print(f"  {label:30s} {total:6.3f} s  ({calls} calls{rows})")
            sys.stdout.flush()
    if profile is not None:
        print("\nThe starts, every fit together (cProfile, cumulative):")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile_starts)


if __name__ == "__main__":
    main()
