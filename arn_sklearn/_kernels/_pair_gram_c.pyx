"""Compiled pair blocks of a top-k Gram matrix (the small pairs of :mod:`._pair_gram`).

``add_pair_blocks`` adds, for each pair ``j`` of a chunk, ``sum_e scale_e^2 x1_e x1_e^T``
over its run of entries ``e`` (rows of ``X1``) to the pair's store block, held as its
upper triangle row by row (packed), in one ``nogil`` call: the task threads of
``accumulate_chunk`` run it in parallel. A pair's rows are gathered and scaled in
pieces of up to 64 (16 kB at d = 30); each 4 x 8 tile of the upper triangle is summed
over a piece in registers (8 multiply-adds per 3 loads) into an L1-resident work
triangle, whose rows are then added to the store block (written, not added, for
slots still zero). The next pair's rows and block are prefetched while one runs (the
rows of a chunk are random cache misses). ``unpack_upper`` makes full blocks of the
packed ones when the store is finished.

The loop is C (below), compiled for baseline x86-64 and, where GCC/clang offer
``target_clones``, also for x86-64-v3 (AVX2, FMA), chosen at load time: no
``-march=native``, so builds run on any CPU.

Optional: the package falls back to numpy (``_pair_gram.py``) when this module is not
built. Arrays in, nothing out.
"""

from libc.stdint cimport int64_t, uintptr_t

# Checked by _pair_gram.py: a stale in-place build of an older layout is not used.
KERNEL_VERSION = 2
from libc.stdlib cimport free, malloc


cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>

    #if defined(__GNUC__)
    #define ARN_INLINE static inline __attribute__((always_inline))
    #define ARN_PREFETCH(p) __builtin_prefetch(p)
    #else
    #define ARN_INLINE static inline
    #define ARN_PREFETCH(p) ((void)0)
    #endif
    #if defined(__GNUC__) && defined(__x86_64__) && defined(__has_attribute)
    #if __has_attribute(target_clones)
    #define ARN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
    #endif
    #endif
    #ifndef ARN_CLONES
    #define ARN_CLONES
    #endif

    /* Rows of a pair gathered (and scaled) at a time: V is ARN_PIECE x D, 16 kB at D = 32. */
    #define ARN_PIECE 64

    /* acc := sum_{q < r} V[q, i0:i0+4]^T V[q, l0:l0+8], a 4 x 8 tile kept in registers. */
    ARN_INLINE void arn_tile(const double *V, ptrdiff_t D, ptrdiff_t r, ptrdiff_t i0,
                             ptrdiff_t l0, double acc[4][8])
    {
        double a[4][8] = {{0.0}};
        for (ptrdiff_t q = 0; q < r; q++) {
            const double *v = V + q * D;
            for (int ii = 0; ii < 4; ii++) {
                const double x = v[i0 + ii];
                for (int ll = 0; ll < 8; ll++) a[ii][ll] += x * v[l0 + ll];
            }
        }
        for (int ii = 0; ii < 4; ii++)
            for (int ll = 0; ll < 8; ll++) acc[ii][ll] = a[ii][ll];
    }

    /* Row i of a packed upper triangle, indexed by the column l >= i. */
    #define ARN_PACKED_ROW(out, i, d1) ((out) + (i) * (d1) - (i) * ((i) + 1) / 2)

    /* Every cache line of r rows of X1 (a row of 31 doubles spans 4 or 5). */
    ARN_INLINE void arn_prefetch_rows(const double *X1, ptrdiff_t d1, const int64_t *rw,
                                      ptrdiff_t r)
    {
        for (ptrdiff_t q = 0; q < r; q++) {
            const double *x = X1 + rw[q] * d1;
            for (ptrdiff_t i = 0; i < d1; i += 8) ARN_PREFETCH(x + i);
            ARN_PREFETCH(x + d1 - 1);
        }
    }

    /* r rows of X1, scaled, into V (zero-padded to D columns). */
    ARN_INLINE void arn_gather(const double *X1, ptrdiff_t d1, const int64_t *rw,
                               const double *sc, ptrdiff_t r, double *V, ptrdiff_t D)
    {
        for (ptrdiff_t q = 0; q < r; q++) {
            const double *x = X1 + rw[q] * d1;
            const double s = sc[q];
            double *v = V + q * D;
            for (ptrdiff_t i = 0; i < d1; i++) v[i] = s * x[i];
            for (ptrdiff_t i = d1; i < D; i++) v[i] = 0.0;
        }
    }

    /* The upper-triangle tiles (i0 step 4, l0 step 8, l0 + 8 > i0) of one piece of
       rows into G (row stride D): written (first piece) or added; whole tiles, so the
       stores are plain vector stores (the triangle's edges are cut when G is copied). */
    ARN_INLINE void arn_piece(const double *V, ptrdiff_t D, ptrdiff_t r, ptrdiff_t d1,
                              double *G, int add)
    {
        double acc[4][8];
        for (ptrdiff_t i0 = 0; i0 < d1; i0 += 4) {
            for (ptrdiff_t l0 = (i0 / 8) * 8; l0 < d1; l0 += 8) {
                arn_tile(V, D, r, i0, l0, acc);
                for (int ii = 0; ii < 4; ii++) {
                    double *g = G + (i0 + ii) * D + l0;
                    if (add) {
                        for (int ll = 0; ll < 8; ll++) g[ll] += acc[ii][ll];
                    } else {
                        for (int ll = 0; ll < 8; ll++) g[ll] = acc[ii][ll];
                    }
                }
            }
        }
    }

    ARN_CLONES
    static void arn_add_pair_blocks(const double *X1, ptrdiff_t d1, const int64_t *rows,
                                    const double *scale, const int64_t *starts,
                                    const int64_t *counts, const int64_t *slots,
                                    const int64_t *pages, ptrdiff_t page_blocks,
                                    ptrdiff_t first_new, ptrdiff_t n_pairs,
                                    double *G, double *V, ptrdiff_t D)
    {
        for (ptrdiff_t j = 0; j < n_pairs; j++) {
            const int64_t *rw = rows + starts[j];
            const double *sc = scale + starts[j];
            const ptrdiff_t c = counts[j];
            if (j + 1 < n_pairs) {
                /* The next pair's rows (its first piece) and block, while this one runs:
                   random rows of a chunk are cache misses, and the tiles' work between
                   gathers leaves the core few misses in flight otherwise. */
                const ptrdiff_t nc = counts[j + 1];
                arn_prefetch_rows(X1, d1, rows + starts[j + 1], nc < ARN_PIECE ? nc : ARN_PIECE);
                const ptrdiff_t ns = slots[j + 1];
                const double *nb = (const double *)(uintptr_t)pages[ns / page_blocks]
                                   + (ns % page_blocks) * (d1 * (d1 + 1) / 2);
                for (ptrdiff_t i = 0; i < d1 * (d1 + 1) / 2; i += 8) ARN_PREFETCH(nb + i);
            }
            const ptrdiff_t slot = slots[j];
            double *out = (double *)(uintptr_t)pages[slot / page_blocks]
                          + (slot % page_blocks) * (d1 * (d1 + 1) / 2);
            for (ptrdiff_t q0 = 0; q0 < c; q0 += ARN_PIECE) {
                const ptrdiff_t r = c - q0 < ARN_PIECE ? c - q0 : ARN_PIECE;
                if (q0 + ARN_PIECE < c)
                    arn_prefetch_rows(X1, d1, rw + q0 + ARN_PIECE,
                                      c - q0 - ARN_PIECE < ARN_PIECE ? c - q0 - ARN_PIECE
                                                                     : ARN_PIECE);
                arn_gather(X1, d1, rw + q0, sc + q0, r, V, D);
                if (q0) arn_piece(V, D, r, d1, G, 1);
                else arn_piece(V, D, r, d1, G, 0);
            }
            if (c == 0) continue;
            if (slot < first_new) {
                for (ptrdiff_t i = 0; i < d1; i++) {
                    double *o = ARN_PACKED_ROW(out, i, d1);
                    const double *g = G + i * D;
                    for (ptrdiff_t l = i; l < d1; l++) o[l] += g[l];
                }
            } else {
                for (ptrdiff_t i = 0; i < d1; i++) {
                    double *o = ARN_PACKED_ROW(out, i, d1);
                    const double *g = G + i * D;
                    for (ptrdiff_t l = i; l < d1; l++) o[l] = g[l];
                }
            }
        }
    }

    /* A[:] = A[order] (blocks of bs doubles) one cycle at a time; 0 if out of memory. */
    static int arn_permute(double *A, const int64_t *order, ptrdiff_t n, ptrdiff_t bs)
    {
        unsigned char *done = (unsigned char *)calloc((size_t)n, 1);
        double *saved = (double *)malloc((size_t)bs * sizeof(double));
        if (!done || !saved) { free(done); free(saved); return 0; }
        for (ptrdiff_t start = 0; start < n; start++) {
            if (done[start] || order[start] == start) continue;
            memcpy(saved, A + start * bs, (size_t)bs * sizeof(double));
            ptrdiff_t j = start;
            for (;;) {
                done[j] = 1;
                const ptrdiff_t k = order[j];
                if (k == start) {
                    memcpy(A + j * bs, saved, (size_t)bs * sizeof(double));
                    break;
                }
                memcpy(A + j * bs, A + k * bs, (size_t)bs * sizeof(double));
                j = k;
            }
        }
        free(done);
        free(saved);
        return 1;
    }

    static void arn_unpack_upper(const double *packed, double *out, ptrdiff_t n, ptrdiff_t d1)
    {
        const ptrdiff_t P = d1 * (d1 + 1) / 2;
        for (ptrdiff_t j = 0; j < n; j++) {
            const double *p = packed + j * P;
            double *b = out + j * d1 * d1;
            for (ptrdiff_t i = 0; i < d1; i++) {
                const double *row = ARN_PACKED_ROW(p, i, d1);
                for (ptrdiff_t l = i; l < d1; l++) b[i * d1 + l] = b[l * d1 + i] = row[l];
            }
        }
    }
    """
    void arn_add_pair_blocks(const double *X1, Py_ssize_t d1, const int64_t *rows,
                             const double *scale, const int64_t *starts,
                             const int64_t *counts, const int64_t *slots,
                             const int64_t *pages, Py_ssize_t page_blocks,
                             Py_ssize_t first_new, Py_ssize_t n_pairs,
                             double *G, double *V, Py_ssize_t D) noexcept nogil
    void arn_unpack_upper(const double *packed, double *out, Py_ssize_t n,
                          Py_ssize_t d1) noexcept nogil
    int arn_permute(double *A, const int64_t *order, Py_ssize_t n, Py_ssize_t bs) noexcept nogil


def add_pair_blocks(const double[:, ::1] X1, const int64_t[::1] rows,
                    const double[::1] scale, const int64_t[::1] starts,
                    const int64_t[::1] counts, const int64_t[::1] slots,
                    const int64_t[::1] pages, Py_ssize_t page_blocks,
                    Py_ssize_t first_new):
    """Packed ``block(slots[j]) += sum_e scale[e]^2 X1[rows[e]] X1[rows[e]]^T`` for each pair.

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
        ``(page_blocks, d1 (d1 + 1) / 2)`` (upper triangles, row by row), alive
        for the call.
    page_blocks : int
    first_new : int
        Slots from this one on are still zero: their triangles are written, not added.
    """
    cdef Py_ssize_t d1 = X1.shape[1], n_pairs = counts.shape[0]
    cdef Py_ssize_t D = (d1 + 7) & ~7  # rows of whole 8-column tiles in the buffers
    if n_pairs == 0:
        return
    if starts.shape[0] != n_pairs or slots.shape[0] != n_pairs or rows.shape[0] != scale.shape[0]:
        raise ValueError("add_pair_blocks: inconsistent pair or entry arrays.")
    # The triangle and a piece of gathered rows, 64-byte aligned (once per call).
    cdef char *raw = <char *> malloc((D * D + 64 * D) * sizeof(double) + 64)
    if raw == NULL:
        raise MemoryError()
    cdef double *G = <double *> ((<uintptr_t> raw + 63) & ~(<uintptr_t> 63))
    with nogil:
        arn_add_pair_blocks(&X1[0, 0], d1, &rows[0], &scale[0], &starts[0], &counts[0],
                            &slots[0], &pages[0], page_blocks, first_new, n_pairs,
                            G, G + D * D, D)
    free(raw)


def unpack_upper(const double[:, ::1] packed, double[:, :, ::1] out):
    """Full symmetric ``out[j]`` from its row-major upper triangle ``packed[j]``."""
    cdef Py_ssize_t n = packed.shape[0], d1 = out.shape[1]
    if out.shape[0] != n or out.shape[2] != d1 or packed.shape[1] != d1 * (d1 + 1) // 2:
        raise ValueError("unpack_upper: packed and out do not match.")
    if n:
        with nogil:
            arn_unpack_upper(&packed[0, 0], &out[0, 0, 0], n, d1)


def permute_in_place(double[:, :, ::1] A, const int64_t[::1] order):
    """``A[:] = A[order]`` in place, one cycle of the permutation ``order`` at a time."""
    cdef Py_ssize_t n = A.shape[0], bs = A.shape[1] * A.shape[2]
    cdef int ok = 1
    if order.shape[0] != n:
        raise ValueError("permute_in_place: order and A differ in length.")
    if n:
        with nogil:
            ok = arn_permute(&A[0, 0, 0], &order[0], n, bs)
    if not ok:
        raise MemoryError()
