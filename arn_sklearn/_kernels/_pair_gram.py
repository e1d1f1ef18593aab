"""Pair blocks of a top-k Gram matrix: per-anchor GEMMs and batched per-pair dsyrk.

A row with top-k anchors ``a_s`` (assignments ``v_s``, weight ``w``) adds
``w v_s v_t x1 x1^T`` (``x1 = [x, 1]``) to each block ``(a_s, a_t)`` and
``w v_s x1 [y, 1]^T`` to anchor ``a_s``'s rows of ``[Z^T Y, Z^T 1]``. Every
block is symmetric, so only ``a <= b`` is computed and stored.

:func:`accumulate_chunk` cuts its work in tasks shared by the caller's
threads. First, each anchor's rows (grouped by a linear radix sort) are
gathered once and give in ONE GEMM its diagonal block and its ``Z^T Y`` rows
(``[v_a x1, y, 1]^T (w v_a x1)``), while one task groups the chunk's
(row, pair) entries by pair with a single sort of packed ``key << bits |
entry`` integers. Next (no barrier), each pair block is the Gram matrix ``Q^T Q`` of its
rows scaled by ``sqrt(w v_a v_b)``: by the compiled kernel where it is built;
else pairs of 256 rows or more alone (one dsyrk per 4096 rows) and the others
(isotropic data has most of its pairs under 16 rows in a chunk) in batched
matmuls over stacks padded to 2, 4, 8 or a multiple of 8 rows, about 1 MiB
each. When a quarter of the chunk's rows or more share their whole top-k set
with 15 others or more (overlapping clusters), those rows go first through
one GEMM per set (:class:`_FrequentSets`).

The compiled kernel (``_pair_gram_c.pyx``, an optional extension: see
``setup.py``) takes every pair: it gathers a pair's scaled rows 64 at a time,
sums them in 4 x 8 register tiles and adds the result to the upper triangle of
the pair's packed store block, one ``nogil`` call per piece of about 16k
entries, so that the task threads run in parallel; :meth:`PairBlockStore.finish`
then unpacks the triangles. It replaced
the per-pair BLAS calls on stacks of a few rows, the padded gathers and the
store's read-add-write of whole blocks. The anchors' GEMMs stay on BLAS (their
``Z^T Y`` product, 113 x 31 per row at d = 30, t = 81, runs near BLAS speed).
Dispatch is here, in one place: the compiled kernel runs when it imports and
``COMPILED`` is true (inputs reaching this module are numpy arrays; CuPy and
other array-API inputs take ``_model._blocksparse``'s generic path). The
private switch ``COMPILED = False`` (or ``ARN_SKLEARN_NUMPY_KERNELS=1`` in the
environment at import) forces the numpy path, for tests and benchmarks.

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

from .._utils._memory import available_memory_bytes
from .._utils._optional import compiled_kernels_enabled

try:
    from . import _pair_gram_c
except ImportError:  # the optional extension is not built: numpy alone
    _pair_gram_c = None
if getattr(_pair_gram_c, "KERNEL_VERSION", None) != 2:
    # A stale in-place build (another store layout) would corrupt the blocks.
    _pair_gram_c = None

# Private switch: False runs the numpy path where the compiled kernel is built
# (tests and benchmarks compare the two); ARN_SKLEARN_NUMPY_KERNELS=1 clears it at import.
COMPILED = _pair_gram_c is not None and compiled_kernels_enabled()

# Rows (padded) and pairs in one batched matmul of pair blocks: its gathered
# stack (1 MiB at d = 30) and its (pairs, d1, d1) product stay in cache.
_BATCH_ROWS = 4096
_BATCH_PAIRS = 512
# Entries per call of the compiled kernel (a task's unit of work).
_COMPILED_ENTRIES = 16384
# Blocks added to the store at a time (a 0.5 MiB temporary at d = 30).
_ADD_BLOCKS = 64
# A pair of at least this many rows is a batch of its own (one dsyrk per
# _BATCH_ROWS rows); below, pairs share a batched matmul of padded stacks.
_OWN_BATCH_ROWS = 256

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
    may be written concurrently. A ``packed`` store (the compiled kernel's)
    holds each symmetric block as its upper triangle, row by row
    (``d1 (d1 + 1) / 2`` values: about half the pages, the fresh memory and the
    traffic of the adds); :meth:`finish` returns full blocks either way.

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
    packed : bool, optional
        Store upper triangles; default: where the compiled kernel runs
        (``COMPILED``), which then adds the small pairs' blocks.
    """

    def __init__(
        self, n_anchors, d1, keys=None, blocks=None, page_blocks=None, table=None, packed=None
    ):
        self.n_anchors, self.d1 = int(n_anchors), int(d1)
        self.packed = COMPILED if packed is None else bool(packed)
        self.block_shape = (d1 * (d1 + 1) // 2,) if self.packed else (d1, d1)
        self._triu = np.triu_indices(d1)
        self.page_blocks = page_blocks or max(1, PAGE_BYTES // (8 * int(np.prod(self.block_shape))))
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

    def slots(self, keys, return_first_new=False):
        """Slots of the unique ``keys``; unseen keys get new (zero) slots.

        With ``return_first_new``, also the first slot this call made: the
        slots from there on are new, never written yet (see :meth:`add`).
        """
        keys = np.asarray(keys, dtype=np.int64)
        with self._lock:
            first_new = self.n_pairs
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
                    self.pages.append(np.zeros((self.page_blocks, *self.block_shape)))
            return (out, first_new) if return_first_new else out

    def _check_memory(self):
        available = available_memory_bytes()
        if available is not None and available < MIN_FREE_BYTES:
            held = len(self.pages) * self.page_blocks * 8 * int(np.prod(self.block_shape))
            share = self.n_pairs / (self.n_anchors * (self.n_anchors + 1) / 2)
            raise MemoryError(
                f"The top-k statistics ran out of memory: {self.n_pairs} anchor pairs "
                f"({share:.1%} of all pairs) share samples, {held / 2**30:.2f} GiB of "
                f"{self.d1}x{self.d1} blocks so far, and {available / 2**20:.0f} MiB are "
                "left. On data without cluster structure most anchors' top-k sets "
                "overlap: use fewer anchors, a smaller top_k, or fewer features."
            )

    def add_block(self, slot, block):
        """``block[slot] += block`` for one symmetric ``(d1, d1)`` block."""
        page, offset = divmod(int(slot), self.page_blocks)
        self.pages[page][offset] += block[self._triu] if self.packed else block

    def add(self, slots, blocks, buffer=None, first_new=None):
        """``block[slots[i]] += blocks[i]`` for distinct ``slots``.

        Runs of ``_ADD_BLOCKS`` blocks at a time through ``buffer`` (shape
        ``(_ADD_BLOCKS, d1, d1)``; one is made if None): a fancy ``+=`` of a
        whole batch made and freed temporaries of megabytes, whose fresh pages
        cost more system time than the sums (8 of 15 s on isotropic data).
        Increasing ``slots`` read the pages in order. Slots from ``first_new``
        on (if given) are known to be still zero: they are written without
        being read, which also spares the fresh page a read fault.
        """
        if self.packed:
            blocks = blocks[:, self._triu[0], self._triu[1]]
            buffer = None
        if buffer is None:
            buffer = np.empty((_ADD_BLOCKS, *self.block_shape))
        n_page = self.page_blocks
        for s in range(0, slots.size, _ADD_BLOCKS):
            part, values = slots[s : s + _ADD_BLOCKS], blocks[s : s + _ADD_BLOCKS]
            page_of = part // n_page
            if (page_of == page_of[0]).all():
                runs = [(int(page_of[0]), part, values)]
            else:
                sels = [(p, np.flatnonzero(page_of == p)) for p in np.unique(page_of).tolist()]
                runs = [(p, part[sel], values[sel]) for p, sel in sels]
            for page, part_slots, part_values in runs:
                local = part_slots - page * n_page
                if first_new is not None:
                    fresh = part_slots >= first_new
                    if fresh.all():
                        self.pages[page][local] = part_values
                        continue
                    if fresh.any():
                        self.pages[page][local[fresh]] = part_values[fresh]
                        local, part_values = local[~fresh], part_values[~fresh]
                tmp = buffer[: local.size]
                np.take(self.pages[page], local, axis=0, out=tmp, mode="clip")
                tmp += part_values
                # Slots are distinct, so the fancy assignment has no repeated index.
                self.pages[page][local] = tmp

    def finish(self):
        """``(keys, blocks)`` sorted by key; the store is left empty.

        Pages are copied out in slot order (packed triangles unpacked to full
        blocks), each freed once copied, and the blocks then sorted in place:
        the peak is the blocks once plus a page.
        (Scattering each page straight to its sorted places touches the whole
        output early, as blocks share memory pages: that peak was 1.75x.)
        """
        keys = self.keys
        n = keys.size
        out = np.empty((n, self.d1, self.d1))
        for i in range(len(self.pages)):
            start = i * self.page_blocks
            stop = min(start + self.page_blocks, n)
            if self.packed:
                _unpack_upper(self.pages[i][: stop - start], out[start:stop], self._triu)
            else:
                out[start:stop] = self.pages[i][: stop - start]
            self.pages[i] = None
        self.pages = []
        order = np.argsort(keys)
        _permute_in_place(out, order)
        return keys[order], out


def _unpack_upper(packed, out, triu):
    """Full symmetric blocks ``out`` from their row-major upper triangles ``packed``."""
    if _pair_gram_c is not None:
        _pair_gram_c.unpack_upper(packed, out)
        return
    out[:, triu[0], triu[1]] = packed
    out[:, triu[1], triu[0]] = packed


def _permute_in_place(A, order):
    """``A[:] = A[order]`` one cycle of the permutation at a time, one row of temporary."""
    if COMPILED:  # the same cycles, without a Python step per block (1 s at 360k blocks)
        _pair_gram_c.permute_in_place(A, np.ascontiguousarray(order, dtype=np.int64))
        return
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
        Top-k anchors (distinct within a row) and their non-negative assignments.
    store : PairBlockStore
        Receives ``sum_i w_i v_ia v_ib x1_i x1_i^T`` at key ``a * m + b``, ``a <= b``.
    zty1 : ndarray of shape (n_anchors, d + 1, t + 1)
        ``sum_i w_i v_ia x1_i [y_i, 1]^T`` is added to it.
    run : callable
        ``run(tasks)`` calls every callable of the list ``tasks``, in any order
        and on any thread (e.g. a pool's workers taking them in turn); the tasks
        write disjoint blocks. Taken in list order, no task waits for another.
    n_tasks : int
        Number of threads the tasks are shared by (the work is cut in about
        ``4 n_tasks`` parts of each kind so that the threads finish together).
    """
    m = store.n_anchors
    d1 = X.shape[1] + 1
    t1 = Y.shape[1] + 1
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    vals = np.ascontiguousarray(vals, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    if idx.size and (w.min() < 0 or vals.min() < 0):
        # The pair blocks are Gram matrices of rows scaled by sqrt(w v_a v_b).
        raise ValueError("accumulate_chunk needs non-negative weights and assignments.")
    for i, j in zip(*np.triu_indices(idx.shape[1], 1), strict=True):
        # A repeated anchor would make a "pair" of the diagonal block.
        same = np.flatnonzero(idx[:, i] == idx[:, j])
        if same.size:
            raise ValueError(
                f"accumulate_chunk needs distinct anchors within a row: row {same[0]} "
                f"has anchor {idx[same[0], i]} twice."
            )
    n = max(1, int(n_tasks))
    sets = _FrequentSets.find(X, Y, w, idx, vals, m, n)
    if sets is not None:
        # The other rows go through the per-anchor path below.
        rest = sets.rest
        X, Y, w, idx, vals = X[rest], Y[rest], w[rest], idx[rest], vals[rest]
    b, k = idx.shape
    X1 = np.empty((b + 1, d1))  # a last zero row pads the pair stacks
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
    anchors = np.flatnonzero(np.diff(a_ptr))
    diag_slots = np.zeros(m, dtype=np.int64)
    diag_slots[anchors] = store.slots(anchors * (m + 1))
    max_rows = int(np.diff(a_ptr).max()) if b else 0
    weighted = bool(b) and not (w.min() == 1.0 and w.max() == 1.0)

    def anchor_task(anchor_list):
        # Buffers reused across anchors: fresh temporaries of a few hundred kB
        # cost page faults comparable to the GEMMs.
        Wa_buf = np.empty((max_rows, d1))
        right = np.empty((max_rows, d1 + t1))  # [v_a x1, y, 1]
        right[:, -1] = 1.0
        RT = np.empty((d1 + t1, d1))
        for a in anchor_list:
            s, e = a_ptr[a], a_ptr[a + 1]
            rows = a_rows[s:e]
            B = right[: e - s]
            # mode="clip": with "raise", take copies through a buffer (2x slower).
            np.take(X1, rows, axis=0, out=B[:, :d1], mode="clip")
            B[:, :d1] *= a_vals[s:e, None]
            np.take(Y, rows, axis=0, out=B[:, d1:-1], mode="clip")
            Wa = B[:, :d1]
            if weighted:
                Wa = np.multiply(Wa, w[rows, None], out=Wa_buf[: e - s])
            # One GEMM: the diagonal block and the anchor's [Z^T Y, Z^T 1] rows,
            # transposed (B^T Wa ran 1.25x faster than Wa^T B at d = 30, t = 81).
            np.matmul(B.T, Wa, out=RT)
            store.add_block(diag_slots[a], RT[:d1])  # symmetric
            zty1[a] += RT[d1:].T

    n_parts = 4 * n if n > 1 else 1
    grouped = []
    grouping = threading.Lock()

    def group_pairs():
        """The pair batches and their share per pair task (once, by whichever task comes first)."""
        with grouping:
            if not grouped:
                entries = _PairEntries(idx, vals, w, m)
                # New pairs get their slots here, before any task writes them.
                slots, first_new = store.slots(entries.keys, return_first_new=True)
                if store.packed and _pair_gram_c is not None:
                    batches = entries.compiled_runs(slots, store)
                else:
                    batches = entries.batches(b, slots)
                bounds = [0] * (n_parts + 1)
                if batches:
                    work = np.cumsum([batch.work for batch in batches])
                    cuts = np.searchsorted(work, work[-1] * np.arange(1, n_parts) / n_parts)
                    bounds = np.r_[0, cuts, len(batches)].tolist()
                grouped.append((slots, first_new, batches, bounds))
        return grouped[0]

    def pair_task(part):
        slots, first_new, batches, bounds = group_pairs()
        # Buffers for every batch of the part: no fresh pages per batch.
        buffers = None
        for batch in batches[bounds[part] : bounds[part + 1]]:
            if isinstance(batch, _CompiledRun):
                batch.add_to(X1, first_new)
                continue
            if buffers is None:
                buffers = _PairBatch.buffers(d1)
                add_buffer = np.empty((_ADD_BLOCKS, d1, d1))
            store.add(slots[batch.ids], batch.gram(X1, *buffers), add_buffer, first_new)

    # One list of tasks, taken in turn by the threads: the pairs are grouped
    # while the anchors' GEMMs run, and their blocks follow without a barrier.
    work = np.cumsum(np.diff(a_ptr)[anchors])
    cuts = np.searchsorted(work, work[-1] * np.arange(1, n_parts) / n_parts) if b else []
    tasks = [group_pairs] + [
        (lambda part=part: anchor_task(part)) for part in np.split(anchors, cuts) if part.size
    ]
    if sets is not None:
        tasks += [(lambda t=t: sets.task(t)) for t in range(n)]
    run(tasks + [(lambda part=part: pair_task(part)) for part in range(n_parts)])
    if sets is not None:
        sets.add_to(store, zty1)


class _PairEntries:
    """A chunk's (row, anchor pair) entries grouped by pair ``(lo, hi)``, ``lo < hi``.

    Attributes
    ----------
    keys : int64 ndarray of shape (n_pairs,)
        Sorted pair keys ``lo * m + hi``.
    starts, counts : int64 ndarrays of shape (n_pairs,)
        Each pair's run of entries.
    rows, scale : ndarrays of shape (n_entries,)
        An entry's row and ``sqrt(w v_lo v_hi)``.
    """

    def __init__(self, idx, vals, w, m):
        b, k = idx.shape
        iu, ju = np.triu_indices(k, 1)
        lo, hi = idx[:, iu], idx[:, ju]
        keys = (np.minimum(lo, hi) * m + np.maximum(lo, hi)).ravel()
        n_entries = keys.size
        entry_bits = max(1, int(n_entries).bit_length())
        if keys.size and (int(m) * int(m)).bit_length() + entry_bits <= 63:
            # One (SIMD) sort of key << bits | entry: 5x faster than two radix passes.
            packed = np.sort((keys << entry_bits) | np.arange(n_entries))
            order = packed & ((1 << entry_bits) - 1)
            sorted_keys = packed >> entry_bits
            del packed
        else:
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
        del keys
        heads = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]][:n_entries])
        self.keys = sorted_keys[heads]
        self.starts = heads
        self.counts = np.diff(np.r_[heads, n_entries])
        self.rows = order // iu.size
        coef = vals[:, iu] * vals[:, ju]
        coef *= w[:, None]
        self.scale = np.sqrt(coef.ravel()[order])

    def compiled_runs(self, slots, store):
        """The pairs as :class:`_CompiledRun` pieces of about ``_COMPILED_ENTRIES`` entries.

        Pairs go by increasing store slot (the store is written in memory order).
        Pairs of many rows too: the compiled tiles ran 1.7-3x faster than
        gathering them for numpy's dsyrk (256 to 4096 rows, d = 30).
        """
        counts = self.counts
        runs = []
        if not counts.size:
            return runs
        ids = np.argsort(slots, kind="stable")
        # Page addresses: the pages are fixed from here to the chunk's end (every
        # slot of the chunk exists before any task writes).
        pages = np.array([p.__array_interface__["data"][0] for p in store.pages], dtype=np.int64)
        work = np.cumsum(counts[ids])
        cuts = np.searchsorted(work, np.arange(_COMPILED_ENTRIES, work[-1], _COMPILED_ENTRIES))
        for part in np.split(ids, cuts):
            if part.size:
                runs.append(_CompiledRun(self, part, slots[part], pages, store))
        return runs

    def batches(self, zero_row, slots):
        """The pairs in :class:`_PairBatch` stacks of one padded size each.

        A pair of ``c < _OWN_BATCH_ROWS`` rows is padded (``zero_row``, scale 0)
        to 2, 4 or 8 rows, or to the next multiple of 8 (at most 1.8x its rows
        from 9 on); a larger pair is a batch of its own. Pairs of one size go
        by increasing store ``slots``, so that each batch adds into the store
        in memory order.
        """
        counts = self.counts
        own = np.flatnonzero(counts >= _OWN_BATCH_ROWS)
        batches = [
            _PairBatch(np.array([j]), c, self.rows[s : s + c], self.scale[s : s + c])
            for j, s, c in zip(
                own.tolist(), self.starts[own].tolist(), counts[own].tolist(), strict=True
            )
        ]
        ids = np.flatnonzero(counts < _OWN_BATCH_ROWS)
        if not ids.size:
            return batches
        counts, starts = counts[ids], self.starts[ids]
        # A stack of one row costs a 2-row stack's time (numpy's matmul
        # leaves BLAS for an inner dimension of 1).
        padded = np.where(
            counts <= 8,
            1 << np.ceil(np.log2(np.maximum(counts, 2))).astype(np.int64),
            -(-counts // 8) * 8,
        )
        by_size = np.lexsort((slots[ids], padded))
        ids, counts, starts = ids[by_size], counts[by_size], starts[by_size]
        padded = padded[by_size]
        offsets = np.r_[0, np.cumsum(padded)]
        rows = np.full(offsets[-1], zero_row, dtype=np.int64)
        scale = np.zeros(offsets[-1])
        # Entry i of pair j (at starts[j] + i) goes to offsets[j] + i.
        src = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())
        dest = src + np.repeat(offsets[:-1] - starts, counts)
        rows[dest] = self.rows[src]
        scale[dest] = self.scale[src]
        for size in np.unique(padded).tolist():
            lo, hi = np.searchsorted(padded, [size, size + 1])
            per = max(1, min(_BATCH_ROWS // size, _BATCH_PAIRS))
            for s in range(lo, hi, per):
                e = min(s + per, hi)
                span = slice(offsets[s], offsets[e])
                batches.append(_PairBatch(ids[s:e], size, rows[span], scale[span]))
        return batches


class _PairBatch:
    """Pairs of ``size`` rows each (padded with zero scales), or one pair of ``size`` rows."""

    def __init__(self, ids, size, rows, scale):
        self.ids, self.size, self.rows, self.scale = ids, size, rows, scale
        self.work = rows.size

    @staticmethod
    def buffers(d1):
        """The work buffers :meth:`gram` takes (reused across batches)."""
        return (
            np.empty((_BATCH_ROWS, d1)),
            np.empty((_BATCH_ROWS, d1)),
            np.empty((_BATCH_PAIRS, d1, d1)),
        )

    def gram(self, X1, rows_buffer, copy_buffer, out_buffer):
        """Each pair's ``sum_i scale_i^2 x1_i x1_i^T``, shape (len(ids), d1, d1).

        The buffers are those of :meth:`buffers`; the result is a view of
        ``out_buffer``. A pair of more than ``_BATCH_ROWS`` rows is summed over
        pieces of that many.
        """
        d1 = X1.shape[1]
        out = out_buffer[: self.ids.size]
        if self.ids.size > 1:
            Q = np.take(X1, self.rows, axis=0, out=rows_buffer[: self.rows.size], mode="clip")
            Q *= self.scale[:, None]
            Q = Q.reshape(self.ids.size, self.size, d1)
            if self.size <= 8:
                # Up to 8 rows a GEMM on a copy beats numpy's dsyrk on Q itself
                # (80-170 ns against 90-310 ns per row at d = 30).
                Q2 = copy_buffer[: self.rows.size].reshape(Q.shape)
                Q2[...] = Q
                return np.matmul(Q.transpose(0, 2, 1), Q2, out=out)
            return np.matmul(Q.transpose(0, 2, 1), Q, out=out)
        out[...] = 0.0
        tmp = np.empty((d1, d1))
        for s in range(0, self.size, _BATCH_ROWS):
            rows = self.rows[s : s + _BATCH_ROWS]
            Q = np.take(X1, rows, axis=0, out=rows_buffer[: rows.size], mode="clip")
            Q *= self.scale[s : s + _BATCH_ROWS, None]
            # Q^T Q: numpy runs it as one dsyrk.
            out[0] += np.matmul(Q.T, Q, out=tmp)
        return out


class _CompiledRun:
    """Pairs whose blocks the compiled kernel adds to the store in one ``nogil`` call."""

    def __init__(self, entries, ids, slots, pages, store):
        self.entries, self.pages, self.store = entries, pages, store
        self.starts, self.counts = entries.starts[ids], entries.counts[ids]
        self.slots = slots
        self.work = int(self.counts.sum())

    def add_to(self, X1, first_new):
        _pair_gram_c.add_pair_blocks(
            X1, self.entries.rows, self.entries.scale, self.starts, self.counts,
            self.slots, self.pages, self.store.page_blocks, first_new,
        )  # fmt: skip


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
        if not b or k < 2 or k * np.log2(max(m, 2)) >= 62:
            return None
        sidx = np.sort(idx, axis=1)
        codes = np.zeros(b, dtype=np.int64)
        for j in range(k):
            codes = codes * m + sidx[:, j]
        # The share first, by a plain sort of the codes (most chunks stop here).
        sorted_codes = np.sort(codes)
        heads = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
        sizes = np.diff(np.r_[np.flatnonzero(heads), b])
        if sizes[sizes >= cls.MIN_SET_ROWS].sum() < cls.MIN_SHARE * b:
            return None
        order = np.argsort(idx, axis=1)
        rows = np.argsort(codes, kind="stable")
        starts = np.flatnonzero(heads)
        big = sizes >= cls.MIN_SET_ROWS
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
        max_rows = int(np.diff(self.offsets).max())
        right_buf = np.empty((max_rows, k * d1 + t1))
        x_buf = np.empty((max_rows, d1 - 1))
        product = np.empty((k * d1, k * d1 + t1))
        weighted = not (self.w.min() == 1.0 and self.w.max() == 1.0)
        for g in range(t, self.anchors.shape[0], self.n_tasks):
            s, e = self.offsets[g], self.offsets[g + 1]
            r = self.rows[s:e]
            right = right_buf[: e - s]
            U = right[:, : k * d1].reshape(e - s, k, d1)
            U[:, :, :-1] = np.take(self.X, r, axis=0, out=x_buf[: e - s], mode="clip")[:, None]
            U[:, :, -1] = 1.0
            np.take(self.Y, r, axis=0, out=right[:, k * d1 : -1], mode="clip")
            scale = self.values[s:e]
            if weighted:
                sw = np.sqrt(self.w[r])
                scale = scale * sw[:, None]
                right[:, k * d1 : -1] *= sw[:, None]
                right[:, -1] = sw
            else:
                right[:, -1] = 1.0
            U *= scale[:, :, None]
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
