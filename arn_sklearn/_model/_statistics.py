"""Lifted features ``x~ = pi(x) (x) [x, 1]`` and the streamed sufficient statistics.

With fixed anchors, ARN is ridge regression on the lifted features (paper eq. 17).
The normal equations only need sums over rows, which :class:`SufficientStatistics`
holds; they can be accumulated chunk by chunk (``fit``), continued later
(``partial_fit``) and added across data blocks (``a + b``).
"""

from dataclasses import dataclass, replace

import numpy as np
from array_api_compat import array_namespace

from .._kernels._lifting import lift
from .._kernels._solve import factorize_dense, solve_ridge
from .._utils._progress import Progress
from .._utils._threads import single_threaded_blas

# The normal equations square the condition number of the lifted design, so the
# statistics are always accumulated and solved in float64, whatever the input dtype.
ACCUMULATION_DTYPE = "float64"

# The target side, shared by the dense and the block-sparse statistics: the
# arrays below are summed by ``+`` and moved by ``map_arrays``; ``weight_sum``
# and ``n_samples`` are plain numbers.
TARGET_ARRAYS = ("zty", "z_sum", "y_sum", "y_sq_sum")


def target_zeros(n_lifted, n_targets, xp, **kw):
    """Zero target-side sums, as keyword arguments of either statistics type."""
    return dict(
        zty=xp.zeros((n_lifted, n_targets), **kw),
        z_sum=xp.zeros((n_lifted,), **kw),
        y_sum=xp.zeros((n_targets,), **kw),
        y_sq_sum=xp.zeros((n_targets,), **kw),
        weight_sum=0.0,
        n_samples=0,
    )


def target_sums_added(a, b):
    """The target-side sums of ``a + b``, as keyword arguments."""
    out = {name: getattr(a, name) + getattr(b, name) for name in TARGET_ARRAYS}
    return dict(out, weight_sum=a.weight_sum + b.weight_sum, n_samples=a.n_samples + b.n_samples)


def map_statistics_arrays(stats, convert, array_fields):
    """``stats`` with ``convert`` applied to its ``array_fields`` and target arrays."""
    return replace(
        stats, **{name: convert(getattr(stats, name)) for name in (*array_fields, *TARGET_ARRAYS)}
    )


@dataclass
class SufficientStatistics:
    """Weighted sums over rows that define the ARN normal equations.

    Attributes
    ----------
    gram : array of shape (p, p)
        ``sum_i w_i z_i z_i^T`` with ``p = m (d + 1)``.
    zty : array of shape (p, n_targets)
        ``sum_i w_i z_i y_i^T``.
    z_sum : array of shape (p,)
        ``sum_i w_i z_i``; with ``y_sum`` it centres the targets at solve time.
    y_sum : array of shape (n_targets,)
        ``sum_i w_i y_i``.
    y_sq_sum : array of shape (n_targets,)
        ``sum_i w_i y_i^2`` per target; with the solution it gives the residual
        sum of squares (the noise variance of the predictive uncertainty).
    weight_sum : float
        ``sum_i w_i``.
    n_samples : int
        Number of rows seen.
    """

    gram: object
    zty: object
    z_sum: object
    y_sum: object
    y_sq_sum: object
    weight_sum: float
    n_samples: int

    @classmethod
    def zeros(cls, n_lifted, n_targets, xp, device=None):
        dtype = getattr(xp, ACCUMULATION_DTYPE)
        kw = {"dtype": dtype} if device is None else {"dtype": dtype, "device": device}
        return cls(
            gram=xp.zeros((n_lifted, n_lifted), **kw), **target_zeros(n_lifted, n_targets, xp, **kw)
        )

    def __add__(self, other):
        return replace(self, gram=self.gram + other.gram, **target_sums_added(self, other))

    def map_arrays(self, convert):
        """The same statistics with every array passed through ``convert``.

        Used to move them between devices, e.g. to solve on the GPU.
        """
        return map_statistics_arrays(self, convert, ("gram",))

    def accumulate(self, chunks, assign, xp, verbose=0):
        """These statistics plus those of ``chunks``, see :func:`accumulate`."""
        return accumulate(chunks, assign, xp, self, verbose=verbose)

    def solve(self, alpha, xp):
        """Ridge solution ``(W, y_mean)`` of these statistics, see :func:`solve_ridge`."""

        return solve_ridge(self, alpha, xp)

    def factorize(self, alpha, xp):
        """A factorisation of ``gram + alpha I`` with a ``solve(B)`` method."""

        return factorize_dense(self.gram, alpha, xp)

    def gram_matmul(self, V):
        """``gram @ V`` for ``V`` of shape (p, k)."""
        return self.gram @ V

    def copy(self):
        if self.n_samples == 0 and self.weight_sum == 0:
            # Statistics that are still zero need fresh zeros, not a copy.
            xp = array_namespace(self.gram)
            device = None if isinstance(self.gram, np.ndarray) else self.gram.device
            fresh = SufficientStatistics.zeros(
                self.gram.shape[0], self.zty.shape[1], xp, device=device
            )
            if isinstance(fresh.gram, np.ndarray):
                # Fault the pages in now, in order: the top-k scatter touches
                # them in random order, measured 4x slower for an 8 GB system.
                fresh.gram.fill(0.0)
            return fresh
        return self.map_arrays(lambda a: a * 1.0)


