"""Preconditioned conjugate gradients on a symmetric block-sparse system.

The top-k ARN system ``(G + alpha I) W = R`` has ``(d + 1) x (d + 1)`` blocks
``G_ab`` for the anchor pairs that share a sample, with many right-hand sides
(one per target). A direct sparse factor of it fills in badly on graphs of
points in 30-d; conjugate gradients do not fill in at all. The per-anchor
diagonal blocks (block-Jacobi, the local solutions) leave CG the modes where
anchors that share most of their samples cancel each other (182 iterations on
1024 anchors of 200 overlapping clusters); solving aggregates of strongly
coupled anchors together removes those (2-4 iterations there).

* :class:`BlockRows` reads the stored upper blocks in place (no second copy of
  the matrix). Its product ``G V`` runs in the optional compiled extension
  ``_block_cg_gram`` when it is built: each block ``G_ab`` is read once for
  ``G_ab V_b`` and ``G_ab V_a``, as register-tiled ``d1 x d1`` by ``d1 x t``
  products in C (AVX-512, AVX2 or SSE2, chosen at import), the blocks ordered
  by group of 32 anchors ``a``, then by ``b``, for cache reuse. On 1M rows of
  x3 patch statistics it ran at 1.1-1.5x one-thread dgemm per CPU-second
  (OpenBLAS's dgemm reaches about half this CPU's FMA peak), 2.7-3.4x numpy's
  path. Without the extension (or with ``use_compiled = False``), numpy: row
  ``a`` is two GEMMs (one small GEMM per *pair* runs at ~10% of BLAS speed),
  the first on anchor ``a``'s contiguous stack of blocks ``(a, b >= a)``, the
  second over the blocks ``(b < a, a)`` gathered from their stacks (0.4-0.5x
  dgemm).
* :func:`block_jacobi` inverts the regularised diagonal blocks;
  :func:`anchor_aggregates` groups strongly coupled anchors and
  :class:`AggregateJacobi` inverts ``G + alpha I`` restricted to each group.
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
from scipy.linalg import cho_factor, cho_solve
from sklearn.exceptions import ConvergenceWarning

from .._utils._optional import compiled_kernels_enabled
from .._utils._threads import single_threaded_blas
from .._utils._warnings import warn_user

try:  # the optional compiled Gram product; numpy does the same without it
    from . import _block_cg_gram
except ImportError:
    _block_cg_gram = None
if not compiled_kernels_enabled():  # ARN_SKLEARN_NUMPY_KERNELS=1
    _block_cg_gram = None

# Energy-norm relative tolerance of the iterative solve, below the documented
# 1e-6 agreement of predictions by the estimate's worst seen optimism: on 300k
# rows of x3 patch statistics the extrapolated ||e||_A^2 was 3.5x below the
# true one at its first check (then 1.3-3.6x above it); 1e-7 stopped two
# iterations late, at predictions within 5e-8 (benchmarks/cg_solve.py --trace).
DEFAULT_RTOL = 3e-7
# Iterations whose steps are summed into the error estimate.
_DELAY = 3
# Partners gathered per GEMM of a Gram product row: the gathered partners'
# rows (32 x 31 x 81 doubles, 640 KB) stay in L2 for the GEMM that reads them;
# gathering all of a row's 270-430 partners at once (8 MB) took 1.04x the time
# quiet and 1.1x the CPU time under load on 1M rows of x3 patch statistics
# (2-core EPYC), and buffers for the most partners of any anchor.
_GATHER_CHUNK = 32
# Iterations before giving up (with a ConvergenceWarning).
_MAX_ITER = 500
# Anchors a per group of the compiled product's blocks (a, b): a group's rows
# of V and of the output (2 x 32 x 31 x 88 doubles, 1.4 MB) stay in L2 (1 MB
# per core here) and L3, while its blocks, ordered by b, use each V_b and out_b
# from L1 for the whole group. On 1M rows of x3 patch statistics (2-core EPYC,
# loaded) 32 ran at 1.1-1.5x one-thread dgemm per CPU-second, 16 and 64 at
# 1.0-1.2 and 1.0-1.4 (one run); row-owning threads that read each block twice,
# 0.7-1.2 (one other run, with these at 1.1-1.4).
_GROUP_ROWS = 32


def compiled_product(dtype=np.float64, c_contiguous=True):
    """Whether :meth:`BlockRows.matmul` runs the compiled kernel on such blocks.

    True when the extension is built, its kernels for this CPU beat numpy's
    path (all but x86 without AVX2) and the blocks are float32 or float64 in C
    order (the statistics' are float64, C order): anything else takes numpy's
    path rather than a copy of the blocks. The solver's cost model asks the
    same question (:func:`~arn_sklearn._model._blocksparse.estimate_solver_seconds`).
    """
    return (
        _block_cg_gram is not None
        and _block_cg_gram.faster()
        and np.dtype(dtype) in (np.float32, np.float64)
        and bool(c_contiguous)
    )


class BlockRows:
    """A symmetric block-sparse matrix read straight from its stored upper blocks.

    Every stored block is symmetric (``G_ab = sum_i w_i v_ia v_ib x1_i x1_i^T``),
    so ``G_ba = G_ab`` and the upper blocks, sorted by key, hold the whole
    matrix: anchor ``a``'s blocks ``(a, b >= a)`` are one contiguous stack
    ``U_a`` of shape ``(P_a d1, d1)``, with no copy. Row ``a`` of ``G V`` is
    ``U_a^T [V_b]_{b >= a}`` (one GEMM on the stack in place) plus the same
    with the blocks ``(b, a)``, ``b < a``, gathered from their anchors' stacks
    into a per-thread buffer: each row is written by one thread only, with
    GEMMs whose inner dimension is the unknowns of at most 32 partners. On
    300k-1M rows of x3 patch statistics this numpy path ran at 0.39-0.48 of one
    dgemm's rate, as fast as or faster than a second copy of the blocks as
    block-row panels (0.23-0.49, twice the blocks' memory) and faster than
    scattering ``U_a V_a`` into the partners' rows (0.29-0.41), all measured in
    one run (``python benchmarks/bench_kernels.py cg``). The compiled kernel
    (see the module docstring) reads each stored block once for both of its
    products instead, each thread adding into its own output.

    Parameters
    ----------
    pair_keys : int64 ndarray of shape (n_pairs,)
        Keys ``a * n_anchors + b`` with ``a <= b`` of the stored blocks.
    blocks : ndarray of shape (n_pairs, d1, d1)
        Block ``(a, b)``, symmetric; kept by reference when the keys are sorted.
    n_anchors : int

    Attributes
    ----------
    lower, upper : int64 ndarrays of shape (n_pairs,)
        The anchors ``a <= b`` of each stored block, sorted by key.
    block_norms : ndarray of shape (n_pairs,)
        Frobenius norm of each stored block (the couplings of
        :func:`anchor_aggregates`).
    diagonal : ndarray of shape (n_anchors, d1, d1)
        The diagonal blocks (zero for an anchor without a stored one).
    use_compiled : bool
        Whether :meth:`matmul` runs the compiled kernel: True when the extension
        is built, its kernels for this CPU beat numpy's path (all but x86
        without AVX2) and the blocks are float32 or float64 in C order; set it
        to False to force the numpy path (tests, benchmarks).
    """

    def __init__(self, pair_keys, blocks, n_anchors):
        m = int(n_anchors)
        keys = np.asarray(pair_keys, dtype=np.int64)
        if keys.size > 1 and not np.all(keys[1:] > keys[:-1]):
            order = np.argsort(keys, kind="stable")
            keys, blocks = keys[order], blocks[order]
        self.blocks = blocks
        self.n_anchors, self.d1 = m, blocks.shape[1]
        self.lower, self.upper = keys // m, keys % m
        self.indptr = np.searchsorted(self.lower, np.arange(m + 1))
        self.block_norms = np.empty(keys.size)
        for s in range(0, keys.size, 4096):  # chunks: no n_pairs-sized temporary
            chunk = blocks[s : s + 4096]
            self.block_norms[s : s + 4096] = np.sqrt(np.einsum("kij,kij->k", chunk, chunk))
        self.diagonal = np.zeros((m, self.d1, self.d1))
        diag = np.flatnonzero(self.lower == self.upper)
        self.diagonal[self.lower[diag]] = blocks[diag]
        # Blocks of the full symmetric matrix, for the flop count.
        self.n_stored = 2 * keys.size - diag.size
        # The blocks (b, a), b < a, by column a: row a reads them (G_ab = G_ba).
        off = np.flatnonzero(self.lower != self.upper)
        by_column = off[np.argsort(self.upper[off], kind="stable")]
        self.mirror_ptr = np.searchsorted(self.upper[by_column], np.arange(m + 1))
        self.mirror_blocks, self.mirror_partners = by_column, self.lower[by_column]
        self.use_compiled = compiled_product(blocks.dtype, blocks.flags.c_contiguous)
        self._order = None

    @property
    def shape(self):
        p = self.n_anchors * self.d1
        return (p, p)

    def matmul(self, V, n_threads=1):
        """``G @ V`` for ``V`` of shape (p, t) or (p,).

        ``n_threads`` Python threads share the anchors: the compiled kernel
        releases the GIL and calls no BLAS; numpy's path (two GEMMs per row of
        anchors) releases it in BLAS, whose GEMMs are small, so BLAS runs on one
        thread there (callers hold
        :func:`arn_sklearn._utils._threads.single_threaded_blas`).
        """
        m, d1 = self.n_anchors, self.d1
        dtype = self.blocks.dtype  # float64 statistics; float32 for rate benchmarks
        V = np.ascontiguousarray(V, dtype=dtype)
        one_d = V.ndim == 1
        V2 = V[:, None] if one_d else V
        t = V2.shape[1]
        if self.use_compiled and _block_cg_gram is not None:
            out = self._compiled_matmul(V2, n_threads)
            return out[:, 0] if one_d else out
        V3 = V2.reshape(m, d1, t)
        n_threads = max(1, min(int(n_threads), m))
        out = np.empty((m, d1, t), dtype=dtype)

        def rows(task):
            # Per thread, reused: a chunk of gathered mirror blocks and partners' rows.
            blocks = np.empty((_GATHER_CHUNK, d1, d1), dtype=dtype)
            vectors = np.empty((_GATHER_CHUNK, d1, t), dtype=dtype)
            for a in range(task, m, n_threads):
                row = out[a]
                row[...] = 0.0
                # Row a over b >= a: U_a^T [V_b], the stack read in place.
                for s, e in _chunks(self.indptr[a], self.indptr[a + 1]):
                    stack = self.blocks[s:e].reshape((e - s) * d1, d1)
                    partners = _take(V3, self.upper[s:e], vectors)
                    row += stack.T @ partners.reshape((e - s) * d1, t)
                # Row a over b < a: the blocks (b, a) gathered from b's stacks.
                for s, e in _chunks(self.mirror_ptr[a], self.mirror_ptr[a + 1]):
                    stack = _take(self.blocks, self.mirror_blocks[s:e], blocks)
                    partners = _take(V3, self.mirror_partners[s:e], vectors)
                    row += stack.reshape((e - s) * d1, d1).T @ partners.reshape((e - s) * d1, t)

        if n_threads > 1:
            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(rows, range(n_threads)))
        else:
            rows(0)
        out = out.reshape(m * d1, t)
        return out[:, 0] if one_d else out

    def _compiled_matmul(self, V, n_threads):
        """``G @ V`` by the compiled kernel, ``V`` C-contiguous of shape (p, t)."""
        p, t = V.shape
        dtype = V.dtype
        row, col, block = self._pair_order()
        n_threads = max(1, min(int(n_threads), block.size))
        if t == 0 or block.size == 0:  # no columns, or no stored blocks
            return np.zeros((p, t), dtype=dtype)
        # The kernels work on whole vectors: columns padded to a multiple of
        # them, rows on 64-byte boundaries (the vectors' loads and stores then
        # never straddle two cache lines: 1.1x the rate of numpy's 16-byte ones).
        lanes = _block_cg_gram.lanes(dtype.itemsize)
        width = -(-t // lanes) * lanes
        padded = _aligned_empty((p, width), dtype)
        padded[:, :t] = V
        padded[:, t:] = 0.0
        # Each thread adds its share of the blocks' products into its own output.
        outs = [_aligned_empty((p, width), dtype) for _ in range(n_threads)]
        cuts = np.linspace(0, block.size, n_threads + 1).astype(np.int64)

        def run(task):
            outs[task][...] = 0.0
            _block_cg_gram.gram_pairs(
                self.blocks, row, col, block, cuts[task], cuts[task + 1], padded, outs[task]
            )

        if n_threads > 1:
            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(run, range(n_threads)))
        else:
            run(0)
        if n_threads == 1:
            return outs[0] if width == t else np.ascontiguousarray(outs[0][:, :t])
        out = np.add(outs[0][:, :t], outs[1][:, :t])  # the sum, unpadded, in one pass
        for other in outs[2:]:
            out += other[:, :t]
        return out

    def _pair_order(self):
        """The stored blocks in the compiled kernel's order, found once:
        ``(row, col, block)`` with ``row <= col`` the anchors of block ``block``,
        by group of ``_GROUP_ROWS`` consecutive rows, then by column."""
        if self._order is None:
            group = self.lower // _GROUP_ROWS
            block = np.lexsort((self.lower, self.upper, group))
            self._order = (self.lower[block], self.upper[block], block)
        return self._order

    def flops(self, n_columns):
        """Multiply-add flops (x2) of one :meth:`matmul` with ``n_columns`` columns."""
        return 2 * self.n_stored * self.d1 * self.d1 * n_columns

    def work_bytes(self, n_columns, n_threads=1):
        """Bytes one :meth:`matmul` allocates beyond its output: the threads'
        buffers (numpy), or ``V`` and each thread's output padded to whole
        vectors, and their sum's copy (compiled, at most 15 more columns)."""
        if self.use_compiled and _block_cg_gram is not None:
            return (n_threads + 2) * 8 * self.shape[0] * (n_columns + 15)
        return 8 * n_threads * _GATHER_CHUNK * self.d1 * (self.d1 + n_columns)

    @property
    def nbytes(self):
        """Bytes held beyond the stored blocks (which are the statistics')."""
        index = sum(
            a.nbytes
            for a in (self.lower, self.upper, self.indptr, self.mirror_ptr)
            + (self.mirror_blocks, self.mirror_partners)
            + (self._order or ())
        )
        return self.diagonal.nbytes + self.block_norms.nbytes + index


