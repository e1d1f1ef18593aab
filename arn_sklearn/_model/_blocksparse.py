"""Block-sparse sufficient statistics of a top-k ARN.

With only the ``k`` largest assignments of each sample kept, the lifted row
``z_i = sum_s v_is e_(a_is) (x) [x_i, 1]`` has ``k`` non-zero blocks, so the Gram
matrix ``G = sum_i w_i z_i z_i^T`` is made of ``(d + 1) x (d + 1)`` blocks

    ``G_ab = sum_i w_i A_ia A_ib x1_i x1_i^T``,

non-zero only for the anchor pairs ``(a, b)`` that share a sample's top k. At
``k = 4`` and 1024 clustered anchors that is under 1% of the pairs, so only those
blocks are kept (``a <= b``; ``G_ba = G_ab^T``) and the system is solved by a
sparse factorisation (SuperLU with a fill-reducing ordering) instead of a dense
Cholesky of a matrix that is 99% zeros.

On numpy the accumulation runs one GEMM per anchor and batched dsyrk per
anchor pair, on all BLAS threads' cores, into a paged store that holds each
block once (:mod:`arn_sklearn._kernels._pair_gram`); CuPy uses
``cupyx.scipy.sparse`` products, and other namespaces dense one-hot products
(correct, for small problems and tests). Solving always runs on the host
with ``scipy.sparse.linalg`` (CuPy's sparse LU is SciPy's, on the host).
"""

import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from array_api_compat import is_cupy_array
from scipy import linalg
from scipy.sparse.csgraph import connected_components

from .._kernels._block_cg import (
    _GATHER_CHUNK,
    DEFAULT_RTOL,
    AggregateJacobi,
    BlockRows,
    anchor_aggregates,
    block_pcg,
    compiled_product,
    shared_block_pcg,
)
from .._kernels._pair_gram import (
    PAGE_BYTES,
    TABLE_MAX_ANCHORS,
    PairBlockStore,
    accumulate_chunk,
)
from .._kernels._solve import centered_rhs, factorize_dense, solve_ridge
from .._utils._arrays import device_of, is_numpy, to_numpy
from .._utils._memory import available_memory_bytes
from .._utils._progress import Progress
from .._utils._threads import _WorkerPool, blas_thread_count, single_threaded_blas
from .._utils._warnings import warn_user
from ._statistics import (
    ACCUMULATION_DTYPE,
    TARGET_ARRAYS,
    SufficientStatistics,
    map_statistics_arrays,
    target_sums_added,
    target_zeros,
)

# The ways to solve ``(G + alpha I) W = R``; "auto" asks the cost model.
LINEAR_SOLVERS = ("auto", "dense", "sparse", "iterative")

# A system of at most this many unknowns is solved densely (a Cholesky of a
# 2048-square matrix takes ~0.1 s; SuperLU's overhead is similar there). Larger
# ones go by the cost model whatever their share of stored pairs: a rule "dense
# above 35% of the pairs" picked the 31,744-unknown dense Cholesky (178-222 s,
# est. 355 s) on isotropic Gaussian data with 40% of the pairs, where CG took
# 85 s (18 iterations) under load (benchmarks/solver_grid.py); at 256 anchors
# the estimates alone still pick dense on 81% of the pairs and CG on 33%.
_DENSE_SOLVE_MAX_SIZE = 2048

# Cost model of :func:`choose_linear_solver` (rates from benchmarks/bench_kernels.py).
# LAPACK dpotrf on one thread (large factors run there, see _solve.py), flops/s.
_DENSE_FLOP_RATE = 3e10
# SuperLU's factorisation was measured this many times slower per flop than
# LAPACK's dpotrf on the same machine (benchmarks/bench_kernels.py).
_SUPERLU_SLOWDOWN = 20.0
# A CG iteration's Gram product runs at this share of the dense rate, by the
# product that :class:`BlockRows` runs (``compiled_product``). numpy's per-anchor
# GEMMs: benchmarks/solver_grid.py found a CG iteration 1/36-1/46 of a
# 7,936-unknown Cholesky's time, where 0.3 would say 1/14-1/20. The compiled
# kernel took a block-CG iteration 2.1-2.4x less time, wall and CPU (300k rows
# of x3 patch statistics, 14 iterations each way, benchmarks/cg_solve.py
# --product compiled numpy, load 5-6), the rest of the iteration unchanged:
# twice numpy's share. CG preconditioned on anchor aggregates takes about this
# many iterations (4-38 on that grid, median 14; per-anchor block-Jacobi took
# ~180 on 1024 anchors of 200 overlapping clusters, where the aggregates took 4-6).
_CG_FLOP_SHARE = {"numpy": 0.5, "compiled": 1.0}
_CG_ITERATIONS = 20
# Block CG (one Krylov space for all targets) when its own ~16 p t^2 flops per
# iteration are at most a fifth of the Gram product's 2 n_blocks (d + 1)^2 t:
# at least this many times t / (d + 1) stored blocks per anchor row, with either
# product. The compiled one (2.1-2.3x numpy's rate per CPU-second) leaves block
# CG's own work up to ~0.4 of the product's time, which its fewer iterations on
# patch graphs still pay for (x3 patch statistics, compiled product, load 4-6,
# benchmarks/cg_solve.py and solver_grid.py):
# - 131 blocks per row: block CG 8 iterations, columns CG 12 (11.0 s);
# - 164, 222 and 273 (154k, 300k, 1M rows): block CG 0.67-0.86x columns CG's
#   time, wall and CPU (14 against 20 iterations, twice; 17 against 27).
# On 1024 anchors of overlapping clusters (16 blocks per row, 6 iterations each)
# columns CG took 0.75-0.8x block CG's CPU time.
_BLOCK_CG_WORK = 40.0
# Most unknowns per aggregate of CG's preconditioner (16 anchors at d = 30):
# its inverses take at most ``p x 512`` doubles.
_AGGREGATE_UNKNOWNS = 512
# Anchor graphs whose connected components all have at most this many unknowns
# are solved exactly by one dense Cholesky per component (well-separated data).
_COMPONENT_MAX_SIZE = 8192
# A sparse factor with more block non-zeros than this many times G's is not
# trusted: SuperLU's time on such fill-in was seen to exceed its estimate by 10x.
_SPARSE_MAX_FILL = 8.0

# Same threshold as the dense Cholesky: a pivot of the symmetric LU (= LDL^T)
# below this times the largest one marks the system numerically singular.
_RCOND_THRESHOLD = 1e-13

