"""Interim stand-in for the block-sparse statistics (replaced by the issue-12 kernels)."""

from dataclasses import dataclass

from ._lifting import SufficientStatistics, lifted_size
from ._solve import system_bytes
from ._sparse import accumulate_top_k


@dataclass
class BlockSparseStatistics(SufficientStatistics):
    n_anchors: int = 0

    @classmethod
    def zeros(cls, n_anchors, n_features, n_targets, xp, device=None):
        base = SufficientStatistics.zeros(lifted_size(n_anchors, n_features), n_targets, xp, device)
        return cls(**vars(base), n_anchors=n_anchors)

    def _wrap(self, stats):
        return BlockSparseStatistics(**vars(stats), n_anchors=self.n_anchors)

    def accumulate(self, chunks, assign_top_k, xp, verbose=0):
        return self._wrap(accumulate_top_k(chunks, assign_top_k, self.n_anchors, xp, self, verbose))

    def __add__(self, other):
        return self._wrap(SufficientStatistics.__add__(self, other))

    def map_arrays(self, convert):
        return self._wrap(SufficientStatistics.map_arrays(self, convert))

    @staticmethod
    def estimate_bytes(n_anchors, n_features, n_targets, top_k, n_pairs=None):
        return system_bytes(lifted_size(n_anchors, n_features), n_targets, 0)
