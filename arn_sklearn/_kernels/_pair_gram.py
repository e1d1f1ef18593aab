"""Pair blocks of a top-k Gram matrix: per anchor, small GEMMs on rows held in cache.

A row with top-k anchors ``a_s`` (assignments ``v_s``, weight ``w``) adds
``w v_s v_t x1 x1^T`` (``x1 = [x, 1]``) to each block ``(a_s, a_t)`` and
``w v_s x1 [y, 1]^T`` to anchor ``a_s``'s rows of ``[Z^T Y, Z^T 1]``. Every
block is symmetric, so only ``a <= b`` is computed and stored.

:func:`accumulate_chunk` groups the chunk's (row, anchor) entries by anchor and
its (row, pair) entries by pair with linear radix sorts, then visits the
anchors in reverse Cuthill-McKee order of the pair graph (anchors that share
rows one after the other, contiguous runs per caller's thread). Anchor ``a``'s
rows are gathered once, a block of a few hundred rows that stays in cache,
and give in ONE GEMM its diagonal block and its ``Z^T Y`` rows
(``(w v_a x1)^T [v_a x1, y, 1]``). Each pair ``(a, b > a)`` with
``MIN_PAIR_ROWS`` rows or more is one GEMM on rows gathered from that cached
block; the pairs with fewer rows (most pairs of isotropic data) go through
batched matmuls over zero-padded stacks. When a quarter of the chunk's rows
or more share their whole top-k set with 15 others or more (overlapping
clusters), those rows go first through one GEMM per set (:class:`_FrequentSets`).

:class:`PairBlockStore` holds the blocks while a stream is accumulated: each
pair gets one slot the first time it is seen, slots fill pages in that order,
and :meth:`PairBlockStore.finish` returns the blocks sorted by key, freeing the
pages as they are copied out and sorting in place: the peak is the blocks
once plus one page. (The former per-chunk block buffer merged into a
reallocated union held the blocks three times: 10.6 GiB on isotropic data at
1M rows.)

Kernels: numpy arrays in, numpy arrays out; threads are the caller's (a runner
of task lists is passed in).
"""

import threading

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from .._utils._memory import available_memory_bytes

# Pairs with at least this many rows in a chunk get their own GEMM: the
# 31-wide GEMM ran at half of dgemm's single-core rate from 64 rows on, a
# third at 16, a tenth at 4 (benchmarks/bench_kernels.py accumulate).
MIN_PAIR_ROWS = 16

# Rows x pairs, and pairs, in one batched matmul of small pairs: bounds its
# gathered stack and its (pairs, d1, d1) product.
_SMALL_BATCH_ROWS = 1 << 15
_SMALL_BATCH_PAIRS = 2048

# Pages above glibc's largest dynamic mmap threshold (32 MiB) are mapped on
# their own, so a page freed by finish() goes back to the system at once.
PAGE_BYTES = 64 << 20

# A new page is refused (MemoryError) when less than this is left to the
# process: the blocks' count is only known as they arrive, and being killed by
# the system mid-accumulation tells the user nothing.
MIN_FREE_BYTES = 4 * PAGE_BYTES

# Up to this many anchors, pair slots are found in a dense m x m table
# (int32, 64 MiB at 4096 anchors); above, by binary search in sorted keys.
TABLE_MAX_ANCHORS = 4096


def _stable_order(keys, n_keys):
    """Stable argsort of integer ``keys`` in ``[0, n_keys)``; a radix sort below 2^16."""
    if n_keys <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


