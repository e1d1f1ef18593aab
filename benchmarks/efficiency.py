"""BLAS efficiency of the ARN accumulation, measured in one process.

Compares the time of :func:`arn_sklearn._model._statistics.accumulate` (similarity,
softmax, lifting and the Gram update, streamed in chunks) with one float64
``dsyrk`` computing ``Z^T Z`` for a lifted matrix ``Z`` of the same size:
the best a dense accumulation can do on this machine's BLAS.

Run ``python benchmarks/efficiency.py [n] [m] [d]``.
"""

import sys
import time

import numpy as np
from array_api_compat import array_namespace
from scipy.linalg.blas import dsyrk

from arn_sklearn._model._layer import accumulate_rows, make_assignment


def _best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def measure(n, m, d, top_k=None, repeat=2, seed=0, syrk=True):
    """Seconds for our accumulation and for one ``dsyrk`` of the same size.

    Returns
    -------
    dict with ``accumulate_s``, ``syrk_s`` (None when ``syrk`` is False) and
    ``efficiency = syrk_s / accumulate_s`` (1.0 is BLAS speed).
    """
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, 1))
    w = np.ones(n)
    anchors = X[rng.choice(n, m, replace=False)]
    xp = array_namespace(X)
    p = m * (d + 1)
    # The fit's own path: one assigner, the statistics type it picks, its chunk rule.
    assigner = make_assignment(anchors, "euclidean", 0.5, top_k)

    def run():
        return accumulate_rows(assigner, X, Y, w, xp)

    acc = _best_of(run, repeat)
    out = {"n": n, "m": m, "d": d, "top_k": top_k, "p": p, "accumulate_s": acc}
    if syrk:
        # The lifted matrix, built in full once, as the reference computation.
        Z = rng.normal(size=(n, p))
        gram = np.zeros((p, p), order="F")
        syrk_s = _best_of(
            lambda: dsyrk(1.0, Z.T, beta=0.0, c=gram, trans=0, lower=0, overwrite_c=1), repeat
        )
        out.update(syrk_s=syrk_s, efficiency=syrk_s / acc)
    return out


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    n, m, d = args + [20_000, 64, 30][len(args) :]
    res = measure(n, m, d)
    print(
        f"n={n} m={m} d={d} p={res['p']}: accumulate {res['accumulate_s']:.3f} s, "
        f"one dsyrk {res['syrk_s']:.3f} s, BLAS efficiency {res['efficiency']:.0%}"
    )
