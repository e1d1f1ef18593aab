"""asv benchmarks of the issue-12 kernels: assignment, block-sparse statistics, solves."""

from .common import make_data  # noqa: F401, I001  (sets up the import path first)

import time

import numpy as np

from arn_sklearn._kernels._assignment import similarity, soft_assignments
from arn_sklearn._model._blocksparse import BlockSparseStatistics
from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._topk import predict_top_k, top_k_assignments


def _data(n, m, d, t, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = np.tanh(X[:, :3]) @ rng.normal(size=(3, t))
    return X, Y, X[rng.choice(n, m, replace=False)]


class Assignment:
    params = ([256, 1024],)
    param_names = ["n_anchors"]

    def setup(self, m):
        self.X, _, self.C = _data(32_768, m, 30, 1)
        self.W = np.random.default_rng(1).normal(size=(m * 31, 81))
        self.idx, self.vals = top_k_assignments(self.X, self.C, "euclidean", 0.5, 4, np)

    def time_similarity(self, m):
        similarity(self.X, self.C, "euclidean", np)

    def time_soft_assignments(self, m):
        soft_assignments(self.X, self.C, "euclidean", 0.5, np)

    def time_top_4(self, m):
        top_k_assignments(self.X, self.C, "euclidean", 0.5, 4, np)

    def time_predict_top_4(self, m):
        predict_top_k(self.X, self.idx, self.vals, self.W, np)

    def track_top_4_over_gemm(self, m):
        def best(fn):
            out = []
            for _ in range(3):
                tic = time.perf_counter()
                fn()
                out.append(time.perf_counter() - tic)
            return min(out)

        gemm = best(lambda: self.X @ self.C.T)
        return best(lambda: top_k_assignments(self.X, self.C, "euclidean", 0.5, 4, np)) / gemm

    track_top_4_over_gemm.unit = "x similarity GEMM"


class BlockSparse:
    params = ([256, 1024],)
    param_names = ["n_anchors"]
    timeout = 300

    def setup(self, m):
        self.X, self.Y, self.C = _data(131_072, m, 30, 81)
        self.m = m
        self.stats = self._accumulate()

    def _accumulate(self):
        return BlockSparseStatistics.zeros(self.m, 30, 81, np).accumulate(
            iter_chunks(self.X, self.Y, np.ones(len(self.X)), 65_536),
            lambda c: top_k_assignments(c, self.C, "euclidean", 0.5, 4, np),
            np,
        )

    def time_accumulate(self, m):
        self._accumulate()

    def peakmem_accumulate(self, m):
        self._accumulate()

    def time_solve(self, m):
        self.stats.solve(1.0, np)

    def track_pairs(self, m):
        return int(self.stats.pair_keys.size)

    track_pairs.unit = "anchor pairs"
