# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled Gram product of block CG: ``G V`` from the stored upper blocks.

The optional extension behind :meth:`arn_sklearn._kernels._block_cg.BlockRows.matmul`
(which falls back to numpy without it). Each stored block ``G_ab``, ``a <= b``,
is ``d1 x d1`` and symmetric, and is read once for both of its products,
``out[a] += G_ab V[b]`` and ``out[b] += G_ab V[a]``. ``V`` and ``out`` are
``(n_anchors * d1, tp)`` in C order with ``tp`` a multiple of :func:`lanes`. The
caller orders the blocks by group of consecutive anchors ``a``, then by ``b``:
one ``V[b]`` and ``out[b]`` then serve the whole group from L1, and the
group's ``V[a]`` and ``out[a]`` stay in L2.

Each product is a register-tiled ``d1 x d1`` by ``d1 x tp`` multiply in C with
GCC/Clang vector extensions, compiled for AVX-512, AVX2+FMA and SSE2 on x86-64
and chosen at import by the CPU (other compilers: plain loops). It calls no
BLAS, so it needs no BLAS thread limit; the GIL is released, and Python threads
run it in parallel, each on its own share of the blocks and its own ``out``.
"""

from libc.stdint cimport int64_t

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>

    #if (defined(__GNUC__) || defined(__clang__)) && !defined(_MSC_VER)
    #define ARN_VECTORS 1
    #define ARN_INLINE static inline __attribute__((always_inline))
    #define ARN_UNROLL _Pragma("GCC unroll 4")
    #else
    #define ARN_VECTORS 0
    #define ARN_INLINE static __inline
    #define ARN_UNROLL
    #endif
    #if ARN_VECTORS && (defined(__x86_64__) || defined(__i386__))
    #define ARN_X86 1
    #else
    #define ARN_X86 0
    #endif

    /* One product: C (d1 x tp) += G (d1 x d1) V (d1 x tp), row-major, leading
       dimension tp (a multiple of the lanes L). Tiles of R <= 4 rows by
       W <= 3 vectors keep R * W accumulators in registers over the d1 terms. */
    #define ARN_TILE(P, ATTR, T, VT, R, W)                                                 \\
    ATTR ARN_INLINE void P##_tile_##R##_##W(          \\
            const T *G, int d1, const T *V, T *C, int tp) {                        \\
        const int L = (int)(sizeof(VT) / sizeof(T));                               \\
        VT acc[R][W];                                                              \\
        ARN_UNROLL for (int r = 0; r < R; r++)                              \\
            ARN_UNROLL for (int w = 0; w < W; w++) memcpy(&acc[r][w], C + r * tp + w * L, sizeof(VT)); \\
        for (int k = 0; k < d1; k++) {                                             \\
            VT v[W];                                                               \\
            ARN_UNROLL for (int w = 0; w < W; w++) memcpy(&v[w], V + k * tp + w * L, sizeof(VT)); \\
            ARN_UNROLL for (int r = 0; r < R; r++) {                    \\
                T g = G[r * d1 + k];                                               \\
                ARN_UNROLL for (int w = 0; w < W; w++) acc[r][w] += g * v[w];                 \\
            }                                                                      \\
        }                                                                          \\
        ARN_UNROLL for (int r = 0; r < R; r++)                              \\
            ARN_UNROLL for (int w = 0; w < W; w++) memcpy(C + r * tp + w * L, &acc[r][w], sizeof(VT)); \\
    }

    #define ARN_ROWS(P, ATTR, T, VT, R)                                                  \\
    ARN_TILE(P, ATTR, T, VT, R, 3) ARN_TILE(P, ATTR, T, VT, R, 2) ARN_TILE(P, ATTR, T, VT, R, 1)     \\
    ATTR ARN_INLINE void P##_rows_##R(                \\
            const T *G, int d1, const T *V, T *C, int tp) {                        \\
        const int L = (int)(sizeof(VT) / sizeof(T));                               \\
        int j = 0;                                                                 \\
        for (; j + 3 * L <= tp; j += 3 * L) P##_tile_##R##_3(G, d1, V + j, C + j, tp); \\
        if (j + 2 * L <= tp) { P##_tile_##R##_2(G, d1, V + j, C + j, tp); j += 2 * L; } \\
        if (j + L <= tp) P##_tile_##R##_1(G, d1, V + j, C + j, tp);                \\
    }

    /* Both products of the stored blocks e0 .. e1 - 1 (the diagonal ones once). */
    #define ARN_KERNEL(P, ATTR, T, VT)                                             \\
    ARN_ROWS(P, ATTR, T, VT, 4) ARN_ROWS(P, ATTR, T, VT, 3) ARN_ROWS(P, ATTR, T, VT, 2) \\
    ARN_ROWS(P, ATTR, T, VT, 1) \\
    ATTR ARN_INLINE void P##_product(const T *G, int d1, const T *Vb, T *C, int tp) { \\
        int i = 0;                                                                 \\
        for (; i + 4 <= d1; i += 4) P##_rows_4(G + i * d1, d1, Vb, C + i * tp, tp); \\
        switch (d1 - i) {                                                          \\
            case 3: P##_rows_3(G + i * d1, d1, Vb, C + i * tp, tp); break;         \\
            case 2: P##_rows_2(G + i * d1, d1, Vb, C + i * tp, tp); break;         \\
            case 1: P##_rows_1(G + i * d1, d1, Vb, C + i * tp, tp); break;         \\
        }                                                                          \\
    }                                                                              \\
    ATTR static void P##_pairs(                                                    \\
            const T *blocks, int d1, const int64_t *row, const int64_t *col,          \\
            const int64_t *block, int64_t e0, int64_t e1, const T *V, T *out, int tp) { \\
        int64_t size = (int64_t)d1 * d1, rs = (int64_t)d1 * tp;                    \\
        for (int64_t e = e0; e < e1; e++) {                                        \\
            const T *G = blocks + block[e] * size;                                 \\
            P##_product(G, d1, V + col[e] * rs, out + row[e] * rs, tp);            \\
            if (row[e] != col[e])                                                  \\
                P##_product(G, d1, V + row[e] * rs, out + col[e] * rs, tp);        \\
        }                                                                          \\
    }

    typedef void (*arn_pairs_d_t)(const double *, int, const int64_t *, const int64_t *,
                                  const int64_t *, int64_t, int64_t, const double *, double *, int);
    typedef void (*arn_pairs_s_t)(const float *, int, const int64_t *, const int64_t *,
                                  const int64_t *, int64_t, int64_t, const float *, float *, int);

    #if ARN_VECTORS
    typedef double arn_d2 __attribute__((vector_size(16)));
    typedef float arn_s4 __attribute__((vector_size(16)));
    ARN_KERNEL(arn_base_d, , double, arn_d2)
    ARN_KERNEL(arn_base_s, , float, arn_s4)
    #define ARN_BASE_LANES_D 2
    #define ARN_BASE_LANES_S 4
    #else
    ARN_KERNEL(arn_base_d, , double, double)
    ARN_KERNEL(arn_base_s, , float, float)
    #define ARN_BASE_LANES_D 1
    #define ARN_BASE_LANES_S 1
    #endif

    #if ARN_X86
    typedef double arn_d4 __attribute__((vector_size(32)));
    typedef float arn_s8 __attribute__((vector_size(32)));
    typedef double arn_d8 __attribute__((vector_size(64)));
    typedef float arn_s16 __attribute__((vector_size(64)));
    ARN_KERNEL(arn_avx2_d, __attribute__((target("avx2,fma"))), double, arn_d4)
    ARN_KERNEL(arn_avx2_s, __attribute__((target("avx2,fma"))), float, arn_s8)
    ARN_KERNEL(arn_avx512_d, __attribute__((target("avx512f,fma"))), double, arn_d8)
    ARN_KERNEL(arn_avx512_s, __attribute__((target("avx512f,fma"))), float, arn_s16)
    #endif

    static arn_pairs_d_t arn_pairs_d = arn_base_d_pairs;
    static arn_pairs_s_t arn_pairs_s = arn_base_s_pairs;
    static int arn_lanes_d = ARN_BASE_LANES_D, arn_lanes_s = ARN_BASE_LANES_S;

    /* Highest instruction-set level of this CPU: 2 AVX-512, 1 AVX2+FMA, 0 base. */
    static int arn_cpu_level(void) {
    #if ARN_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return 2;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    #endif
        return 0;
    }

    /* Whether the kernels in use beat numpy's path: not SSE2's (x86 without
       AVX2 ran them at 0.55x its rate: 16 against 29 GFLOP/s per CPU-second
       on 64 anchors, all pairs, AVX-512 machine with level 0 selected). */
    static int arn_level_in_use = 0;
    static int arn_faster(void) { return !(ARN_X86 && arn_level_in_use == 0); }

    /* Use level min(level, the CPU's); returns the level in use. */
    static int arn_select(int level) {
        int cpu = arn_cpu_level();
        if (level > cpu) level = cpu;
        arn_level_in_use = level;
        arn_pairs_d = arn_base_d_pairs; arn_pairs_s = arn_base_s_pairs;
        arn_lanes_d = ARN_BASE_LANES_D; arn_lanes_s = ARN_BASE_LANES_S;
    #if ARN_X86
        if (level == 2) {
            arn_pairs_d = arn_avx512_d_pairs; arn_pairs_s = arn_avx512_s_pairs;
            arn_lanes_d = 8; arn_lanes_s = 16;
        } else if (level == 1) {
            arn_pairs_d = arn_avx2_d_pairs; arn_pairs_s = arn_avx2_s_pairs;
            arn_lanes_d = 4; arn_lanes_s = 8;
        }
    #endif
        return level;
    }
    """
    ctypedef void (*pairs_d_t)(const double *, int, const int64_t *, const int64_t *,
                               const int64_t *, int64_t, int64_t, const double *, double *,
                               int) noexcept nogil
    ctypedef void (*pairs_s_t)(const float *, int, const int64_t *, const int64_t *,
                               const int64_t *, int64_t, int64_t, const float *, float *,
                               int) noexcept nogil
    pairs_d_t arn_pairs_d
    pairs_s_t arn_pairs_s
    int arn_lanes_d
    int arn_lanes_s
    int arn_cpu_level() noexcept nogil
    int arn_select(int level) noexcept nogil
    int arn_faster() noexcept nogil