# Chunks of a factor solve: bounds the dense right-hand side held at once.
_SOLVE_COLUMNS = 4096


def _like(a, host, xp):
    """``host`` (a numpy array) moved to the namespace and device of ``a``."""
    if is_numpy(a):
        return host
    device = getattr(a, "device", None)
    if is_cupy_array(a):
        import cupy

        with cupy.cuda.Device(device.id if device is not None else None):
            return cupy.asarray(host)
    return xp.asarray(host, device=device)


def _pair_count_estimate(n_anchors, top_k):
    """Upper estimate of the stored pairs: ``min(m (m + 1) / 2, m (1 + k^2))``.

    Each anchor has its diagonal block and a few times ``k`` partners: 4.7
    stored pairs per anchor on the issue's clustered 30-d data at ``k = 4``,
    11.8 on 300 Gaussian clusters in 30-d (``benchmarks/paper_scale.py``),
    9 on Gaussian 4-d data at ``k = 3``; ``1 + k^2`` (17 at ``k = 4``) covers
    those.
    """
    m, k = n_anchors, min(top_k, n_anchors)
    return int(min(m * (m + 1) // 2, m * (1 + k * k)))


def chunk_row_bytes(top_k, n_features, n_targets=1):
    """Bytes per chunk row of :meth:`BlockSparseStatistics.accumulate`'s temporaries.

    ``[x, 1]`` and ``y`` copies, 40 bytes per (sample, anchor) entry and 72 per
    (sample, anchor pair) entry for the grouping
    (:func:`arn_sklearn._kernels._pair_gram.accumulate_chunk`); the similarity
    block of the assignment is bounded separately (row blocks of about 2 MiB).
    Pairs with many rows in a chunk batch best: chunks of 10^5 rows or more.
    """
    k = top_k
    return 8 * (n_features + n_targets + 2) + 40 * k + 72 * (k * (k - 1) // 2)


@dataclass
class BlockSparseStatistics:
    """Sufficient statistics of a top-k ARN with a block-sparse Gram matrix.

    Attributes
    ----------
    n_anchors : int
    n_features : int
    pair_keys : int64 array of shape (n_pairs,)
        Sorted keys ``a * n_anchors + b``, ``a <= b``, of the stored blocks.
    blocks : float64 array of shape (n_pairs, d + 1, d + 1)
        ``sum_i w_i A_ia A_ib x1_i x1_i^T`` with ``x1 = [x, 1]``: the block of the
        lifted Gram matrix at rows ``a (d + 1) + j``, columns ``b (d + 1) + l``.
    zty : array of shape (p, n_targets)
        ``sum_i w_i z_i y_i^T``, ``p = n_anchors (d + 1)``, lifted column
        ``a (d + 1) + j`` as in :func:`arn_sklearn._kernels._lifting.lift`.
    z_sum : array of shape (p,)
    y_sum : array of shape (n_targets,)
    y_sq_sum : array of shape (n_targets,)
        ``sum_i w_i y_i^2`` per target.
    weight_sum : float
    n_samples : int
    linear_solver : {"auto", "dense", "sparse", "iterative"}
        How :meth:`solve` and :meth:`factorize` treat ``G + alpha I``, see
        :func:`choose_linear_solver`; "auto" lets its cost model decide.

    Examples
    --------
    >>> import numpy as np
    >>> from array_api_compat import array_namespace
    >>> from arn_sklearn._kernels._lifting import iter_chunks
    >>> from arn_sklearn._kernels._topk import top_k_assignments
    >>> rng = np.random.RandomState(0)
    >>> X, Y = rng.normal(size=(200, 2)), rng.normal(size=(200, 1))
    >>> anchors, xp = X[:6], array_namespace(X)
    >>> stats = BlockSparseStatistics.zeros(6, 2, 1, xp).accumulate(
    ...     iter_chunks(X, Y, np.ones(200), 64),
    ...     lambda c: top_k_assignments(c, anchors, "euclidean", 1.0, 2, xp),
    ...     xp,
    ... )
    >>> W, y_mean = stats.solve(1.0, xp)
    >>> W_dense, _ = stats.to_dense().solve(1.0, xp)
    >>> bool(np.allclose(W, W_dense))
    True
    """

    n_anchors: int
    n_features: int
    pair_keys: object
    blocks: object
    zty: object
    z_sum: object
    y_sum: object
    y_sq_sum: object
    weight_sum: float
    n_samples: int
    linear_solver: str = "auto"

    # -- construction and arithmetic -------------------------------------------------

    @classmethod
    def zeros(cls, n_anchors, n_features, n_targets, xp, device=None, linear_solver="auto"):
        """Empty statistics (no pairs yet) in namespace ``xp``."""
        dtype = getattr(xp, ACCUMULATION_DTYPE)
        kw = {"dtype": dtype} if device is None else {"dtype": dtype, "device": device}
        d1 = n_features + 1
        p = n_anchors * d1
        key_kw = {"dtype": xp.int64} if device is None else {"dtype": xp.int64, "device": device}
        return cls(
            n_anchors=int(n_anchors),
            n_features=int(n_features),
            pair_keys=xp.zeros((0,), **key_kw),
            blocks=xp.zeros((0, d1, d1), **kw),
            linear_solver=linear_solver,
            **target_zeros(p, n_targets, xp, **kw),
        )

    def map_arrays(self, convert):
        """The same statistics with every array passed through ``convert``."""
        return map_statistics_arrays(self, convert, ("pair_keys", "blocks"))

    def copy(self):
        return self.map_arrays(lambda a: a * 1)

    def __add__(self, other):
        if (self.n_anchors, self.n_features) != (other.n_anchors, other.n_features):
            raise ValueError(
                "Cannot add block-sparse statistics of different shapes: "
                f"{(self.n_anchors, self.n_features)} and {(other.n_anchors, other.n_features)}."
            )
        xp = _namespace(self.zty)
        keys, blocks = _merge(self.pair_keys, self.blocks, other.pair_keys, other.blocks, xp)
        return replace(self, pair_keys=keys, blocks=blocks, **target_sums_added(self, other))

    @property
    def n_lifted(self):
        return self.n_anchors * (self.n_features + 1)

    # -- accumulation ----------------------------------------------------------------

    def accumulate(self, chunks, assign_top_k, xp, verbose=0):
        """These statistics plus those of ``chunks``; ``self`` is not modified.

        Parameters
        ----------
        chunks : iterable of (X, Y, w)
            ``X`` of shape (b, d), ``Y`` of shape (b, n_targets), ``w`` of shape (b,).
        assign_top_k : callable
            ``assign_top_k(X) -> (idx, vals)``, each of shape (b, k), as
            :func:`arn_sklearn._kernels._topk.top_k_assignments` returns.
        xp : array namespace
        verbose : int
            1: a progress line every few seconds (rows, rate, elapsed); 2: one per chunk.

        Returns
        -------
        BlockSparseStatistics
        """
        dtype = getattr(xp, ACCUMULATION_DTYPE)
        # The pair blocks are not copied here: the numpy path copies them into its
        # store, the other path's first merge allocates new ones.
        out = replace(self, **{name: getattr(self, name) * 1 for name in TARGET_ARRAYS})
        owned = False
        store = pool = zty1 = None
        progress = Progress("accumulated", verbose)

        def n_pairs():
            return out.pair_keys.shape[0] if store is None else store.n_pairs

        try:
            for X, Y, w in chunks:
                # No copy of float64 chunks: a copy of Y is 170 MB at 262k rows.
                X = xp.astype(X, dtype, copy=False)
                Y = xp.astype(Y, dtype, copy=False)
                w = xp.astype(w, dtype, copy=False)
                idx, vals = assign_top_k(X)
                if is_numpy(X):
                    if store is None:
                        d1 = self.n_features + 1
                        store = PairBlockStore(self.n_anchors, d1, out.pair_keys, out.blocks)
                        zty1 = np.zeros((self.n_anchors, d1, Y.shape[1] + 1))
                        pool = _WorkerPool()
                    accumulate_chunk(
                        X, Y, w, idx, vals, store, zty1, run=pool.run, n_tasks=pool.n_threads
                    )
                else:
                    keys, blocks = _accumulate_chunk_generic(out, X, Y, w, idx, vals, xp)
                    out.pair_keys, out.blocks = _merge(
                        out.pair_keys, out.blocks, keys, blocks, xp, inplace=owned
                    )
                    owned = True
                if is_numpy(Y):
                    out.y_sum += w @ Y
                    out.y_sq_sum += np.einsum("i,ij,ij->j", w, Y, Y)  # no (b, t) temporary
                else:
                    Yw = Y * w[:, None]
                    out.y_sum = out.y_sum + xp.sum(Yw, axis=0)
                    out.y_sq_sum = out.y_sq_sum + xp.sum(Yw * Y, axis=0)
                out.weight_sum += float(xp.sum(w))
                out.n_samples += X.shape[0]
                progress.chunk(X.shape[0], f", {n_pairs()} anchor pairs")
            progress.done(f", {n_pairs()} anchor pairs")
        finally:
            if pool is not None:
                pool.close()
        if store is not None:
            out.pair_keys, out.blocks = store.finish()
            out.zty += np.reshape(zty1[:, :, :-1], out.zty.shape)
            out.z_sum += np.reshape(zty1[:, :, -1], out.z_sum.shape)
        elif not owned:
            out = replace(out, pair_keys=self.pair_keys * 1, blocks=self.blocks * 1)
        return out

    # -- views of the Gram matrix ----------------------------------------------------

    def to_dense(self):
        """The dense :class:`~arn_sklearn._model._statistics.SufficientStatistics` (full gram)."""
        xp = _namespace(self.zty)
        m, d1 = self.n_anchors, self.n_features + 1
        p = m * d1
        if is_numpy(self.blocks) or is_cupy_array(self.blocks):
            gram = xp.zeros((p, p), dtype=self.blocks.dtype, device=device_of(self.blocks))
            gram4 = xp.reshape(gram, (m, d1, m, d1))
            lo, hi = self.pair_keys // m, self.pair_keys % m
            off = lo != hi
            gram4[hi[off], :, lo[off], :] = xp.permute_dims(self.blocks[off], (0, 2, 1))
            gram4[lo, :, hi, :] = self.blocks
        else:
            lo, hi = self.pair_keys // m, self.pair_keys % m
            E_lo, E_hi = _onehot(lo, m, xp), _onehot(hi, m, xp)
            n = self.blocks.shape[0]
            B = xp.reshape(self.blocks, (n, d1 * d1))
            Bt = xp.reshape(xp.permute_dims(self.blocks, (0, 2, 1)), (n, d1 * d1))
            off = xp.astype(lo != hi, B.dtype)[:, None]
            upper = xp.reshape(E_lo[:, :, None] * E_hi[:, None, :], (n, m * m)).T @ B
            lower = xp.reshape(E_hi[:, :, None] * E_lo[:, None, :], (n, m * m)).T @ (Bt * off)
            gram4 = xp.reshape(upper + lower, (m, m, d1, d1))
            gram = xp.reshape(xp.permute_dims(gram4, (0, 2, 1, 3)), (p, p))
        return SufficientStatistics(
            gram=gram,
            zty=self.zty,
            z_sum=self.z_sum,
            y_sum=self.y_sum,
            y_sq_sum=self.y_sq_sum,
            weight_sum=self.weight_sum,
            n_samples=self.n_samples,
        )

    def gram_matmul(self, V):
        """``G @ V`` for ``V`` of shape (p, k), without forming ``G``."""
        if is_numpy(V):
            return self._sparse_matrix(0.0, fmt="bsr") @ V
        xp = _namespace(V)
        m, d1 = self.n_anchors, self.n_features + 1
        ncol = V.shape[1]
        V3 = xp.reshape(V, (m, d1, ncol))
        lo, hi = self.pair_keys // m, self.pair_keys % m
        n = self.blocks.shape[0]
        upper = xp.reshape(self.blocks @ xp.take(V3, hi, axis=0), (n, d1 * ncol))
        lower = xp.reshape(
            xp.permute_dims(self.blocks, (0, 2, 1)) @ xp.take(V3, lo, axis=0), (n, d1 * ncol)
        )
        off = xp.astype(lo != hi, V.dtype)[:, None]
        out = _onehot(lo, m, xp).T @ upper + _onehot(hi, m, xp).T @ (lower * off)
        return xp.reshape(out, (m * d1, ncol))

    def _sparse_matrix(self, alpha, fmt="csc"):
        """The full symmetric ``G + alpha I`` as a ``scipy.sparse`` matrix (host)."""
        import scipy.sparse as sp

        m, d1 = self.n_anchors, self.n_features + 1
        keys = to_numpy(self.pair_keys)
        blocks = to_numpy(self.blocks)
        lo, hi = keys // m, keys % m
        off = lo != hi
        # Every diagonal block is stored, zero where an anchor was never used,
        # so that alpha lands on the whole diagonal.
        missing = np.setdiff1d(np.arange(m), lo[~off], assume_unique=True)
        rows = np.concatenate([lo, hi[off], missing])
        cols = np.concatenate([hi, lo[off], missing])
        data = np.concatenate(
            [blocks, blocks[off].transpose(0, 2, 1), np.zeros((missing.size, d1, d1))]
        )
        if alpha:
            first_missing = off.size + int(off.sum())  # after the pairs and their mirrors
            diagonal = np.concatenate(
                [np.flatnonzero(~off), first_missing + np.arange(missing.size)]
            )
            data[diagonal] += alpha * np.eye(d1)
        order = np.argsort(rows * m + cols, kind="stable")
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
        G = sp.bsr_matrix((data[order], cols[order], indptr), shape=(m * d1, m * d1))
        return G if fmt == "bsr" else G.asformat(fmt)

    # -- solving ---------------------------------------------------------------------

    def _anchor_ordering(self, with_fill=False):
        """Fill-reducing anchor order and the sparse factor's estimated flops.

        With ``with_fill``, also the number of ``(d + 1)``-blocks of the factor.

        The ordering (minimum degree on ``A + A^T``, SuperLU's) is computed on
        the ``m x m`` anchor graph, milliseconds, and expanded to the blocks:
        each anchor's ``d + 1`` unknowns stay together, as in a supernode.
        """
        import scipy.sparse as sp
        from scipy.sparse.linalg import splu

        m, d1 = self.n_anchors, self.n_features + 1
        keys = to_numpy(self.pair_keys)
        lo, hi = keys // m, keys % m
        pattern = sp.coo_matrix((np.ones(keys.size), (lo, hi)), shape=(m, m))
        pattern = (pattern + pattern.T + (keys.size + 1.0) * sp.identity(m)).tocsc()
        lu = splu(
            pattern,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )
        counts = np.diff(lu.L.tocsc().indptr).astype(np.float64)
        flops = float(np.sum(counts * counts)) * d1**3
        if with_fill:
            return lu.perm_c, flops, float(np.sum(counts))
        return lu.perm_c, flops

    def _fill_and_flops(self):
        """``(factor blocks / stored pairs, flops bound of the sparse factor)``.

        The flops are those of dense factors of the anchor graph's connected
        components, ``sum_c (n_c (d + 1))^3 / 3``: what no ordering can beat
        by much on a component of 30-d points, where SuperLU's fill-reducing
        orderings were measured to run tens of times past their symbolic
        estimate; on well-separated data the components are small and cheap.
        """
        d1 = self.n_features + 1
        sizes = np.bincount(self._components()).astype(np.float64)
        flops = float(np.sum((sizes * d1) ** 3) / 3)
        if sizes.max() * d1 <= _COMPONENT_MAX_SIZE:
            # Small components: dense factors per component, no fill question.
            return 1.0, flops / _SUPERLU_SLOWDOWN
        _, _, factor_blocks = self._anchor_ordering(with_fill=True)
        return factor_blocks / max(self.pair_keys.shape[0], 1), flops

    def _components(self):
        """Connected component of each anchor in the graph of stored pairs."""
        m = self.n_anchors
        keys = to_numpy(self.pair_keys)
        graph = sp.coo_matrix((np.ones(keys.size), (keys // m, keys % m)), shape=(m, m))
        return connected_components(graph, directed=False)[1]

    def choose_solver(self, alpha):
        """The solver :meth:`solve` uses for ``G + alpha I``, see :func:`choose_linear_solver`."""
        return choose_linear_solver(
            self.n_anchors,
            self.n_features,
            self.zty.shape[1],
            self.pair_keys.shape[0],
            alpha,
            fill_and_flops=self._fill_and_flops,
            requested=self.linear_solver,
        )

    def solve(self, alpha, xp, x0=None):
        """Ridge solution ``(W, y_mean)``, the objective of
        :func:`~arn_sklearn._kernels._solve.solve_ridge`.

        The solver is :meth:`choose_solver`'s: a dense Cholesky; a sparse LU
        with a symmetric fill-reducing ordering and no pivoting (an ``LDL^T``
        factorisation) plus one step of iterative refinement; or conjugate gradients
        preconditioned on anchor aggregates (:mod:`arn_sklearn._kernels._block_cg`),
        whose predictions agree with the exact solve's to about 1e-6 relative.
        A numerically singular system warns with a ``LinAlgWarning`` and still
        returns a finite solution.

        Parameters
        ----------
        alpha : float
        xp : array namespace
        x0 : array of shape (p, n_targets), optional
            Start of the iterative solver (e.g. the solution at a nearby alpha);
            ignored by the direct ones.
        """

        if not self.weight_sum > 0:
            raise ValueError("The sum of sample weights is zero; nothing to fit.")
        solver = self.choose_solver(alpha)
        # What verbose fits print after the solve time.
        self.solve_note = f" ({solver})"
        if solver == "dense":
            # The dense gram is a temporary here: factor it in place.
            return solve_ridge(self.to_dense(), alpha, xp, overwrite=True)
        rhs, y_mean = centered_rhs(self, xp)
        tic = time.perf_counter()
        factor = self._factorize(alpha, xp, solver)
        setup = time.perf_counter() - tic
        if solver == "iterative":
            W = factor.solve(rhs, x0=x0)
            self.solve_note = (
                f" ({factor.method_used_} CG: {factor.n_iter_} iterations; Gram rows and "
                f"preconditioner of {factor.n_groups} aggregates set up in {setup:.2f} s)"
            )
            return W, y_mean
        self.solve_note = f" ({type(factor).__name__}, factorised in {setup:.2f} s)"
        return factor.solve(rhs), y_mean

    def solve_path(self, alphas, xp):
        """Ridge solutions for each of ``alphas``: ``(W of shape (n_alphas, p, t), y_mean)``.

        With the iterative solver, the alphas are visited from the largest
        (the best-conditioned system) down, each solve starting from the
        previous solution.
        """
        alphas = [float(a) for a in alphas]
        if not alphas:
            raise ValueError("At least one alpha is needed.")
        solutions = [None] * len(alphas)
        previous = None
        for i in sorted(range(len(alphas)), key=lambda i: -alphas[i]):
            iterative = self.choose_solver(alphas[i]) == "iterative"
            W, y_mean = self.solve(alphas[i], xp, x0=previous if iterative else None)
            solutions[i] = W
            previous = W
        return xp.stack(solutions), y_mean

    def factorize(self, alpha, xp):
        """Factor of ``G + alpha I``; its ``solve(B)`` returns ``(G + alpha I)^{-1} B``.

        With the iterative solver the "factor" runs conjugate gradients for
        each ``solve`` (its attribute ``iterative`` is True).
        """
        return self._factorize(alpha, xp, self.choose_solver(alpha))

    def _factorize(self, alpha, xp, solver):
        if solver == "dense":
            return self.to_dense().factorize(alpha, xp)
        if solver == "iterative":
            return IterativeFactor(self, alpha, like=self.zty, xp=xp)
        labels = self._components()
        if np.bincount(labels).max() * (self.n_features + 1) <= _COMPONENT_MAX_SIZE:
            return ComponentFactor(self, labels, alpha, like=self.zty, xp=xp)
        perm, _ = self._anchor_ordering()
        try:
            return SparseFactor(self._sparse_matrix(alpha), alpha, like=self.zty, xp=xp, perm=perm)
        except MemoryError as exc:
            raise MemoryError(
                f"The sparse factor of the {self.n_lifted}-square ARN system "
                f"({self.pair_keys.shape[0]} anchor pairs) does not fit in memory (SuperLU: "
                f"{exc}). Use linear_solver='iterative', fewer anchors, a smaller top_k, "
                "or fewer features."
            ) from exc

    def block_rows(self):
        """The Gram matrix as :class:`~arn_sklearn._kernels._block_cg.BlockRows` (cached)."""
        key = (id(self.blocks), self.pair_keys.shape[0], self.n_samples, self.weight_sum)
        cached = getattr(self, "_block_rows_cache", None)
        if cached is None or cached[0] != key:
            rows = BlockRows(to_numpy(self.pair_keys), to_numpy(self.blocks), self.n_anchors)
            self._block_rows_cache = cached = (key, rows)
        return cached[1]

    @staticmethod
    def estimate_bytes(n_anchors, n_features, n_targets, top_k, n_pairs=None):
        """Peak bytes of :meth:`accumulate` plus :meth:`solve`, for a memory guard.

        Parameters
        ----------
        n_anchors, n_features, n_targets, top_k : int
        n_pairs : int, optional
            Number of stored anchor pairs; when None, the upper estimate
            ``min(m (m + 1) / 2, m (1 + k^2))`` (diagonal blocks plus ``k^2``
            stored partners per anchor, above what was measured).

        Returns
        -------
        int
            Bytes of the statistics: while accumulating, the blocks once, at
            most as much again for the store's last page and its final copy-out
            (:class:`~arn_sklearn._kernels._pair_gram.PairBlockStore`), its slot
            table and the target sums; for the solve, the larger of the
            sparse factor's (the full symmetric sparse matrix in BSR and CSC
            form, 12 bytes per non-zero each, and a factor estimated at twice
            its non-zeros) and CG's (which reads the stored blocks in place:
            the aggregate preconditioner's inverses, at most ``p x 512``
            doubles, block CG's ten ``p x n_targets`` iterates and
            temporaries, and two threads' buffers of 32 gathered blocks and
            partners' rows, or the compiled product's padded copy of ``V``, two
            threads' outputs and their sum). The
            chunk's own rows are the caller's (see
            :func:`arn_sklearn._kernels._topk.chunk_row_bytes`).

        Examples
        --------
        >>> BlockSparseStatistics.estimate_bytes(1024, 30, 81, 4) < 2**31
        True
        """
        d1 = n_features + 1
        p = n_anchors * d1
        if n_pairs is None:
            n_pairs = _pair_count_estimate(n_anchors, top_k)
        block_bytes = 8 * n_pairs * d1 * d1
        vectors = 8 * (p * (n_targets + 1) + 2 * n_targets)
        table = 4 * n_anchors**2 if n_anchors <= TABLE_MAX_ANCHORS else 16 * n_pairs
        accumulate = block_bytes + min(block_bytes, PAGE_BYTES) + table + 3 * vectors
        nnz = (2 * n_pairs + n_anchors) * d1 * d1
        sparse = 12 * nnz * (2 + 2) + 8 * 3 * p * n_targets
        aggregate = min(p, max(1, _AGGREGATE_UNKNOWNS // d1) * d1)
        buffers = max(2 * 8 * _GATHER_CHUNK * d1 * (d1 + n_targets), 4 * 8 * p * (n_targets + 15))
        iterative = 8 * p * aggregate + 8 * 10 * p * n_targets + buffers
        solve = block_bytes + max(sparse, iterative) + vectors
        return int(max(accumulate, solve))


def choose_linear_solver(
    n_anchors,
    n_features,
    n_targets,
    n_pairs,
    alpha,
    fill_and_flops,
    requested="auto",
    available=None,
    compiled=None,
):
    """One place that decides how a block-sparse ARN system is solved.

    Parameters
    ----------
    n_anchors, n_features, n_targets, n_pairs : int
        ``n_pairs`` stored anchor pairs (``a <= b``, diagonal included).
    alpha : float
    fill_and_flops : callable
        ``() -> (fill, flops)``: the sparse factor's ``(d + 1)``-blocks per
        stored pair and its factorisation flops (symbolic, on the anchor graph;
        called only when the answer depends on it).
    requested : {"auto", "dense", "sparse", "iterative"}
        Anything but "auto" is obeyed, except that "iterative" needs
        ``alpha > 0`` and "dense" the memory of a ``p x p`` matrix.
    available : int, optional
        Bytes available; read from the system when None.
    compiled : bool, optional
        Whether CG's Gram product runs the compiled kernel; when None, what
        :func:`~arn_sklearn._kernels._block_cg.compiled_product` says for the
        statistics' float64 blocks.

    Returns
    -------
    {"dense", "sparse", "iterative"}

    Notes
    -----
    Estimated seconds, with ``p = m (d + 1)`` unknowns and ``t`` targets:
    dense ``p^3 / 3`` flops at LAPACK's rate; sparse the flops of dense factors
    of the anchor graph's connected components at a twentieth of it, and only
    where the symbolic fill-in stays below ``_SPARSE_MAX_FILL`` times the stored
    pairs (on one connected graph of 30-d points SuperLU was seen to run for
    tens of minutes where its symbolic estimate said seconds); iterative
    ``_CG_ITERATIONS`` Gram products ``2 (2 n_pairs) (d + 1)^2 t`` at half the
    dense rate with numpy's product, the dense rate with the compiled one, plus
    the preconditioner's inverses of aggregates of ``s`` unknowns
    (``2 p s^2`` flops) and its ``2 p s t`` flops per iteration.
    Small systems (``p <= 2048``) are solved densely; a dense ``p x p`` that
    does not fit in the memory available is never allocated. CG needs
    ``alpha > 0`` (``G`` alone may be singular).

    Examples
    --------
    >>> choose_linear_solver(1024, 30, 81, 5000, 1e-3, lambda: (40.0, 1e13))
    'iterative'
    >>> choose_linear_solver(1024, 30, 81, 1100, 1e-3, lambda: (1.2, 1e9))
    'sparse'
    >>> choose_linear_solver(16, 30, 81, 100, 1e-3, lambda: (1.0, 1e6))
    'dense'
    """
    if requested not in LINEAR_SOLVERS:
        raise ValueError(f"linear_solver={requested!r} must be one of {LINEAR_SOLVERS}.")
    m, d1 = n_anchors, n_features + 1
    p = m * d1
    if available is None:
        available = available_memory_bytes()
    dense_fits = available is None or 8 * p * p <= available
    if requested == "iterative" and not alpha > 0:
        raise ValueError(
            "linear_solver='iterative' needs alpha > 0 (G alone may be singular); "
            "use alpha > 0, or linear_solver='sparse' or 'dense'."
        )
    if requested == "dense" and not dense_fits:
        raise MemoryError(
            f"linear_solver='dense' needs a {p}-square matrix ({8 * p * p / 2**30:.1f} GiB) "
            f"but only {available / 2**30:.1f} GiB is available; use linear_solver='auto'."
        )
    if requested != "auto":
        return requested
    if p <= _DENSE_SOLVE_MAX_SIZE and dense_fits:
        return "dense"
    costs = estimate_solver_seconds(
        n_anchors, n_features, n_targets, n_pairs, alpha, fill_and_flops, dense_fits, compiled
    )
    pick = min(costs, key=costs.get)
    # Factors per connected component are dense Cholesky factors too, without
    # assembling the p x p matrix: at equal estimates (one component) they are
    # the faster (isotropic Gaussian, 256 anchors: 2.4-3.5 s against dense's
    # 5.1-5.6 s, benchmarks/solver_grid.py, load 1.5).
    if pick == "dense" and costs.get("sparse", np.inf) <= costs["dense"] * (1 + 1e-9):
        pick = "sparse"
    return pick


def estimate_solver_seconds(
    n_anchors,
    n_features,
    n_targets,
    n_pairs,
    alpha,
    fill_and_flops,
    dense_fits=True,
    compiled=None,
):
    """The cost model's estimated seconds of each solver that may run.

    See :func:`choose_linear_solver` (its Notes) for the parameters and the
    model; ``dense_fits`` says whether a ``p x p`` matrix fits in memory.
    A solver that is ruled out (dense that does not fit, CG at ``alpha = 0``,
    a sparse factor with too much fill-in while another one can run) is absent.
    """
    m, d1 = n_anchors, n_features + 1
    p = m * d1
    if compiled is None:
        compiled = compiled_product()
    costs = {}
    if dense_fits:
        costs["dense"] = p**3 / 3 / _DENSE_FLOP_RATE
    if alpha > 0:
        # Aggregates of ``s`` unknowns: their inverses (2 s^3 flops each) once,
        # and one GEMM with them per iteration, both at the dense rate.
        s = min(p, max(1, _AGGREGATE_UNKNOWNS // d1) * d1)
        share = _CG_FLOP_SHARE["compiled" if compiled else "numpy"]
        gram_product = 2.0 * (2 * n_pairs - m) * d1 * d1 * n_targets / share
        iteration = gram_product + 2.0 * p * s * n_targets
        costs["iterative"] = (2.0 * p * s * s + _CG_ITERATIONS * iteration) / _DENSE_FLOP_RATE
    fill, flops = fill_and_flops()
    if fill <= _SPARSE_MAX_FILL or not costs:
        costs["sparse"] = flops * _SUPERLU_SLOWDOWN / _DENSE_FLOP_RATE
    return costs


class ComponentFactor:
    """``solve(B)``: ``(G + alpha I)^{-1} B`` by a dense Cholesky per connected component.

    Anchors that never share a sample's top k (directly or through others)
    have independent regressors, so ``G + alpha I`` is block diagonal after
    grouping the anchors by component of the pair graph. On well-separated
    data every component is a cluster of a few tens of anchors: its dense
    factor costs milliseconds, at LAPACK speed and without fill-in questions.
    A singular component (``alpha = 0``) warns and is solved by its
    pseudo-inverse.
    """

    def __init__(self, stats, labels, alpha, like=None, xp=None):
        m, d1 = stats.n_anchors, stats.n_features + 1
        keys = to_numpy(stats.pair_keys)
        blocks = to_numpy(stats.blocks)
        lo, hi = keys // m, keys % m
        order = np.argsort(labels, kind="stable")
        starts = np.r_[0, np.cumsum(np.bincount(labels))]
        local = np.empty(m, dtype=np.int64)
        local[order] = np.arange(m) - starts[labels[order]]
        by_component = np.argsort(labels[lo], kind="stable")
        pair_starts = np.r_[0, np.cumsum(np.bincount(labels[lo], minlength=starts.size - 1))]
        self.parts, self.like, self.xp = [], like, xp
        singular = False
        for c in range(starts.size - 1):
            anchors = order[starts[c] : starts[c + 1]]
            n = anchors.size
            sel = by_component[pair_starts[c] : pair_starts[c + 1]]
            system = np.zeros((n, d1, n, d1))
            li, hj = local[lo[sel]], local[hi[sel]]
            off = li != hj
            system[hj[off], :, li[off], :] = blocks[sel][off].transpose(0, 2, 1)
            system[li, :, hj, :] = blocks[sel]
            factor = factorize_dense(system.reshape(n * d1, n * d1), alpha, np)
            singular |= factor.pinv is not None
            rows = (anchors[:, None] * d1 + np.arange(d1)[None, :]).ravel()
            self.parts.append((rows, factor))
        if singular:
            warn_user(
                f"The ARN normal equations are singular or ill-conditioned (alpha={alpha!r}); "
                "solving them by a pseudo-inverse. Increase alpha, or remove collinear "
                "features.",
                linalg.LinAlgWarning,
            )

    def solve(self, B):
        host = np.asarray(to_numpy(B), dtype=np.float64)
        out = np.empty_like(host)
        for rows, factor in self.parts:
            out[rows] = factor.solve(host[rows])
        like = B if self.like is None else self.like
        return _like(like, out, self.xp)


class IterativeFactor:
    """``solve(B)``: ``(G + alpha I)^{-1} B`` by preconditioned CG.

    The preconditioner is block-Jacobi on aggregates of strongly coupled
    anchors (:func:`~arn_sklearn._kernels._block_cg.anchor_aggregates`, at most
    ``_AGGREGATE_UNKNOWNS`` unknowns each): on 1024 anchors of 200 overlapping
    clusters it took CG from 182 iterations (per-anchor blocks) to 2.
    The Gram products run on the host over the statistics' stored pair blocks
    (:class:`~arn_sklearn._kernels._block_cg.BlockRows`); ``B`` may be in any
    namespace and the result is returned in it. Solutions are accurate to the
    relative energy-norm tolerance ``rtol``: predictions agree with an exact
    solve's to about 1e-6 relative.

    ``method="block"`` runs block CG, all columns in one shared Krylov space
    (:func:`~arn_sklearn._kernels._block_cg.shared_block_pcg`): on 300k rows
    of x3 patch statistics, 15 iterations where one space per column
    (``method="columns"``, :func:`~arn_sklearn._kernels._block_cg.block_pcg`)
    took 22, for the same Gram product per iteration. Its own work, about
    ``16 p t^2`` flops per iteration for ``t`` columns, exceeds the product's
    on sparse graphs (1024 anchors of overlapping clusters: 8 stored blocks
    per anchor row, same 6 iterations either way), so ``method="auto"``
    (default) takes it where that work is at most a fifth of numpy's
    product's time: at least ``40 t / (d + 1)`` blocks per row, with either
    product (see ``_BLOCK_CG_WORK``).
    After :meth:`solve`, ``n_iter_`` and ``method_used_`` say what it ran.
    """

    iterative = True

    def __init__(self, stats, alpha, like=None, xp=None, rtol=None, method="auto"):
        if method not in ("auto", "block", "columns"):
            raise ValueError(f"method={method!r} must be 'auto', 'block' or 'columns'.")
        self.method = method
        self.rows = stats.block_rows()
        self.alpha = float(alpha)
        self.n_threads = blas_thread_count()
        max_size = max(1, _AGGREGATE_UNKNOWNS // self.rows.d1)
        self.labels = anchor_aggregates(self.rows, self.alpha, max_size)
        self.n_groups = int(self.labels.max()) + 1 if self.labels.size else 0
        self.precondition = AggregateJacobi(
            self.rows, self.labels, self.alpha, n_threads=self.n_threads
        )
        self.like, self.xp = like, xp
        self.rtol = DEFAULT_RTOL if rtol is None else rtol
        self.n_iter_ = self.method_used_ = None
        # Block CG's per-iteration diagnostics (benchmarks/cg_solve.py --trace).
        self.callback = None

    def matmul(self, V):
        """``(G + alpha I) V`` on the host."""
        return self.rows.matmul(V, n_threads=self.n_threads) + self.alpha * V

    def chosen_method(self, B):
        """ "block" or "columns" for right-hand sides ``B``, see the class docstring."""
        if self.method != "auto":
            return self.method
        t = B.shape[1] if B.ndim == 2 else 1
        blocks_per_row = self.rows.n_stored / max(self.rows.n_anchors, 1)
        return "block" if blocks_per_row >= _BLOCK_CG_WORK * t / self.rows.d1 else "columns"

    def solve(self, B, x0=None):
        host = np.asarray(to_numpy(B), dtype=np.float64)
        start = None if x0 is None else np.asarray(to_numpy(x0), dtype=np.float64)
        with single_threaded_blas():
            self.method_used_ = self.chosen_method(host)
            options = {}
            if self.method_used_ == "block":
                options = {"callback": self.callback, "n_threads": self.n_threads}
            solver = block_pcg if self.method_used_ == "columns" else shared_block_pcg
            X, self.n_iter_ = solver(
                self.matmul,
                self.precondition,
                host,
                x0=start,
                rtol=self.rtol,
                shift=self.alpha,
                **options,
            )
        like = B if self.like is None else self.like
        return _like(like, X, self.xp)


class SparseFactor:
    """Sparse ``LDL^T`` (SuperLU, symmetric mode) of ``G + alpha I``; ``solve(B)``.

    ``B`` may be in any namespace; it is solved on the host in column blocks
    and returned in ``B``'s namespace. A numerically singular system is held as
    that of ``G + (alpha + eps) I`` with ``eps`` relative to its largest
    diagonal entry, after a ``LinAlgWarning``.
    """

    def __init__(self, matrix, alpha, like=None, xp=None, perm=None):
        from scipy.sparse.linalg import splu

        self.like = like
        self.xp = xp
        self.order = None
        spec = "MMD_AT_PLUS_A"
        if perm is not None:
            # Anchor order expanded to the blocks, applied symmetrically.
            d1 = matrix.shape[0] // perm.size
            self.order = (perm[:, None] * d1 + np.arange(d1)[None, :]).ravel()
            matrix = matrix[self.order][:, self.order].tocsc()
            matrix.sort_indices()
            spec = "NATURAL"
        self.matrix = matrix
        options = {"SymmetricMode": True}
        try:
            lu = splu(matrix, permc_spec=spec, diag_pivot_thresh=0.0, options=options)
            pivots = lu.U.diagonal()
            if not pivots.min() > _RCOND_THRESHOLD * pivots.max():
                raise RuntimeError("ill-conditioned")
        except RuntimeError:
            warn_user(
                f"The ARN normal equations are singular or ill-conditioned (alpha={alpha!r}); "
                "solving them with a small extra ridge instead. Increase alpha, or remove "
                "collinear features.",
                linalg.LinAlgWarning,
            )
            import scipy.sparse as sp

            diag = matrix.diagonal()
            eps = max(float(np.abs(diag).max()), 1.0) * 1e-10
            self.matrix = matrix = (matrix + eps * sp.identity(matrix.shape[0])).tocsc()
            lu = splu(matrix, permc_spec=spec, diag_pivot_thresh=0.0, options=options)
        self.lu = lu

    def solve(self, B):
        host = np.asarray(to_numpy(B), dtype=np.float64)
        one_d = host.ndim == 1
        host = host[:, None] if one_d else host
        if self.order is not None:
            host = host[self.order]
        out = np.empty_like(host)
        for start in range(0, host.shape[1], _SOLVE_COLUMNS):
            cols = slice(start, start + _SOLVE_COLUMNS)
            b = np.ascontiguousarray(host[:, cols])
            x = self.lu.solve(b)
            # One step of iterative refinement: the LDL^T without pivoting is
            # backward stable for SPD systems; this removes its residual growth.
            x += self.lu.solve(b - self.matrix @ x)
            out[:, cols] = x
        if self.order is not None:
            unpermuted = np.empty_like(out)
            unpermuted[self.order] = out
            out = unpermuted
        out = out[:, 0] if one_d else out
        like = B if self.like is None else self.like
        return _like(like, out, self.xp)


# -- chunk kernels ---------------------------------------------------------------------


def _accumulate_chunk_generic(out, X, Y, w, idx, vals, xp):
    """Same as the numpy kernel with array products (CuPy: sparse; others: one-hot)."""
    b, k = idx.shape
    m, d1 = out.n_anchors, out.n_features + 1
    t = Y.shape[1]
    dtype = X.dtype
    device = device_of(X)
    X1 = xp.concat([X, xp.ones((b, 1), dtype=dtype, device=device)], axis=1)
    idx = xp.astype(idx, xp.int64)
    vals = xp.astype(vals, dtype)
    iu, ju = np.triu_indices(k)  # a <= b, diagonal included
    iu_x = xp.asarray(iu, device=device)
    ju_x = xp.asarray(ju, device=device)
    ia, ib = xp.take(idx, iu_x, axis=1), xp.take(idx, ju_x, axis=1)
    lo, hi = xp.minimum(ia, ib), xp.maximum(ia, ib)
    pw = xp.take(vals, iu_x, axis=1) * xp.take(vals, ju_x, axis=1) * w[:, None]
    pair_keys = xp.reshape(lo * m + hi, (-1,))
    keys, inverse = xp.unique_inverse(pair_keys)
    # unique_inverse need not sort its values: relabel them in sorted order.
    order = xp.argsort(keys)
    rank = xp.take(xp.argsort(order), xp.reshape(inverse, (-1,)))
    keys = xp.take(keys, order)
    inverse = xp.reshape(rank, (b, iu.size))
    Q = xp.reshape(X1[:, :, None] * X1[:, None, :], (b, d1 * d1))
    wv = vals * w[:, None]
    if is_cupy_array(X):
        import cupyx.scipy.sparse as csp

        rows = xp.reshape(xp.broadcast_to(xp.arange(b)[:, None], (b, iu.size)), (-1,))
        P = csp.csr_matrix(
            (xp.reshape(pw, (-1,)), (xp.reshape(inverse, (-1,)), rows)), shape=(keys.shape[0], b)
        )
        rows_k = xp.reshape(xp.broadcast_to(xp.arange(b)[:, None], (b, k)), (-1,))
        B = csp.csr_matrix((xp.reshape(wv, (-1,)), (xp.reshape(idx, (-1,)), rows_k)), shape=(m, b))
        blocks = P @ Q
        zty = B @ xp.reshape(X1[:, :, None] * Y[:, None, :], (b, d1 * t))
        z_sum = B @ X1
    else:
        u = keys.shape[0]
        P = xp.zeros((b, u), dtype=dtype, device=device)
        Bd = xp.zeros((b, m), dtype=dtype, device=device)
        for s in range(iu.size):
            P = P + _onehot(inverse[:, s], u, xp) * pw[:, s : s + 1]
        for s in range(k):
            Bd = Bd + _onehot(idx[:, s], m, xp) * wv[:, s : s + 1]
        blocks = P.T @ Q
        zty = Bd.T @ xp.reshape(X1[:, :, None] * Y[:, None, :], (b, d1 * t))
        z_sum = Bd.T @ X1
    out.zty = out.zty + xp.reshape(zty, (m * d1, t))
    out.z_sum = out.z_sum + xp.reshape(z_sum, (m * d1,))
    return keys, xp.reshape(blocks, (keys.shape[0], d1, d1))


def _merge(keys1, blocks1, keys2, blocks2, xp, inplace=False):
    """Union of two sets of pair blocks, summing the blocks of equal keys.

    ``keys1`` is sorted; ``keys2`` need not be; the result is sorted.
    """
    if keys2.shape[0] == 0:
        return keys1, (blocks1 if inplace else blocks1 * 1)
    if keys1.shape[0] == 0:
        order = xp.argsort(keys2)
        return xp.take(keys2, order), xp.take(blocks2, order, axis=0)
    if is_numpy(keys1) or is_cupy_array(keys1):
        pos = xp.searchsorted(keys1, keys2)
        hit = keys1[xp.minimum(pos, keys1.shape[0] - 1)] == keys2
        if bool(xp.all(hit)):
            blocks = blocks1 if inplace else blocks1 * 1
            # Keys are unique within each set, so the fancy += has no repeats.
            blocks[pos] += blocks2
            return keys1, blocks
        # unique_values need not sort (numpy >= 2.3 hashes): sort explicitly.
        keys = xp.sort(xp.unique_values(xp.concat([keys1, keys2])))
        blocks = xp.zeros((keys.shape[0],) + tuple(blocks1.shape[1:]), dtype=blocks1.dtype)
        blocks[xp.searchsorted(keys, keys1)] = blocks1
        blocks[xp.searchsorted(keys, keys2)] += blocks2
        return keys, blocks
    keys = xp.sort(xp.unique_values(xp.concat([keys1, keys2])))
    u = keys.shape[0]
    shape = tuple(blocks1.shape[1:])
    flat = []
    for k_, b_ in ((keys1, blocks1), (keys2, blocks2)):
        onehot = _onehot(xp.searchsorted(keys, k_), u, xp)
        flat.append(onehot.T @ xp.reshape(b_, (k_.shape[0], -1)))
    return keys, xp.reshape(flat[0] + flat[1], (u,) + shape)


def _onehot(index, n, xp):
    """``(len(index), n)`` float64 matrix with a one at ``[i, index[i]]``."""
    device = device_of(index)
    return xp.astype(
        index[:, None] == xp.arange(n, dtype=index.dtype, device=device)[None, :], xp.float64
    )


def _namespace(a):
    from array_api_compat import array_namespace

    return array_namespace(a)