def _aligned_empty(shape, dtype, alignment=64):
    """``np.empty(shape, dtype)`` starting on an ``alignment``-byte boundary."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buffer = np.empty(size * dtype.itemsize + alignment, dtype=np.uint8)
    start = -buffer.ctypes.data % alignment
    return buffer[start : start + size * dtype.itemsize].view(dtype).reshape(shape)


def _chunks(start, stop):
    """``(s, e)`` ranges of at most ``_GATHER_CHUNK`` covering ``start .. stop``."""
    return ((s, min(s + _GATHER_CHUNK, stop)) for s in range(start, stop, _GATHER_CHUNK))


def _take(array, index, buffer):
    """``array[index]`` into the start of ``buffer`` (no allocation)."""
    # mode="clip": with the default "raise", take buffers its output (slow).
    return np.take(array, index, axis=0, out=buffer[: index.size], mode="clip")


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


def anchor_aggregates(rows, alpha, max_size):
    """Group the anchors into aggregates of strongly coupled ones.

    Block-Jacobi leaves to CG the error modes where neighbouring anchors'
    regressors cancel (anchors that share most of their samples); solving
    groups of such anchors together removes them. The anchor pairs are merged
    greedily, strongest first, into groups of at most ``max_size`` anchors;
    the strength of ``(a, b)`` is ``||G_ab||_F / sqrt(||D_a'||_F ||D_b'||_F)``
    with ``D' = D + alpha I`` its regularised diagonal blocks.

    Parameters
    ----------
    rows : BlockRows
    alpha : float
    max_size : int
        Most anchors per group.

    Returns
    -------
    labels : int64 ndarray of shape (n_anchors,)
        Group of each anchor, ``0 .. n_groups - 1``.
    """
    m, d1 = rows.n_anchors, rows.d1
    off = rows.lower != rows.upper
    a, b = rows.lower[off], rows.upper[off]
    coupling = rows.block_norms[off]
    scale = np.linalg.norm(rows.diagonal + alpha * np.eye(d1)[None], axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = coupling / np.sqrt(scale[a] * scale[b])
    parent = np.arange(m)
    size = np.ones(m, dtype=np.int64)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for e in np.argsort(-np.nan_to_num(strength), kind="stable"):
        ra, rb = root(a[e]), root(b[e])
        if ra != rb and size[ra] + size[rb] <= max_size:
            parent[rb] = ra
            size[ra] += size[rb]
    roots = np.array([root(i) for i in range(m)])
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


class AggregateJacobi:
    """Block-Jacobi preconditioner on anchor aggregates: ``M^{-1} R`` per group.

    ``M`` is ``G + alpha I`` with the blocks between different groups dropped;
    each group's dense inverse is applied with one GEMM. With one anchor per
    group this is the per-anchor block-Jacobi.

    Parameters
    ----------
    rows : BlockRows
    labels : int ndarray of shape (n_anchors,)
        Group of each anchor (:func:`anchor_aggregates`).
    alpha : float
    n_threads : int, default=1
        Python threads that share the groups in :meth:`__call__` (run it with
        BLAS on one thread, as :meth:`BlockRows.matmul`).
    """

    def __init__(self, rows, labels, alpha, n_threads=1):
        self.n_threads = int(n_threads)
        m, d1 = rows.n_anchors, rows.d1
        labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        starts = np.r_[0, np.cumsum(np.bincount(labels))]
        local = np.empty(m, dtype=np.int64)
        local[order] = np.arange(m) - starts[labels[order]]
        # The stored blocks inside a group, grouped: (a, b) and its mirror (b, a).
        inside = np.flatnonzero(labels[rows.lower] == labels[rows.upper])
        inside = inside[np.argsort(labels[rows.lower[inside]], kind="stable")]
        bounds = np.searchsorted(labels[rows.lower[inside]], np.arange(starts.size))
        self.parts = []
        for g in range(starts.size - 1):
            anchors = order[starts[g] : starts[g + 1]]
            n = anchors.size
            system = np.zeros((n, d1, n, d1))
            sel = inside[bounds[g] : bounds[g + 1]]
            i, j = local[rows.lower[sel]], local[rows.upper[sel]]
            system[j, :, i, :] = rows.blocks[sel].transpose(0, 2, 1)
            system[i, :, j, :] = rows.blocks[sel]
            system = system.reshape(n * d1, n * d1)
            system[np.diag_indices_from(system)] += alpha
            unknowns = (anchors[:, None] * d1 + np.arange(d1)[None, :]).ravel()
            self.parts.append((unknowns, system))

        def invert(part):
            return part[0], block_jacobi(part[1][None], 0.0)[0]

        # Threads share the inverses, each on one BLAS thread: under load a
        # threaded inverse of these ~500-square blocks ran 10x slower.
        with single_threaded_blas():
            if self.n_threads > 1 and len(self.parts) > 1:
                with ThreadPoolExecutor(self.n_threads) as pool:
                    self.parts = list(pool.map(invert, self.parts))
            else:
                self.parts = [invert(part) for part in self.parts]

    def __call__(self, R):
        """``M^{-1} R`` for ``R`` of shape (p, t)."""
        out = np.empty_like(R)

        def groups(parts):
            for unknowns, inverse in parts:
                out[unknowns] = inverse @ R[unknowns]

        if self.n_threads > 1 and len(self.parts) > 1:
            # Largest groups first, dealt round-robin: the threads get similar work.
            parts = sorted(self.parts, key=lambda part: -part[0].size)
            shares = [parts[i :: self.n_threads] for i in range(self.n_threads)]
            with ThreadPoolExecutor(self.n_threads) as pool:
                list(pool.map(groups, shares))
        else:
            groups(self.parts)
        return out

    @property
    def nbytes(self):
        return sum(inverse.nbytes for _, inverse in self.parts)


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
        Default 500; a column still iterating then raises a ``ConvergenceWarning``.
    shift : float
        ``alpha`` of ``A = G + alpha I``: the stopping rule compares the error
        with ``x^T G x = x^T A x - shift x^T x`` (the predictions' size).

    Returns
    -------
    X : ndarray of shape (p, t)
    n_iter : int
        Iterations of the slowest column.
    """
    if max_iter is None:
        max_iter = _MAX_ITER
    one_d, X, active, Xa, Ba, R = _start(matmul, precondition, B, x0)
    Zp = precondition(R)
    P = Zp.copy()
    rz = _column_dots(R, Zp)
    history = []
    n_iter = 0
    while active.size and n_iter < max_iter:
        n_iter += 1
        Q = matmul(P)
        pq = _column_dots(P, Q)
        ok = (pq > 0) & (rz > 0)
        step = np.where(ok, rz / np.where(ok, pq, 1.0), 0.0)
        Xa += P * step
        Q *= step
        R -= Q
        history.append(step * rz)  # ||x_{k+1} - x_k||_A^2 per column
        Zp = precondition(R)
        rz_new = _column_dots(R, Zp)
        size = _column_dots(Xa, Ba) - shift * _column_dots(Xa, Xa)
        done = ~ok | (_remaining_error(history) <= rtol * rtol * np.abs(size))
        beta = np.where(ok, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        P *= beta
        P += Zp
        rz = rz_new
        if np.any(done):
            X[:, active[done]] = Xa[:, done]
            keep = ~done
            active, rz = active[keep], rz[keep]
            Xa, Ba, R, P = Xa[:, keep], Ba[:, keep], R[:, keep], P[:, keep]
            history = [h[keep] for h in history[-2 * _DELAY :]]
    return _finish(X, active, Xa, one_d, n_iter, max_iter)


def _start(matmul, precondition, B, x0):
    """Set-up shared by both CG variants.

    Returns ``(one_d, X, active, Xa, Ba, R)``: the solution array (zero for
    zero right-hand sides), the indices of the columns to iterate, their start
    ``Xa``, right-hand sides ``Ba`` and residuals ``R``. The iterating columns
    are held contiguous (a column gather of a ``(p, t)`` array per update cost
    more than the Gram product); a column leaves them when it converges.
    """
    B = np.asarray(B, dtype=np.float64)
    one_d = B.ndim == 1
    B2 = B[:, None] if one_d else B
    p, t = B2.shape
    X = precondition(B2) if x0 is None else np.array(x0, dtype=np.float64).reshape(p, t)
    X = np.array(X, dtype=np.float64, order="C", copy=True)
    zero = ~np.any(B2 != 0, axis=0)
    X[:, zero] = 0.0
    active = np.flatnonzero(~zero)
    Xa, Ba = X[:, active], B2[:, active]
    return one_d, X, active, Xa, Ba, Ba - matmul(Xa)


def _finish(X, active, Xa, one_d, n_iter, max_iter):
    """``(X, n_iter)``, with the columns still iterating written back and a
    ``ConvergenceWarning`` when the iteration cap stopped them."""
    if active.size:
        X[:, active] = Xa
        if n_iter >= max_iter:
            warn_user(
                f"Conjugate gradients stopped after {max_iter} iterations with {active.size} "
                "target(s) short of the tolerance. Increase alpha, or use "
                "linear_solver='dense' or 'sparse'.",
                ConvergenceWarning,
            )
    return (X[:, 0] if one_d else X), n_iter


def _column_dots(U, V):
    """``sum_i U_ij V_ij`` per column."""
    return np.einsum("ij,ij->j", U, V)


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


def shared_block_pcg(
    matmul,
    precondition,
    B,
    x0=None,
    rtol=DEFAULT_RTOL,
    max_iter=None,
    shift=0.0,
    drop=1e-10,
    callback=None,
    n_threads=1,
):
    """Solve ``A X = B`` by block CG: all columns share one Krylov space.

    Breakdown-free block PCG (O'Leary 1980; Ji & Li 2017): each iteration
    takes the block of search directions ``P`` (orthonormal columns spanning
    the preconditioned residuals of every column still iterating, made
    ``A``-conjugate to the previous block), one product ``A P`` and the step
    ``(P^T A P)^{-1} P^T R`` for every column at once. Each column's iterate
    minimises its error's ``A``-norm over the sum of the spaces seen so far, so
    the stopping rule of :func:`block_pcg` (the step energies) holds per
    column. When the targets are correlated (the 81 pixels of a
    super-resolution patch), the shared space needs far fewer iterations than
    one Krylov space per column, at the cost of one Gram product of the same
    width; directions whose residuals are (nearly) dependent are dropped
    (``drop``: relative eigenvalue of the residual block's Gram matrix), which
    narrows the product.

    Parameters and returns are those of :func:`block_pcg`, and ``callback``:
    called as ``callback(X_active, active, estimate)`` after each iteration with
    the iterating columns' solution, their indices and their estimated squared
    error over the stopping rule's scale (for diagnostics); ``n_threads``:
    Python threads that share the rows of the ``p x t`` block work (about
    ``16 p t^2`` flops per iteration; run it with BLAS on one thread, as
    :meth:`BlockRows.matmul`).

    References
    ----------
    D. P. O'Leary, "The block conjugate gradient algorithm and related
    methods", Linear Algebra Appl. 29 (1980) 293-322.
    H. Ji and Y. Li, "A breakdown-free block conjugate gradient method",
    BIT Numer. Math. 57 (2017) 379-403.
    """
    if max_iter is None:
        max_iter = _MAX_ITER
    one_d, X, active, Xa, Ba, R = _start(matmul, precondition, B, x0)
    with _RowSplit(X.shape[0], n_threads) as split:
        P = _orthonormal(precondition(R), drop, split)
        history = []
        n_iter = 0
        while active.size and P.shape[1] and n_iter < max_iter:
            n_iter += 1
            Q = matmul(P)
            PQ, PR = split.inner(P, Q, R)
            PQ = 0.5 * (PQ + PQ.T)
            step = _spd_solve(PQ, PR)
            split.add_product(Xa, P, step)
            split.add_product(R, Q, -step)
            history.append(_column_dots(step, PQ @ step))  # ||x_{k+1} - x_k||_A^2
            Z = precondition(R)
            size = _column_dots(Xa, Ba) - shift * _column_dots(Xa, Xa)
            remaining = _remaining_error(history)
            if callback is not None:
                callback(Xa, active, remaining / np.abs(size))
            done = remaining <= rtol * rtol * np.abs(size)
            if np.any(done):
                X[:, active[done]] = Xa[:, done]
                keep = ~done
                active = active[keep]
                Xa, Ba, R, Z = Xa[:, keep], Ba[:, keep], R[:, keep], Z[:, keep]
                history = [h[keep] for h in history[-2 * _DELAY :]]
                if not active.size:
                    break
            # Z + P beta is A-conjugate to P: beta = -(P^T A P)^{-1} (A P)^T Z.
            (QZ,) = split.inner(Q, Z)
            split.add_product(Z, P, -_spd_solve(PQ, QZ))
            P = _orthonormal(Z, drop, split)
    return _finish(X, active, Xa, one_d, n_iter, max_iter)


class _RowSplit:
    """Threads that share the rows of block CG's ``p x t`` products.

    ``U^T V`` is summed over row slices; updates run on each slice in place.
    Each thread's GEMMs use one BLAS thread: under load, a threaded BLAS
    ran these products 6x slower than one thread (OpenBLAS, 2 cores shared).
    """

    def __init__(self, n_rows, n_threads):
        n_threads = max(1, min(int(n_threads), n_rows))
        cuts = np.linspace(0, n_rows, n_threads + 1).astype(np.int64)
        self.slices = [slice(cuts[i], cuts[i + 1]) for i in range(n_threads)]
        self.pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None

    def run(self, work):
        """``work(rows)`` for each row slice; returns their results."""
        if self.pool is None:
            return [work(slice(None))]
        return list(self.pool.map(work, self.slices))

    def inner(self, U, *Vs):
        """``U^T V`` for each of ``Vs``, as a tuple."""
        parts = self.run(lambda rows: [U[rows].T @ V[rows] for V in Vs])
        return tuple(sum(products) for products in zip(*parts, strict=True))

    def add_product(self, out, U, S):
        """``out += U @ S`` in place, by row slices."""

        def add(rows):
            out[rows] += U[rows] @ S

        self.run(add)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.pool is not None:
            self.pool.shutdown()


def _orthonormal(Y, drop, split):
    """Orthonormal columns spanning ``Y``'s, leaving out directions whose
    eigenvalue of ``Y^T Y`` is below ``drop`` times the largest.

    One pass of Cholesky-QR by eigenvectors: what is kept has a condition
    number below ``drop ** -0.5``, so its columns are orthonormal to about
    ``eps / drop`` (1e-6 at the default), enough for the small solves with
    ``P^T A P``, which need a well-conditioned ``P``, not an exact one.
    ``split`` (:class:`_RowSplit`) shares the products among threads.
    """
    (YY,) = split.inner(Y, Y)
    values, vectors = np.linalg.eigh(YY)
    if values.size == 0 or not values[-1] > 0:
        return Y[:, :0]
    keep = values > drop * values[-1]
    out = np.zeros((Y.shape[0], np.count_nonzero(keep)))
    split.add_product(out, Y, vectors[:, keep] / np.sqrt(values[keep]))
    return out


def _spd_solve(S, R):
    """``S^{-1} R`` for a small symmetric positive definite ``S``."""
    try:
        return cho_solve(cho_factor(S, lower=True), R)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(S, R, rcond=None)[0]
