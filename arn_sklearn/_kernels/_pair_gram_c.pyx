"""Compiled pair blocks of a top-k Gram matrix (the small pairs of :mod:`._pair_gram`).

``add_pair_blocks`` adds, for each pair ``j`` of a chunk, ``sum_e scale_e^2 x1_e x1_e^T``
over its run of entries ``e`` (rows of ``X1``) to the upper triangle of the pair's store
block, in one ``nogil`` call: the task threads of ``accumulate_chunk`` run it in
parallel. Rows are gathered and scaled four at a time and applied as one rank-4 update
of the triangle (four multiply-adds per load and store); a pair of up to four rows
goes straight into the store, a longer one through an L1-resident triangle whose last
update is fused with the store's add. Slots still zero are written, not added.
``mirror_upper`` fills the lower triangles once, when the store is finished.

The loop is C (below), compiled for baseline x86-64 and, where GCC/clang offer
``target_clones``, also for x86-64-v3 (AVX2, FMA), chosen at load time: no
``-march=native``, so builds run on any CPU.

Optional: the package falls back to numpy (``_pair_gram.py``) when this module is not
built. Arrays in, nothing out.
"""

from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc


cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
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

    /* dst[i, l] for i <= l := (add ? dst[i, l] : 0) + (has_src ? src[i, l] : 0)
       + sum_{q < r} V[q, i] V[q, l]; r, add and has_src are constants once inlined. */
    ARN_INLINE void arn_tri_update(double *dst, ptrdiff_t ldd, const int add,
                                   const double *src, ptrdiff_t lds, const int has_src,
                                   const double *V, ptrdiff_t D, ptrdiff_t d1, const int r)
    {
        for (ptrdiff_t i = 0; i < d1; i++) {
            const double a0 = V[i];
            const double a1 = r > 1 ? V[D + i] : 0.0;
            const double a2 = r > 2 ? V[2 * D + i] : 0.0;
            const double a3 = r > 3 ? V[3 * D + i] : 0.0;
            double *o = dst + i * ldd;
            const double *s = has_src ? src + i * lds : NULL;
            for (ptrdiff_t l = i; l < d1; l++) {
                double t = a0 * V[l];
                if (r > 1) t += a1 * V[D + l];
                if (r > 2) t += a2 * V[2 * D + l];
                if (r > 3) t += a3 * V[3 * D + l];
                if (has_src) t += s[l];
                if (add) t += o[l];
                o[l] = t;
            }
        }
    }

    #define ARN_TRI(dst, ldd, add, src, has_src, r) \\
        arn_tri_update(dst, ldd, add, src, D, has_src, V, D, d1, r)

    /* The last group of a pair (r rows, 1..4) into the store block. */
    ARN_INLINE void arn_tri_last(double *out, int fresh, const double *G, int has_G,
                                 const double *V, ptrdiff_t D, ptrdiff_t d1, int r)
    {
        #define ARN_LAST(R) \\
            if (has_G) { if (fresh) ARN_TRI(out, d1, 0, G, 1, R); \\
                         else ARN_TRI(out, d1, 1, G, 1, R); } \\
            else { if (fresh) ARN_TRI(out, d1, 0, G, 0, R); \\
                   else ARN_TRI(out, d1, 1, G, 0, R); }
        switch (r) {
            case 1: ARN_LAST(1) break;
            case 2: ARN_LAST(2) break;
            case 3: ARN_LAST(3) break;
            default: ARN_LAST(4) break;
        }
        #undef ARN_LAST
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
            ptrdiff_t c = counts[j];
            if (j + 1 < n_pairs) {  /* the next pair's first rows, while this one runs */
                const int64_t *nr = rows + starts[j + 1];
                for (ptrdiff_t q = 0; q < counts[j + 1] && q < 4; q++)
                    ARN_PREFETCH(X1 + nr[q] * d1);
            }
            ptrdiff_t slot = slots[j];
            double *out = (double *)(uintptr_t)pages[slot / page_blocks]
                          + (slot % page_blocks) * d1 * d1;
            int has_G = 0;
            while (c > 0) {
                int r = c < 4 ? (int)c : 4;
                for (int q = 0; q < r; q++) {
                    const double *x = X1 + rw[q] * d1;
                    const double s = sc[q];
                    for (ptrdiff_t i = 0; i < d1; i++) V[q * D + i] = s * x[i];
                }
                for (ptrdiff_t q = 4; q < 8 && q < c; q++) ARN_PREFETCH(X1 + rw[q] * d1);
                rw += r;
                sc += r;
                c -= r;
                if (c == 0) {
                    arn_tri_last(out, slot >= first_new, G, has_G, V, D, d1, r);
                } else if (has_G) {
                    ARN_TRI(G, D, 1, G, 0, 4);
                } else {
                    ARN_TRI(G, D, 0, G, 0, 4);
                    has_G = 1;
                }
            }
        }
    }

    ARN_CLONES
    static void arn_mirror_upper(double *blocks, ptrdiff_t n, ptrdiff_t d1)
    {
        for (ptrdiff_t j = 0; j < n; j++) {
            double *b = blocks + j * d1 * d1;
            for (ptrdiff_t i = 1; i < d1; i++)
                for (ptrdiff_t l = 0; l < i; l++) b[i * d1 + l] = b[l * d1 + i];
        }
    }
    """
    void arn_add_pair_blocks(const double *X1, Py_ssize_t d1, const int64_t *rows,
                             const double *scale, const int64_t *starts,
                             const int64_t *counts, const int64_t *slots,
                             const int64_t *pages, Py_ssize_t page_blocks,
                             Py_ssize_t first_new, Py_ssize_t n_pairs,
                             double *G, double *V, Py_ssize_t D) noexcept nogil
    void arn_mirror_upper(double *blocks, Py_ssize_t n, Py_ssize_t d1) noexcept nogil


def add_pair_blocks(const double[:, ::1] X1, const int64_t[::1] rows,
                    const double[::1] scale, const int64_t[::1] starts,
                    const int64_t[::1] counts, const int64_t[::1] slots,
                    const int64_t[::1] pages, Py_ssize_t page_blocks,
                    Py_ssize_t first_new):
    """Upper triangle of ``block(slots[j]) += sum_e scale[e]^2 X1[rows[e]] X1[rows[e]]^T``.

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
        Slots from this one on are still zero: their triangles are written, not added.
    """
    cdef Py_ssize_t d1 = X1.shape[1], n_pairs = counts.shape[0]
    cdef Py_ssize_t D = (d1 + 3) & ~3  # 32-byte rows in the work buffers
    if n_pairs == 0:
        return
    if starts.shape[0] != n_pairs or slots.shape[0] != n_pairs or rows.shape[0] != scale.shape[0]:
        raise ValueError("add_pair_blocks: inconsistent pair or entry arrays.")
    # The triangle and four gathered rows, 64-byte aligned (a few kB, once per call).
    cdef char *raw = <char *> malloc((d1 * D + 4 * D) * sizeof(double) + 64)
    if raw == NULL:
        raise MemoryError()
    cdef double *G = <double *> ((<uintptr_t> raw + 63) & ~(<uintptr_t> 63))
    with nogil:
        arn_add_pair_blocks(&X1[0, 0], d1, &rows[0], &scale[0], &starts[0], &counts[0],
                            &slots[0], &pages[0], page_blocks, first_new, n_pairs,
                            G, G + d1 * D, D)
    free(raw)


def mirror_upper(double[:, :, ::1] blocks):
    """``blocks[j]``'s strict lower triangle := its upper triangle's, in place."""
    if blocks.shape[0]:
        with nogil:
            arn_mirror_upper(&blocks[0, 0, 0], blocks.shape[0], blocks.shape[1])

