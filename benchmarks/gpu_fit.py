"""GPU (CuPy) against CPU fits, and against the GPU's own GEMM, in one process.

For each size, times in one run:

- ``ARNRegressor(device="cuda").fit`` and ``device="cpu"`` on the same data
  (fixed random anchors and softness, so both solve the same system);
- the accumulation on the GPU against one float64 ``Z^T Z`` GEMM of the same
  lifted size on the GPU (cuBLAS): the best a dense accumulation can do there;
- the ``m(d+1)``-square Cholesky solve on the GPU.

Run ``python benchmarks/gpu_fit.py [--json out.json]`` on a machine with CuPy
and a CUDA GPU (``pip install "arn-sklearn[gpu]"``). Ratios, not absolute
times, are the figures to compare across machines.
"""

import argparse
import json
import os
import time

import numpy as np

from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._assignment import soft_assignments
from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._solve import solve_ridge
from arn_sklearn._model._statistics import SufficientStatistics, accumulate

SIZES = [  # (n, m, d): unknowns m(d+1) from 2k to 16.5k
    (200_000, 64, 31),
    (200_000, 256, 31),
    (100_000, 512, 31),
]
CPU_MAX_UNKNOWNS = 8192


def _timed(fn, sync, repeat=2):
    best = np.inf
    for _ in range(repeat):
        sync()
        tic = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - tic)
    return best, out


def measure(n, m, d, cupy, cpu=True):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=n)
    anchors = X[rng.choice(n, m, replace=False)]
    params = dict(n_anchors=m, anchors=anchors, softness=0.05, alpha=1e-2)
    sync = cupy.cuda.Device().synchronize
    p = m * (d + 1)
    res = {"n": n, "m": m, "d": d, "unknowns": p}

    res["fit_gpu_s"], model = _timed(lambda: ARNRegressor(device="cuda", **params).fit(X, y), sync)
    if cpu:
        res["fit_cpu_s"], ref = _timed(
            lambda: ARNRegressor(device="cpu", **params).fit(X, y), sync, 1
        )
        res["cpu_over_gpu"] = res["fit_cpu_s"] / res["fit_gpu_s"]
        res["max_abs_pred_diff"] = float(np.max(np.abs(model.predict(X) - ref.predict(X))))

    from array_api_compat import array_namespace

    Xg, Yg, wg = cupy.asarray(X), cupy.asarray(y[:, None]), cupy.ones(n)
    ag = cupy.asarray(anchors)
    xp = array_namespace(Xg)
    batch = max(256, (64 * 2**20) // (8 * p))

    def run_accumulate():
        zeros = SufficientStatistics.zeros(p, 1, xp)
        chunks = iter_chunks(Xg, Yg, wg, batch)
        assign = lambda c: soft_assignments(c, ag, "euclidean", 0.05, xp)  # noqa: E731
        return accumulate(chunks, assign, xp, zeros)

    res["accumulate_gpu_s"], stats = _timed(run_accumulate, sync)
    Z = cupy.random.standard_normal((n, p))
    # cuBLAS dsyrk (upper triangle, like our accumulation) where CuPy exposes it.
    syrk = getattr(getattr(cupy, "cublas", None), "syrk", None)
    gemm = (lambda: syrk("T", Z)) if syrk is not None else (lambda: Z.T @ Z)
    res["gemm_gpu_s"], _ = _timed(gemm, sync)
    res["accumulate_over_gemm"] = res["accumulate_gpu_s"] / res["gemm_gpu_s"]
    res["solve_gpu_s"], _ = _timed(lambda: solve_ridge(stats, 1e-2, xp), sync)
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU fits")
    args = parser.parse_args(argv)
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"GPU: {name}; CPU threads: {os.cpu_count()}")
    rows = []
    for n, m, d in SIZES:
        # The CPU fit of the largest system takes minutes: compare up to 8k unknowns.
        cpu = not args.no_cpu and m * (d + 1) <= CPU_MAX_UNKNOWNS
        res = measure(n, m, d, cupy, cpu=cpu)
        rows.append(res)
        print(
            f"n={n} m={m} d={d} unknowns={res['unknowns']}: fit GPU {res['fit_gpu_s']:.2f} s"
            + (
                f", CPU {res['fit_cpu_s']:.2f} s (x{res['cpu_over_gpu']:.1f}), "
                f"max |pred diff| {res['max_abs_pred_diff']:.1e}"
                if "fit_cpu_s" in res
                else ""
            )
            + f"; GPU accumulate/GEMM {res['accumulate_over_gemm']:.2f}, "
            f"solve {res['solve_gpu_s']:.2f} s",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": name, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
