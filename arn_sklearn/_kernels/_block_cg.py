"""Preconditioned conjugate gradients on a symmetric block-sparse system.

The top-k ARN system ``(G + alpha I) W = R`` has ``(d + 1) x (d + 1)`` blocks
``G_ab`` for the anchor pairs that share a sample, with many right-hand sides
(one per target). A direct sparse factor of it fills in badly on graphs of
points in 30-d; conjugate gradients do not fill in at all, and the ridge term
plus the per-anchor diagonal blocks (block-Jacobi, the local solutions) make
them converge in a few tens of iterations.

* :class:`BlockRows` holds the full symmetric matrix as one dense panel per
  anchor row, ``[G_ab1, G_ab2, ...]`` (``(d + 1) x P_a (d + 1)``), so that the
  product ``G V`` is one GEMM per anchor against the stacked partner rows of
  ``V``, at a good share of BLAS speed (one small GEMM per *pair* runs at ~10%).
* :func:`block_jacobi` inverts the regularised diagonal blocks.
* :func:`block_pcg` runs CG on every column at once: one ``G V`` per iteration
  for all targets still iterating, with per-column step lengths.

The stopping rule is in the energy norm ``||e||_A``, ``A = G + alpha I``, since
the training predictions' error satisfies ``||Z e||^2 = e^T G e <= ||e||_A^2``.
Each CG step gives ``alpha_k r_k^T z_k = ||x_{k+1} - x_k||_A^2``, and the sum of
the last ``D`` of them is ``||x* - x_{k-D}||_A^2 - ||x* - x_k||_A^2`` (Strakos &
Tichy 2002); CG converges linearly here, so the ratio of two such windows
extrapolates the remaining error (:func:`_remaining_error`). The iteration
stops when it falls below ``rtol^2 x^T G x``: predictions within about
``rtol`` relative (tested against direct solves at 1e-6).

References
----------
Z. Strakos and P. Tichy, "On error estimation in the conjugate gradient method
and why it works in finite precision computations", ETNA 13 (2002) 56-80.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .._utils._warnings import warn_user

# Energy-norm relative tolerance of the iterative solve: a digit below the
# documented 1e-6 agreement of predictions, as the error is extrapolated.
DEFAULT_RTOL = 1e-7
# Iterations whose steps are summed into the error estimate.
_DELAY = 4
# Iterations before giving up (with a ConvergenceWarning).
_MAX_ITER = 500


class BlockRows:
    """A symmetric block-sparse matrix as one dense panel per block row.

    Parameters
    ----------
    pair_keys : int64 ndarray of shape (n_pairs,)
        Keys ``a * n_anchors + b`` with ``a <= b`` of the stored blocks.
    blocks : ndarray of shape (n_pairs, d1, d1)
        Block ``(a, b)``; block ``(b, a)`` is its transpose.
    n_anchors : int

    Attributes
    ----------
    diagonal : ndarray of shape (n_anchors, d1, d1)
        The diagonal blocks (zero for an anchor without a stored one).
    """

    def __init__(self, pair_keys, blocks, n_anchors):
        m = int(n_anchors)
        d1 = blocks.shape[1]
        keys = np.asarray(pair_keys, dtype=np.int64)
        lo, hi = keys // m, keys % m
        off = lo != hi
        rows = np.concatenate([lo, hi[off]])
        cols = np.concatenate([hi, lo[off]])
        order = np.argsort(rows * m + cols, kind="stable")
        n_upper = keys.size
        # Index into the stored blocks; mirrored blocks are read transposed.
        source = np.concatenate([np.arange(n_upper), np.flatnonzero(off)])[order]
        mirrored = (np.arange(rows.size) >= n_upper)[order]
        rows, self.cols = rows[order], cols[order]
        self.indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=m), out=self.indptr[1:])
        self.n_anchors, self.d1 = m, d1
        self.panels = []
        for a in range(m):
            s, e = self.indptr[a], self.indptr[a + 1]
            panel = np.empty((d1, (e - s) * d1))
            view = panel.reshape(d1, e - s, d1)
            for j, (src, mir) in enumerate(zip(source[s:e], mirrored[s:e], strict=True)):
                view[:, j, :] = blocks[src].T if mir else blocks[src]
            self.panels.append(panel)
        self.diagonal = np.zeros((m, d1, d1))
        diag = ~off
        self.diagonal[lo[diag]] = blocks[np.flatnonzero(diag)]
        self.n_stored = rows.size

    @property
    def shape(self):
        p = self.n_anchors * self.d1
        return (p, p)

    def matmul(self, V, n_threads=1):
        """``G @ V`` for ``V`` of shape (p, t): one GEMM per anchor row.

        The GEMMs are small, so BLAS runs on one thread (callers hold
        :func:`arn_sklearn._utils._threads.single_threaded_blas`) and ``n_threads``
        Python threads share the rows (numpy releases the GIL in BLAS).
        """
        m, d1 = self.n_anchors, self.d1
        V = np.ascontiguousarray(V, dtype=np.float64)
        one_d = V.ndim == 1
        V2 = V[:, None] if one_d else V
        t = V2.shape[1]
        V3 = V2.reshape(m, d1, t)
        out = np.empty((m, d1, t))

        def rows(anchor_range):
            for a in anchor_range:
                s, e = self.indptr[a], self.indptr[a + 1]
                if s == e:
                    out[a] = 0.0
                    continue
                stacked = V3[self.cols[s:e]].reshape((e - s) * d1, t)
                np.matmul(self.panels[a], stacked, out=out[a])

        if n_threads > 1 and m > 1:
            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(rows, [range(i, m, n_threads) for i in range(n_threads)]))
        else:
            rows(range(m))
        out = out.reshape(m * d1, t)
        return out[:, 0] if one_d else out

    def flops(self, n_columns):
        """Multiply-add flops (x2) of one :meth:`matmul` with ``n_columns`` columns."""
        return 2 * self.n_stored * self.d1 * self.d1 * n_columns


def block_jacobi(diagonal, alpha):
    """Inverses of the regularised diagonal blocks ``D_a + alpha I``.

    Parameters
    ----------
    diagonal : ndarray of shape (m, d1, d1)
    alpha : float

    Returns
    -------
    ndarray of shape (m, d1, d1)
        Symmetric inverses; a singular block (an unused anchor at ``alpha = 0``)
        gets its pseudo-inverse, which keeps the preconditioner positive
        semi-definite on the range of the system.
    """
    d1 = diagonal.shape[1]
    system = diagonal + alpha * np.eye(d1)[None]
    try:
        inverse = np.linalg.inv(system)
        if not np.all(np.isfinite(inverse)):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        inverse = np.linalg.pinv(system, hermitian=True)
    return 0.5 * (inverse + inverse.transpose(0, 2, 1))


def apply_block_diagonal(inverse, R):
    """``blockdiag(inverse) @ R`` for ``R`` of shape (m * d1, t)."""
    m, d1, _ = inverse.shape
    return np.matmul(inverse, R.reshape(m, d1, -1)).reshape(R.shape)


def block_pcg(matmul, precondition, B, x0=None, rtol=DEFAULT_RTOL, max_iter=None, shift=0.0):
    """Solve ``A X = B`` column by column with preconditioned CG, all columns at once.

    Parameters
    ----------
    matmul : callable
        ``matmul(V) -> A @ V`` for ``V`` of shape (p, t'); ``A`` symmetric
        positive definite (semi-definite with ``B`` in its range).
    precondition : callable
        ``precondition(R) -> M^{-1} R``, ``M`` symmetric positive definite.
    B : ndarray of shape (p, t)
    x0 : ndarray of shape (p, t), optional
        Start; ``precondition(B)`` (the per-block local solution) when None.
    rtol : float
        Relative energy-norm tolerance, see the module docstring.
    max_iter : int, optional
        Default 500 (60 typical on ARN systems); a column still iterating then raises a
        ``ConvergenceWarning``.
    shift : float
        ``alpha`` of ``A = G + alpha I``: the stopping rule compares the error
        with ``x^T G x = x^T A x - shift x^T x`` (the predictions' size).

    Returns
    -------
    X : ndarray of shape (p, t)
    n_iter : int
        Iterations of the slowest column.
    """
    B = np.asarray(B, dtype=np.float64)
    one_d = B.ndim == 1
    B2 = B[:, None] if one_d else B
    p, t = B2.shape
    if max_iter is None:
        max_iter = _MAX_ITER
    X = precondition(B2) if x0 is None else np.array(x0, dtype=np.float64).reshape(p, t)
    X = np.array(X, dtype=np.float64, order="C", copy=True)
    zero = ~np.any(B2 != 0, axis=0)
    X[:, zero] = 0.0
    active = np.flatnonzero(~zero)
    R = B2[:, active] - matmul(X[:, active])
    Zp = precondition(R)
    P = Zp.copy()
    rz = np.einsum("ij,ij->j", R, Zp)
    history = []
    n_iter = 0
    while active.size and n_iter < max_iter:
        n_iter += 1
        Q = matmul(P)
        pq = np.einsum("ij,ij->j", P, Q)
        ok = (pq > 0) & (rz > 0)
        step = np.where(ok, rz / np.where(ok, pq, 1.0), 0.0)
        X[:, active] += P * step
        R -= Q * step
        history.append(step * rz)  # ||x_{k+1} - x_k||_A^2 per column
        Zp = precondition(R)
        rz_new = np.einsum("ij,ij->j", R, Zp)
        Xa = X[:, active]
        size = np.einsum("ij,ij->j", Xa, B2[:, active]) - shift * np.einsum("ij,ij->j", Xa, Xa)
        done = ~ok | (_remaining_error(history) <= rtol * rtol * np.abs(size))
        beta = np.where(ok, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        P = Zp + P * beta
        rz = rz_new
        if np.any(done):
            keep = ~done
            active, R, P, rz = active[keep], R[:, keep], P[:, keep], rz[keep]
            history = [h[keep] for h in history[-2 * _DELAY :]]
    if active.size:
        warn_user(
            f"Conjugate gradients stopped after {max_iter} iterations with {active.size} "
            "target(s) short of the tolerance. Increase alpha, or use linear_solver='dense' "
            "or 'sparse'.",
            ConvergenceWarning,
        )
    return (X[:, 0] if one_d else X), n_iter


def _remaining_error(history):
    """Estimated ``||x* - x_k||_A^2`` per column from the CG steps' energies.

    ``||x* - x_(k-D)||_A^2 = S1 + ||x* - x_k||_A^2`` with ``S1`` the sum of the
    last ``D`` steps; with the contraction ``q = S1 / S0`` over the window
    before, ``||x* - x_k||_A^2 ~ q S1 / (1 - q)``. Infinite until ``2 D`` steps.
    """
    if len(history) < 2 * _DELAY:
        return np.full(history[-1].shape, np.inf)
    recent = np.sum(history[-_DELAY:], axis=0)
    before = np.sum(history[-2 * _DELAY : -_DELAY], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(before > 0, recent / before, 0.0)
    q = np.clip(q, 0.0, 0.999)
    return recent * q / (1.0 - q)