class PairBlockStore:
    """``(d1, d1)`` blocks keyed by anchor pair ``a * n_anchors + b``, grown without copies.

    :meth:`slots` may be called from several threads; blocks of distinct slots
    may be written concurrently.

    Parameters
    ----------
    n_anchors, d1 : int
    keys : int64 ndarray of shape (n,), optional
        Sorted keys of blocks to start from.
    blocks : ndarray of shape (n, d1, d1), optional
        Their blocks (copied).
    page_blocks : int, optional
        Blocks per page; default: pages of ``PAGE_BYTES``.
    table : bool, optional
        Find slots in a dense ``m x m`` table; default: up to
        ``TABLE_MAX_ANCHORS`` anchors.
    """

    def __init__(self, n_anchors, d1, keys=None, blocks=None, page_blocks=None, table=None):
        self.n_anchors, self.d1 = int(n_anchors), int(d1)
        self.page_blocks = page_blocks or max(1, PAGE_BYTES // (8 * d1 * d1))
        self.pages = []
        self._keys = [np.zeros(0, dtype=np.int64)]  # by slot, in parts
        self.n_pairs = 0
        self._lock = threading.Lock()
        if table is None:
            table = self.n_anchors <= TABLE_MAX_ANCHORS
        self._table = np.full(self.n_anchors**2, -1, dtype=np.int32) if table else None
        self._sorted_keys = np.zeros(0, dtype=np.int64)
        self._sorted_slots = np.zeros(0, dtype=np.int64)
        if keys is not None and len(keys):
            slots = self.slots(np.asarray(keys, dtype=np.int64))
            self.add(slots, np.asarray(blocks, dtype=np.float64))

    @property
    def keys(self):
        """Keys by slot."""
        if len(self._keys) > 1:
            self._keys = [np.concatenate(self._keys)]
        return self._keys[0]

    def slots(self, keys):
        """Slots of the unique ``keys``; unseen keys get new (zero) slots."""
        keys = np.asarray(keys, dtype=np.int64)
        with self._lock:
            if self._table is not None:
                out = self._table[keys].astype(np.int64)
                new = out < 0
            else:
                pos = np.searchsorted(self._sorted_keys, keys)
                new = pos >= self._sorted_keys.size
                new[~new] = self._sorted_keys[pos[~new]] != keys[~new]
                out = np.empty(keys.size, dtype=np.int64)
                out[~new] = self._sorted_slots[pos[~new]]
            n_new = int(np.count_nonzero(new))
            if n_new:
                fresh = self.n_pairs + np.arange(n_new)
                out[new] = fresh
                self._keys.append(keys[new])
                self.n_pairs += n_new
                if self._table is not None:
                    self._table[keys[new]] = fresh
                else:
                    merged = np.concatenate([self._sorted_keys, keys[new]])
                    order = np.argsort(merged, kind="stable")
                    self._sorted_keys = merged[order]
                    self._sorted_slots = np.concatenate([self._sorted_slots, fresh])[order]
                while len(self.pages) * self.page_blocks < self.n_pairs:
                    self._check_memory()
                    # calloc'd: a page costs memory only where blocks are written.
                    self.pages.append(np.zeros((self.page_blocks, self.d1, self.d1)))
            return out

    def _check_memory(self):
        available = available_memory_bytes()
        if available is not None and available < MIN_FREE_BYTES:
            held = len(self.pages) * self.page_blocks * 8 * self.d1 * self.d1
            share = self.n_pairs / (self.n_anchors * (self.n_anchors + 1) / 2)
            raise MemoryError(
                f"The top-k statistics ran out of memory: {self.n_pairs} anchor pairs "
                f"({share:.1%} of all pairs) share samples, {held / 2**30:.2f} GiB of "
                f"{self.d1}x{self.d1} blocks so far, and {available / 2**20:.0f} MiB are "
                "left. On data without cluster structure most anchors' top-k sets "
                "overlap: use fewer anchors, a smaller top_k, or fewer features."
            )

    def view(self, slot):
        """The ``(d1, d1)`` block of ``slot`` (a view to add into)."""
        page, offset = divmod(int(slot), self.page_blocks)
        return self.pages[page][offset]

    def add(self, slots, blocks):
        """``block[slots[i]] += blocks[i]`` for distinct ``slots``."""
        page_of = slots // self.page_blocks
        for page in np.unique(page_of):
            sel = np.flatnonzero(page_of == page)
            # Slots are distinct, so the fancy += has no repeated index.
            self.pages[page][slots[sel] - page * self.page_blocks] += blocks[sel]

    def finish(self):
        """``(keys, blocks)`` sorted by key; the store is left empty.

        Pages are copied out in slot order, each freed once copied, and the
        blocks then sorted in place: the peak is the blocks once plus a page.
        (Scattering each page straight to its sorted places touches the whole
        output early, as blocks share memory pages: that peak was 1.75x.)
        """
        keys = self.keys
        n = keys.size
        out = np.empty((n, self.d1, self.d1))
        for i in range(len(self.pages)):
            start = i * self.page_blocks
            stop = min(start + self.page_blocks, n)
            out[start:stop] = self.pages[i][: stop - start]
            self.pages[i] = None
        self.pages = []
        order = np.argsort(keys)
        _permute_in_place(out, order)
        return keys[order], out


def _permute_in_place(A, order):
    """``A[:] = A[order]`` one cycle of the permutation at a time, one row of temporary."""
    moved = np.flatnonzero(order != np.arange(order.size))
    if not moved.size:
        return
    order = order.tolist()
    done = bytearray(len(order))
    for start in moved.tolist():
        if done[start]:
            continue
        saved = A[start].copy()
        j = start
        while True:
            done[j] = 1
            k = order[j]
            if k == start:
                A[j] = saved
                break
            A[j] = A[k]
            j = k


def _sequential(tasks):
    for task in tasks:
        task()


def accumulate_chunk(X, Y, w, idx, vals, store, zty1, run=_sequential, n_tasks=1):
    """Add one chunk's pair blocks to ``store`` and its ``[Z^T Y, Z^T 1]`` to ``zty1``.

    Parameters
    ----------
    X : ndarray of shape (b, d)
    Y : ndarray of shape (b, t)
    w : ndarray of shape (b,)
        Non-negative sample weights.
    idx, vals : ndarrays of shape (b, k)
        Top-k anchors (distinct within a row) and their assignments.
    store : PairBlockStore
        Receives ``sum_i w_i v_ia v_ib x1_i x1_i^T`` at key ``a * m + b``, ``a <= b``.
    zty1 : ndarray of shape (n_anchors, d + 1, t + 1)
        ``sum_i w_i v_ia x1_i [y_i, 1]^T`` is added to it.
    run : callable
        ``run(tasks)`` calls every callable of the list ``tasks`` (e.g. one per
        thread); the tasks write disjoint blocks.
    n_tasks : int
        Number of tasks to split the work into.
    """
    m = store.n_anchors
    d1 = X.shape[1] + 1
    t1 = Y.shape[1] + 1
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    vals = np.ascontiguousarray(vals, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    n = max(1, int(n_tasks))
    sets = _FrequentSets.find(X, Y, w, idx, vals, m, n)
    if sets is not None:
        # The other rows go through the per-anchor path below.
        rest = sets.rest
        X, Y, w, idx, vals = X[rest], Y[rest], w[rest], idx[rest], vals[rest]
    b, k = idx.shape
    X1 = np.empty((b + 1, d1))  # a last zero row pads the small-pair stacks
    X1[:b, :-1] = X
    X1[:b, -1] = 1.0
    X1[b] = 0.0

    # Entries (row, slot) grouped by anchor, rows increasing within an anchor.
    flat = idx.ravel()
    by_anchor = _stable_order(flat, m)
    a_ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=m), out=a_ptr[1:])
    a_rows = by_anchor // k
    a_vals = vals.ravel()[by_anchor]
    local = np.empty(b * k, dtype=np.int64)  # an entry's position among its anchor's rows
    local[by_anchor] = np.arange(b * k) - np.repeat(a_ptr[:-1], np.diff(a_ptr))
    anchors = np.flatnonzero(np.diff(a_ptr))
    diag_slots = np.zeros(m, dtype=np.int64)
    diag_slots[anchors] = store.slots(anchors * (m + 1))

    # Entries (row, s < t) grouped by pair (lo, hi): two stable radix passes.
    iu, ju = np.triu_indices(k, 1)
    lo, hi = idx[:, iu], idx[:, ju]
    swap = lo > hi
    lo, hi = np.where(swap, hi, lo).ravel(), np.where(swap, lo, hi).ravel()
    # The position of the lower anchor's entry among that anchor's rows.
    lo_local = np.where(swap, local.reshape(b, k)[:, ju], local.reshape(b, k)[:, iu]).ravel()
    coef = (vals[:, iu] * vals[:, ju] * w[:, None]).ravel()
    p_order = _stable_order(hi, m)
    p_order = p_order[_stable_order(lo[p_order], m)]
    p_keys = lo[p_order] * m + hi[p_order]
    starts = np.flatnonzero(np.r_[True, p_keys[1:] != p_keys[:-1]]) if p_keys.size else p_keys
    counts = np.diff(np.r_[starts, p_keys.size])
    pair_keys = p_keys[starts]
    p_rows = p_order // iu.size
    p_coef = coef[p_order]
    p_local = lo_local[p_order]
    del lo, hi, swap, lo_local, coef, p_keys, p_order
    # New pairs get their slots here, before any task writes.
    pair_slots = store.slots(pair_keys)
    large = counts >= MIN_PAIR_ROWS
    # The large pairs of each anchor: a range of the (lo-sorted) pair list.
    large_ids = np.flatnonzero(large)
    l_ptr = np.searchsorted(pair_keys[large_ids] // m, np.arange(m + 1))
    max_rows = int(np.diff(a_ptr).max()) if b else 0
    max_pair_rows = int(counts[large].max()) if large.any() else 0

    def anchor_task(anchor_list):
        # Buffers reused across anchors: fresh temporaries of a few hundred kB
        # cost page faults comparable to the GEMMs.
        Xa_buf = np.empty((max_rows, d1))
        Wa_buf = np.empty((max_rows, d1))
        right = np.empty((max_rows, d1 + t1))  # [v_a x1, y, 1]
        right[:, -1] = 1.0
        P_buf = np.empty((max_pair_rows, d1))
        S_buf = np.empty((max_pair_rows, d1))
        R = np.empty((d1, d1 + t1))
        tmp = np.empty((d1, d1))
        for a in anchor_list:
            s, e = a_ptr[a], a_ptr[a + 1]
            L = e - s
            rows = a_rows[s:e]
            Xa, Wa, B = Xa_buf[:L], Wa_buf[:L], right[:L]
            np.take(X1, rows, axis=0, out=Xa)
            np.multiply(Xa, a_vals[s:e, None], out=B[:, :d1])
            np.take(Y, rows, axis=0, out=B[:, d1:-1])
            np.multiply(B[:, :d1], w[rows, None], out=Wa)
            # One GEMM: the diagonal block and the anchor's [Z^T Y, Z^T 1] rows.
            np.matmul(Wa.T, B, out=R)
            store.view(diag_slots[a])[...] += R[:, :d1]
            zty1[a] += R[:, d1:]
            for j in large_ids[l_ptr[a] : l_ptr[a + 1]]:
                ps, pe = starts[j], starts[j] + counts[j]
                P, S = P_buf[: pe - ps], S_buf[: pe - ps]
                np.take(Xa, p_local[ps:pe], axis=0, out=P)
                np.multiply(P, p_coef[ps:pe, None], out=S)
                np.matmul(S.T, P, out=tmp)
                store.view(pair_slots[j])[...] += tmp

    # Small pairs: stacks padded to a power of two rows (the zero row of X1).
    small_ids = np.flatnonzero(~large)
    padded = 1 << np.ceil(np.log2(np.maximum(counts[small_ids], 1))).astype(np.int64)
    batches = []
    for n_rows in np.unique(padded):
        sel = small_ids[padded == n_rows]
        per = max(1, min(_SMALL_BATCH_ROWS // int(n_rows), _SMALL_BATCH_PAIRS))
        batches.extend((int(n_rows), sel[i : i + per]) for i in range(0, sel.size, per))

    def small_task(batch_list):
        for n_rows, sel in batch_list:
            pos = starts[sel][:, None] + np.arange(n_rows)[None, :]
            valid = np.arange(n_rows)[None, :] < counts[sel][:, None]
            pos = np.where(valid, pos, 0)
            P = X1[np.where(valid, p_rows[pos], b)]  # (n_sel, n_rows, d1)
            C = np.where(valid, p_coef[pos], 0.0)
            store.add(pair_slots[sel], np.matmul((P * C[:, :, None]).transpose(0, 2, 1), P))

    # Anchors that share rows run one after the other (reverse Cuthill-McKee
    # order of the pair graph): their rows are still in cache. Each task takes
    # a contiguous run of that order with about its share of the rows.
    anchors = _cache_order(anchors, pair_keys, counts, m)
    work = np.cumsum(np.diff(a_ptr)[anchors])
    cuts = np.searchsorted(work, work[-1] * np.arange(1, n) / n) if anchors.size else []
    parts = np.split(anchors, cuts) if anchors.size else [anchors] * n
    tasks = [(lambda t=t: (anchor_task(parts[t]), small_task(batches[t::n]))) for t in range(n)]
    if sets is not None:
        tasks = [(lambda t=t, task=task: (sets.task(t), task())) for t, task in enumerate(tasks)]
    run(tasks)
    if sets is not None:
        sets.add_to(store, zty1)


class _FrequentSets:
    """Rows whose whole top-k set recurs: all their blocks by one GEMM per set.

    Rows with the same anchors ``S`` share every block of ``S x S``: stacking
    their lifted rows ``u = sqrt(w) [v_1 x1, ..., v_k x1]`` (anchors sorted)
    into ``U`` gives all of them, and their ``Z^T [Y, 1]`` rows, as
    ``U^T [U, sqrt(w) Y, sqrt(w)]``: a ``k (d + 1)``-wide GEMM that runs near
    dgemm's rate. On overlapping clusters 95% of the rows fall in sets of
    ``MIN_SET_ROWS`` rows or more (on well-separated clusters, with 16 anchors
    per cluster, under 15%: there the path is skipped). Each task sums into its
    own buffers, added to the store once all tasks are done.
    """

    MIN_SET_ROWS = 16
    MIN_SHARE = 0.25
    # The tasks' block and Z^T Y buffers together (46 MiB each on 1024 anchors
    # of overlapping clusters); beyond, the per-anchor path takes every row.
    MAX_BUFFER_BYTES = 256 << 20

    @classmethod
    def find(cls, X, Y, w, idx, vals, m, n_tasks):
        b, k = idx.shape
        if k < 2 or k * np.log2(max(m, 2)) >= 62:
            return None
        order = np.argsort(idx, axis=1)
        sidx = np.take_along_axis(idx, order, axis=1)
        codes = np.zeros(b, dtype=np.int64)
        for j in range(k):
            codes = codes * m + sidx[:, j]
        rows = np.argsort(codes, kind="stable")
        sorted_codes = codes[rows]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        sizes = np.diff(np.r_[starts, b])
        big = sizes >= cls.MIN_SET_ROWS
        if sizes[big].sum() < cls.MIN_SHARE * b:
            return None
        self = cls()
        starts, sizes = starts[big], sizes[big]
        member = np.repeat(starts, sizes) + (
            np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        )
        handled = np.zeros(b, dtype=bool)
        self.rows = rows[member]  # contiguous per set
        handled[self.rows] = True
        self.rest = np.flatnonzero(~handled)
        self.offsets = np.r_[0, np.cumsum(sizes)]
        self.anchors = sidx[rows[starts]]  # (n_sets, k), increasing
        self.values = np.take_along_axis(vals, order, axis=1)[self.rows]
        self.X, self.Y, self.w, self.m = X, Y, w, m
        iu, ju = np.triu_indices(k)
        self.iu, self.ju = iu, ju
        set_keys = self.anchors[:, iu] * m + self.anchors[:, ju]
        self.keys = np.unique(set_keys)
        d1, t1 = X.shape[1] + 1, Y.shape[1] + 1
        if n_tasks * 8 * (self.keys.size * d1 * d1 + m * d1 * t1) > cls.MAX_BUFFER_BYTES:
            return None
        self.slots = np.searchsorted(self.keys, set_keys)
        self.n_tasks = n_tasks
        self.blocks = [np.zeros((self.keys.size, d1, d1)) for _ in range(n_tasks)]
        self.zty = [np.zeros((m, d1, t1)) for _ in range(n_tasks)]
        return self

    def task(self, t):
        """Sets ``t, t + n_tasks, ...`` into buffer ``t``."""
        k = self.anchors.shape[1]
        d1, t1 = self.X.shape[1] + 1, self.Y.shape[1] + 1
        blocks, zty = self.blocks[t], self.zty[t]
        # Buffers reused across sets (fresh ones of ~200 kB cost page faults).
        right_buf = np.empty((int(np.diff(self.offsets).max()), k * d1 + t1))
        product = np.empty((k * d1, k * d1 + t1))
        for g in range(t, self.anchors.shape[0], self.n_tasks):
            s, e = self.offsets[g], self.offsets[g + 1]
            r = self.rows[s:e]
            sw = np.sqrt(self.w[r])
            right = right_buf[: e - s]
            U = right[:, : k * d1].reshape(e - s, k, d1)
            U[:, :, :-1] = self.X[r][:, None, :]
            U[:, :, -1] = 1.0
            U *= (self.values[s:e] * sw[:, None])[:, :, None]
            np.multiply(self.Y[r], sw[:, None], out=right[:, k * d1 : -1])
            right[:, -1] = sw
            np.matmul(right[:, : k * d1].T, right, out=product)
            gram4 = product[:, : k * d1].reshape(k, d1, k, d1)
            # Slots are distinct within a set, so the fancy += has no repeats.
            blocks[self.slots[g]] += gram4[self.iu, :, self.ju, :]
            zty[self.anchors[g]] += product[:, k * d1 :].reshape(k, d1, t1)

    def add_to(self, store, zty1):
        blocks = self.blocks[0]
        for extra in self.blocks[1:]:
            blocks += extra
        store.add(store.slots(self.keys), blocks)
        for extra in self.zty:
            zty1 += extra


def _cache_order(anchors, pair_keys, counts, m):
    """``anchors`` in reverse Cuthill-McKee order of their pair graph."""
    if not pair_keys.size:
        return anchors
    weights = counts.astype(np.float64)
    graph = sp.csr_matrix((weights, (pair_keys // m, pair_keys % m)), shape=(m, m))
    order = reverse_cuthill_mckee((graph + graph.T).tocsr(), symmetric_mode=True)
    present = np.zeros(m, dtype=bool)
    present[anchors] = True
    return order[present[order]].astype(np.int64)
