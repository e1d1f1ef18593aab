"""Compiled pair blocks of a top-k Gram matrix (the small pairs of :mod:`._pair_gram`).

``add_pair_blocks`` adds, for each pair ``j`` of a chunk, ``sum_e scale_e^2 x1_e x1_e^T``
over its run of entries ``e`` (rows of ``X1``) to the pair's store block, in one
``nogil`` call: the task threads of ``accumulate_chunk`` run it in parallel. Each pair's
upper triangle is summed in an L1-resident buffer by rank-4 updates (four gathered,
scaled rows at a time: four multiply-adds per load and store of the buffer), then
mirrored into the store block (written, not added, for slots still zero).

Optional: the package falls back to numpy (``_pair_gram.py``) when this module is not
built. Arrays in, nothing out; no Python object is touched without the GIL.
"""

from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset


cdef extern from *:
    """
    #if defined(__GNUC__)
    #define ARN_PREFETCH(p) __builtin_prefetch(p)
    #else
    #define ARN_PREFETCH(p) ((void)0)
    #endif
    """
    void ARN_PREFETCH(const void *p) noexcept nogil


cdef inline void _load_row(const double *X1, Py_ssize_t d1, int64_t row, double s,
                           double *v) noexcept nogil:
    cdef const double *src = X1 + row * d1
    cdef Py_ssize_t i
    for i in range(d1):
        v[i] = s * src[i]


cdef void _pair_gram(const double *X1, Py_ssize_t d1, Py_ssize_t D,
                     const int64_t *rows, const double *scale, Py_ssize_t count,
                     double *G, double *V) noexcept nogil:
    """Upper triangle of ``sum_e (s_e x1_e)(s_e x1_e)^T`` into ``G`` (``d1`` rows of stride ``D``)."""
    cdef Py_ssize_t j = 0, i, l, p
    cdef double a0, a1, a2, a3
    cdef double *g
    cdef double *v0 = V
    cdef double *v1 = V + D
    cdef double *v2 = V + 2 * D
    cdef double *v3 = V + 3 * D
    while j + 4 <= count:
        for p in range(j + 4, min(j + 8, count)):
            ARN_PREFETCH(X1 + rows[p] * d1)
        _load_row(X1, d1, rows[j], scale[j], v0)
        _load_row(X1, d1, rows[j + 1], scale[j + 1], v1)
        _load_row(X1, d1, rows[j + 2], scale[j + 2], v2)
        _load_row(X1, d1, rows[j + 3], scale[j + 3], v3)
        for i in range(d1):
            a0 = v0[i]
            a1 = v1[i]
            a2 = v2[i]
            a3 = v3[i]
            g = G + i * D
            for l in range(i, d1):
                g[l] += a0 * v0[l] + a1 * v1[l] + a2 * v2[l] + a3 * v3[l]
        j += 4
    if j + 2 <= count:
        _load_row(X1, d1, rows[j], scale[j], v0)
        _load_row(X1, d1, rows[j + 1], scale[j + 1], v1)
        for i in range(d1):
            a0 = v0[i]
            a1 = v1[i]
            g = G + i * D
            for l in range(i, d1):
                g[l] += a0 * v0[l] + a1 * v1[l]
        j += 2
    if j < count:
        _load_row(X1, d1, rows[j], scale[j], v0)
        for i in range(d1):
            a0 = v0[i]
            g = G + i * D
            for l in range(i, d1):
                g[l] += a0 * v0[l]


def add_pair_blocks(const double[:, ::1] X1, const int64_t[::1] rows,
                    const double[::1] scale, const int64_t[::1] starts,
                    const int64_t[::1] counts, const int64_t[::1] slots,
                    const int64_t[::1] pages, Py_ssize_t page_blocks,
                    Py_ssize_t first_new):
    """``block(slots[j]) += sum_e scale[e]^2 X1[rows[e]] X1[rows[e]]^T`` for each pair ``j``.

    Parameters
    ----------
    X1 : float64 ndarray of shape (b, d1), C-contiguous
        The chunk's lifted rows ``[x, 1]``.
    rows, scale : ndarrays of shape (n_entries,)
        Entry ``e``'s row of ``X1`` and its scale ``sqrt(w v_a v_b)``.
    starts, counts : int64 ndarrays of shape (n_pairs,)
        Pair ``j``'s entries are ``starts[j] : starts[j] + counts[j]``.
    slots : int64 ndarray of shape (n_pairs,)
        Pair ``j``'s store slot; distinct.
    pages : int64 ndarray
        Addresses of the store's pages, C-contiguous float64 arrays of shape
        ``(page_blocks, d1, d1)``, alive for the call.
    page_blocks : int
    first_new : int
        Slots from this one on are still zero: their blocks are written, not added.
    """
    cdef Py_ssize_t d1 = X1.shape[1]
    cdef Py_ssize_t D = (d1 + 3) & ~3  # rows of the buffers 32-byte aligned
    cdef Py_ssize_t n_pairs = counts.shape[0]
    cdef Py_ssize_t j, i, l, slot
    cdef double *G
    cdef double *V
    cdef double *out
    cdef double val
    if n_pairs == 0:
        return
    if starts.shape[0] != n_pairs or slots.shape[0] != n_pairs or rows.shape[0] != scale.shape[0]:
        raise ValueError("add_pair_blocks: inconsistent pair or entry arrays.")
    # 64-byte aligned work buffers: G (d1 x D) and four gathered rows.
    cdef char *raw = <char *> malloc((d1 * D + 4 * D) * sizeof(double) + 64)
    if raw == NULL:
        raise MemoryError()
    G = <double *> ((<uintptr_t> raw + 63) & ~(<uintptr_t> 63))
    V = G + d1 * D
    with nogil:
        for j in range(n_pairs):
            memset(G, 0, d1 * D * sizeof(double))
            _pair_gram(&X1[0, 0], d1, D, &rows[starts[j]], &scale[starts[j]], counts[j], G, V)
            slot = slots[j]
            out = (<double *> <uintptr_t> pages[slot // page_blocks]
                   + (slot % page_blocks) * d1 * d1)
            if slot >= first_new:
                for i in range(d1):
                    for l in range(i, d1):
                        val = G[i * D + l]
                        out[i * d1 + l] = val
                        out[l * d1 + i] = val
            else:
                for i in range(d1):
                    out[i * d1 + i] += G[i * D + i]
                    for l in range(i + 1, d1):
                        val = G[i * D + l]
                        out[i * d1 + l] += val
                        out[l * d1 + i] += val
    free(raw)