ctypedef fused real:
    float
    double


def select(int level=2):
    """Use the kernels of instruction-set ``level`` (2 AVX-512, 1 AVX2+FMA,
    0 SSE2 or plain C), at most the CPU's; returns the level in use. The
    import selects the CPU's own; tests select lower ones to check them."""
    return arn_select(level)


arn_select(2)


def faster():
    """Whether the kernels in use are worth taking over numpy's path: all but
    x86's SSE2 ones (on CPUs without AVX2), which ran at 0.55x its rate."""
    return bool(arn_faster())


def lanes(dtype_size):
    """Columns per vector of the kernels in use for items of ``dtype_size``
    bytes (4 or 8): ``V``'s width must be a multiple of it."""
    return arn_lanes_s if dtype_size == 4 else arn_lanes_d


def gram_pairs(
    const real[:, :, ::1] blocks,
    const int64_t[::1] row,
    const int64_t[::1] col,
    const int64_t[::1] block,
    int64_t start,
    int64_t stop,
    const real[:, ::1] V,
    real[:, ::1] out,
):
    """``out[a] += G_ab V[b]`` and ``out[b] += G_ab V[a]`` for the stored blocks
    ``e = start .. stop - 1``: ``G_ab = blocks[block[e]]`` (symmetric),
    ``a = row[e] <= b = col[e]``, the diagonal ones once.

    ``out`` and ``V`` are ``(n_anchors * d1, tp)``, ``tp`` a multiple of
    :func:`lanes`. No checks: the caller (``BlockRows``) builds every index.
    """
    cdef int d1 = blocks.shape[1]
    cdef int tp = V.shape[1]
    if stop <= start or tp == 0:
        return
    if real is double:
        with nogil:
            arn_pairs_d(&blocks[0, 0, 0], d1, &row[0], &col[0], &block[0], start, stop,
                        &V[0, 0], &out[0, 0], tp)
    else:
        with nogil:
            arn_pairs_s(&blocks[0, 0, 0], d1, &row[0], &col[0], &block[0], start, stop,
                        &V[0, 0], &out[0, 0], tp)