def _gram_update(gram, Zw, xp):
    """``gram += Zw^T Zw`` as one symmetric rank-k update.

    On numpy this calls BLAS ``dsyrk`` in place on the upper triangle (half the
    flops of a GEMM and no p x p temporary); :func:`symmetrize_upper` restores
    the lower triangle once the stream ends. Other namespaces use a matmul.
    """
    if isinstance(gram, np.ndarray) and isinstance(Zw, np.ndarray):
        if gram.shape[0] >= _TILED_MIN_SIZE:
            return _tiled_gram_update(gram, Zw)
        from scipy.linalg.blas import dsyrk

        # Zw is C-ordered (b, p), so Zw.T is F-ordered (p, b): no copy is made.
        return dsyrk(1.0, Zw.T, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=1)
    return gram + Zw.T @ Zw


# From this size on, a p x p float64 array passes 2 GiB, where scipy's bundled
# 32-bit-index OpenBLAS was seen to crash in dsyrk and dpotrf (p = 31,744);
# such updates go through numpy's matmul (64-bit indices) on column tiles.
_TILED_MIN_SIZE = 16_384
_GRAM_TILE = 2048


def _tiled_gram_update(gram, Zw, tile=_GRAM_TILE):
    """Upper triangle of ``gram += Zw^T Zw`` as GEMMs on column tiles, in place."""
    p = gram.shape[0]
    for k in range(0, p, tile):
        ke = min(k + tile, p)
        gram[:ke, k:ke] += Zw[:, :ke].T @ Zw[:, k:ke]
    return gram


def symmetrize_upper(gram, xp, block=256):
    """Copy the upper triangle of ``gram`` onto its lower one, block by block.

    Works in place on numpy so that a large Gram matrix is never duplicated;
    small diagonal blocks keep the index arrays small.
    """
    if not isinstance(gram, np.ndarray):
        upper = xp.triu(gram)
        return upper + xp.triu(gram, k=1).T
    p = gram.shape[0]
    for start in range(0, p, block):
        stop = min(start + block, p)
        gram[stop:, start:stop] = gram[start:stop, stop:].T
        diag_block = gram[start:stop, start:stop]
        lower = np.tril_indices(stop - start, k=-1)
        diag_block[lower] = diag_block.T[lower]
    return gram


def accumulate(chunks, assign, xp, stats, verbose=0):
    """Stream ``(X, Y, w)`` chunks into sufficient statistics.

    Parameters
    ----------
    chunks : iterable of (X, Y, w)
        ``X`` of shape (b, d), ``Y`` of shape (b, n_targets), ``w`` of shape (b,).
    assign : callable
        Maps a chunk ``X`` to its soft assignments, shape (b, n_anchors).
    xp : array namespace
    stats : SufficientStatistics
        Statistics to continue from; they are not modified.
    verbose : int
        1: a progress line every few seconds (rows, rate, elapsed); 2: one per chunk.

    Returns
    -------
    SufficientStatistics
        ``stats`` plus the contribution of every chunk, with a full symmetric
        ``gram``.
    """
    dtype = getattr(xp, ACCUMULATION_DTYPE)
    out = stats.copy()
    gram = out.gram
    on_numpy = isinstance(gram, np.ndarray)
    if on_numpy:
        gram = np.asfortranarray(gram)
    buffer = None
    progress = Progress("accumulated", verbose)
    for X, Y, w in chunks:
        X = xp.astype(X, dtype)
        Y = xp.astype(Y, dtype)
        w = xp.astype(w, dtype)
        sqrt_w = xp.sqrt(w)[:, None]
        # Rows scaled by sqrt(w) turn the weighted sums into plain products;
        # scaling the (b, m) assignments is cheaper than the (b, m(d+1)) rows.
        if on_numpy:
            if buffer is None or buffer.shape[0] < X.shape[0]:
                buffer = np.empty((X.shape[0], gram.shape[0]))
            with single_threaded_blas():
                Zw = lift(X, assign(X) * sqrt_w, xp, out=buffer[: X.shape[0]])
                # One pass over the lifted block gives both zty and z_sum.
                ZtY1 = Zw.T @ xp.concat([Y * sqrt_w, sqrt_w], axis=1)
        else:
            Zw = lift(X, assign(X) * sqrt_w, xp)
            ZtY1 = Zw.T @ xp.concat([Y * sqrt_w, sqrt_w], axis=1)
        gram = _gram_update(gram, Zw, xp)
        out.zty = out.zty + ZtY1[:, :-1]
        out.z_sum = out.z_sum + ZtY1[:, -1]
        Yw = Y * w[:, None]
        out.y_sum = out.y_sum + xp.sum(Yw, axis=0)
        out.y_sq_sum = out.y_sq_sum + xp.sum(Yw * Y, axis=0)
        out.weight_sum += float(xp.sum(w))
        out.n_samples += X.shape[0]
        progress.chunk(X.shape[0])
    progress.done()
    out.gram = symmetrize_upper(gram, xp)
    return out
