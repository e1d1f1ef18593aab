"""Solve the ARN normal equations (paper eq. 17) from sufficient statistics."""

import os

import numpy as np
from scipy import linalg

from .._utils._memory import available_memory_bytes
from .._utils._threads import single_threaded_blas
from .._utils._warnings import warn_user

# A Cholesky factor whose squared diagonal ratio falls below this is treated as
# numerically singular: its solution would be dominated by rounding errors.
_RCOND_THRESHOLD = 1e-13


def system_bytes(n_lifted, n_targets, batch_size, itemsize=8):
    """Bytes a fit holds at its peak: the Gram matrix, its factor, the chunk."""
    return itemsize * (
        2 * n_lifted * n_lifted + (n_lifted + 2) * n_targets + 2 * batch_size * n_lifted
    )


def check_system_fits_memory(
    n_anchors, n_features, n_targets, batch_size, available=None, *, needed=None, top_k=None
):
    """Raise ``MemoryError`` before allocating a system that cannot fit.

    Parameters
    ----------
    n_anchors, n_features, n_targets, batch_size : int
    available : int or None
        Bytes available; read from the operating system when None.
    needed : int or None
        Bytes the fit needs; the dense system's :func:`system_bytes` when None.
    top_k : int or None
        For the message: the model keeps ``top_k`` anchors per sample.
    """
    n_lifted = n_anchors * (n_features + 1)
    if needed is None:
        needed = system_bytes(n_lifted, n_targets, batch_size)
    if available is None:
        available = available_memory_bytes()
    if available is not None and needed > available:
        kind = f"top_k={top_k} " if top_k is not None else ""
        raise MemoryError(
            f"The {kind}ARN system with n_anchors={n_anchors} and n_features={n_features} "
            f"has {n_lifted} unknowns and needs about {needed / 2**30:.1f} GiB, "
            f"but only {available / 2**30:.1f} GiB is available. Use fewer anchors"
            f"{'' if top_k is not None else ' (or top_k)'}, reduce the number of features "
            "(e.g. with PCA), or lower batch_size."
        )
    return needed


def centered_rhs(stats, xp):
    """Right-hand side for targets centred on their weighted mean.

    Returns
    -------
    rhs : array of shape (p, n_targets)
        ``sum_i w_i z_i (y_i - y_mean)^T``.
    y_mean : array of shape (n_targets,)
    """
    y_mean = stats.y_sum / stats.weight_sum
    return stats.zty - stats.z_sum[:, None] * y_mean[None, :], y_mean


def solve_ridge(stats, alpha, xp, overwrite=False):
    """Minimise ``sum_i w_i ||W^T z_i - (y_i - y_mean)||^2 + alpha ||W||^2``.

    Parameters
    ----------
    stats : SufficientStatistics
    alpha : float
        Ridge penalty (paper's lambda); the folded biases are penalised too.
    xp : array namespace
    overwrite : bool, default=False
        Let the solve factor ``stats.gram`` in place (numpy), so that no second
        ``p x p`` array is allocated; ``stats.gram`` is garbage afterwards. For
        a plain fit whose statistics are not kept.

    Returns
    -------
    W : array of shape (p, n_targets)
        Lifted weights, row ``k * (d + 1) + j`` for anchor ``k`` and input ``j``.
    y_mean : array of shape (n_targets,)
    """
    if not stats.weight_sum > 0:
        raise ValueError("The sum of sample weights is zero; nothing to fit.")
    rhs, y_mean = centered_rhs(stats, xp)
    if isinstance(stats.gram, np.ndarray):
        if stats.gram.shape[0] > _THREADED_POTRF_MAX or overwrite:
            return _solve_large_numpy(stats.gram, rhs, alpha, overwrite), y_mean
        return _solve_numpy(stats.gram, rhs, alpha), y_mean
    return _solve_namespace(stats.gram, rhs, alpha, xp), y_mean


def _regularized(gram, alpha):
    system = np.array(gram, dtype=np.float64, order="F", copy=True)
    system.flat[:: system.shape[0] + 1] += alpha
    return system


# From this size on (a p x p array over 2 GiB) the factorisation is blocked over
# numpy's matmul: scipy's bundled 32-bit-index OpenBLAS was seen to crash in
# dpotrf at p = 31,744 (m = 1024, d = 30); numpy's BLAS uses 64-bit indices.
_BLOCKED_MIN_SIZE = 16_384
_CHOLESKY_BLOCK = 1024


def blocked_cholesky_solve(system, rhs, block=_CHOLESKY_BLOCK):
    """Solve ``system @ x = rhs`` for SPD ``system`` by a right-looking block Cholesky.

    Factors the lower triangle of ``system`` in place (``L`` overwrites it), so
    that no second ``p x p`` array is allocated; the trailing updates are GEMMs
    on column panels, which is where the ``p^3 / 3`` flops run.

    Raises
    ------
    numpy.linalg.LinAlgError
        If ``system`` is not positive definite or is ill-conditioned.
    """
    p = system.shape[0]
    A = system
    for j in range(0, p, block):
        e = min(j + block, p)
        L11 = np.linalg.cholesky(A[j:e, j:e])
        A[j:e, j:e] = L11
        if e == p:
            break
        L21 = linalg.solve_triangular(L11, A[e:, j:e].T, lower=True, check_finite=False).T
        A[e:, j:e] = L21
        for k in range(e, p, block):
            ke = min(k + block, p)
            A[k:, k:ke] -= L21[k - e :] @ L21[k - e : ke - e].T
    diag = np.diag(A) ** 2
    if diag.min() <= _RCOND_THRESHOLD * diag.max():
        raise np.linalg.LinAlgError("ill-conditioned")
    starts = list(range(0, p, block))
    y = np.array(rhs, dtype=np.float64, copy=True)
    for j in starts:  # L y = rhs
        e = min(j + block, p)
        y[j:e] = linalg.solve_triangular(A[j:e, j:e], y[j:e], lower=True, check_finite=False)
        y[e:] -= A[e:, j:e] @ y[j:e]
    for j in reversed(starts):  # L^T x = y
        e = min(j + block, p)
        y[j:e] = linalg.solve_triangular(
            A[j:e, j:e], y[j:e] - A[e:, j:e].T @ y[e:], lower=True, trans="T", check_finite=False
        )
    return y


def _lapack64():
    """``(dpotrf, dpotrs)`` of numpy's bundled 64-bit-index LAPACK, or None.

    numpy's wheels ship OpenBLAS with 64-bit indices (``scipy_openblas64_``),
    which factors a system past 2^31 entries in place at LAPACK speed; SciPy's
    own wrappers are built on a 32-bit-index OpenBLAS (no ``ilp64``) and
    ``numpy.linalg.cholesky`` allocates two more ``p x p`` arrays.
    """
    if _LAPACK64:
        return _LAPACK64[0]
    found = None
    try:
        import ctypes

        from threadpoolctl import threadpool_info

        paths = [
            info["filepath"]
            for info in threadpool_info()
            if info.get("internal_api") == "openblas"
            and "64_" in os.path.basename(info["filepath"])
        ]
        for path in paths:
            lib = ctypes.CDLL(path)
            for prefix, suffix in (("scipy_", "_64_"), ("", "_64_"), ("", "_64")):
                try:
                    potrf = getattr(lib, f"{prefix}dpotrf{suffix}")
                    potrs = getattr(lib, f"{prefix}dpotrs{suffix}")
                except AttributeError:
                    continue
                found = (potrf, potrs)
                break
            if found:
                break
    except (ImportError, OSError):  # pragma: no cover - depends on the numpy build
        found = None
    _LAPACK64.append(found)
    return found


_LAPACK64 = []


def _potrf_lower_inplace(A):
    """``A = L L^T`` in place on the lower triangle of F-ordered ``A``; LAPACK ``info``.

    The strict upper triangle is left untouched, so ``A`` can be restored.
    """
    import ctypes
    from contextlib import nullcontext

    potrf, _ = _lapack64()
    n = ctypes.c_int64(A.shape[0])
    info = ctypes.c_int64(0)
    # OpenBLAS 0.3.31's threaded dpotrf was seen to segfault from n = 16,000 on
    # (fine at 12,000; single-threaded fine at 16,000): run it on one thread there.
    guard = single_threaded_blas() if A.shape[0] > _THREADED_POTRF_MAX else nullcontext()
    with guard:
        potrf(
            ctypes.c_char_p(b"L"),
            ctypes.byref(n),
            A.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(n),
            ctypes.byref(info),
            ctypes.c_size_t(1),  # hidden Fortran string length, ignored by C entry points
        )
    return info.value


_THREADED_POTRF_MAX = 12_000


def _potrs_lower(L, B):
    """Solve ``L L^T X = B`` in place on F-ordered ``B`` (64-bit LAPACK)."""
    import ctypes

    _, potrs = _lapack64()
    n = ctypes.c_int64(L.shape[0])
    nrhs = ctypes.c_int64(B.shape[1])
    info = ctypes.c_int64(0)
    potrs(
        ctypes.c_char_p(b"L"),
        ctypes.byref(n),
        ctypes.byref(nrhs),
        L.ctypes.data_as(ctypes.c_void_p),
        ctypes.byref(n),
        B.ctypes.data_as(ctypes.c_void_p),
        ctypes.byref(n),
        ctypes.byref(info),
        ctypes.c_size_t(1),
    )
    return B


def _solve_large_numpy(gram, rhs, alpha, overwrite):
    """Cholesky solve with numpy's 64-bit LAPACK, in place when ``overwrite``.

    ``gram`` is symmetric, so its buffer read in Fortran order is the same
    matrix whatever its memory order. A numerically singular system warns and
    is solved with a tiny extra ridge (its strict upper triangle, untouched by
    the factorisation, restores it), which keeps the memory at one ``p x p``.
    """
    if _lapack64() is None:  # pragma: no cover - depends on the numpy build
        system = gram if overwrite else np.array(gram, order="F", copy=True)
        if not overwrite:
            system.flat[:: system.shape[0] + 1] += alpha
        else:
            system.flat[:: system.shape[0] + 1] += alpha
        return blocked_cholesky_solve(np.asfortranarray(system), rhs)
    if overwrite and (gram.flags.f_contiguous or gram.flags.c_contiguous):
        A = gram if gram.flags.f_contiguous else gram.T
    else:
        A = np.array(gram, order="F", copy=True)
    p = A.shape[0]
    diag = np.diag(A).copy()
    A.flat[:: p + 1] += alpha
    info = _potrf_lower_inplace(A)
    pivots = np.diag(A) ** 2
    if info != 0 or not pivots.min() > _RCOND_THRESHOLD * pivots.max():
        warn_user(
            "The ARN normal equations are singular or ill-conditioned (alpha="
            f"{alpha!r}); solving them with a small extra ridge instead. Increase "
            "alpha, or remove collinear features.",
            linalg.LinAlgWarning,
        )
        upper = np.triu_indices(p, 1)
        for start in range(0, p, 256):  # restore the lower triangle, block by block
            stop = min(start + 256, p)
            A[stop:, start:stop] = A[start:stop, stop:].T
            block = A[start:stop, start:stop]
            lower = np.tril_indices(stop - start, -1)
            block[lower] = block.T[lower]
        del upper
        eps = max(float(np.abs(diag).max()), 1.0) * 1e-10
        A.flat[:: p + 1] = diag + alpha + eps
        if _potrf_lower_inplace(A) != 0:
            raise np.linalg.LinAlgError("The ARN normal equations are not positive definite.")
    B = np.array(rhs, dtype=np.float64, order="F", copy=True)
    return _potrs_lower(A, B)


def _solve_numpy(gram, rhs, alpha):
    system = _regularized(gram, alpha)
    try:
        if system.shape[0] >= _BLOCKED_MIN_SIZE:
            return blocked_cholesky_solve(system, rhs)
        factor = linalg.cho_factor(system, lower=False, overwrite_a=True, check_finite=False)
        diag = np.diag(factor[0]) ** 2
        if diag.min() <= _RCOND_THRESHOLD * diag.max():
            raise linalg.LinAlgError("ill-conditioned")
        return linalg.cho_solve(factor, rhs, check_finite=False)
    except (linalg.LinAlgError, np.linalg.LinAlgError):
        warn_user(
            "The ARN normal equations are singular or ill-conditioned (alpha="
            f"{alpha!r}); falling back to a minimum-norm least-squares solve. "
            "Increase alpha, or remove collinear features.",
            linalg.LinAlgWarning,
        )
        system = _regularized(gram, alpha)
        return linalg.lstsq(system, rhs, lapack_driver="gelsd", check_finite=False)[0]


def _solve_triangular(xp):
    """A triangular solver for ``xp``'s arrays, or None where there is none."""
    if xp.__name__.startswith("array_api_compat.cupy"):
        try:
            from cupyx.scipy.linalg import solve_triangular
        except ImportError:  # pragma: no cover - depends on the CuPy build
            return None
        return solve_triangular
    return None


def _solve_namespace(gram, rhs, alpha, xp):
    """Cholesky solve in any array namespace (CuPy, array-api-strict, ...).

    ``xp.linalg.cholesky`` may return NaNs rather than raise for a matrix that
    is not positive definite (CuPy does), so the factor is checked like the
    numpy path's and a pseudo-inverse is the fallback.
    """
    p = gram.shape[0]
    system = gram + alpha * xp.eye(p, dtype=gram.dtype, device=getattr(gram, "device", None))
    try:
        L = xp.linalg.cholesky(system)
    except Exception:  # each backend raises its own LinAlgError type
        singular = True
    else:
        diag = xp.linalg.diagonal(L) ** 2
        singular = bool(xp.any(xp.isnan(L))) or not bool(
            xp.min(diag) > _RCOND_THRESHOLD * xp.max(diag)
        )
    if singular:
        warn_user(
            "The ARN normal equations are singular or ill-conditioned (alpha="
            f"{alpha!r}); falling back to a pseudo-inverse. Increase alpha, or "
            "remove collinear features.",
            linalg.LinAlgWarning,
        )
        return xp.linalg.pinv(system) @ rhs
    solve_triangular = _solve_triangular(xp)
    if solve_triangular is not None:
        # Two triangular solves: O(p^2) per target, after the O(p^3 / 3) factor.
        tmp = solve_triangular(L, rhs, lower=True)
        return solve_triangular(L.T, tmp, lower=False)
    # The standard has no triangular solve; a general solve on L is still exact.
    return xp.linalg.solve(L.T, xp.linalg.solve(L, rhs))


class CholeskyFactor:
    """``gram + alpha I = L L^T``, kept to solve for many right-hand sides.

    Built by :func:`factorize_dense`; ``solve(B)`` returns ``(gram + alpha I)^{-1} B``.
    A numerically singular system is held as its pseudo-inverse instead.
    """

    def __init__(self, lower, xp, pinv=None, lapack64=False):
        self.lower = lower
        self.xp = xp
        self.pinv = pinv
        # Factor from numpy's 64-bit LAPACK (lower triangle only, upper is stale).
        self.lapack64 = lapack64

    def solve(self, B):
        if self.pinv is not None:
            return self.pinv @ B
        if self.lapack64:
            B2 = np.array(B, dtype=np.float64, order="F", copy=True)
            one_d = B2.ndim == 1
            out = _potrs_lower(self.lower, B2[:, None] if one_d else B2)
            return out[:, 0] if one_d else out
        if isinstance(self.lower, np.ndarray):
            return linalg.cho_solve((self.lower, True), B, check_finite=False)
        xp = self.xp
        solve_triangular = _solve_triangular(xp)
        if solve_triangular is not None:
            return solve_triangular(self.lower.T, solve_triangular(self.lower, B, lower=True))
        return xp.linalg.solve(self.lower.T, xp.linalg.solve(self.lower, B))


def factorize_dense(gram, alpha, xp):
    """Cholesky factor of ``gram + alpha I`` (a pseudo-inverse if it is singular).

    Parameters
    ----------
    gram : array of shape (p, p)
    alpha : float
    xp : array namespace

    Returns
    -------
    CholeskyFactor

    Examples
    --------
    >>> import numpy as np
    >>> from array_api_compat import array_namespace
    >>> G = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> factor = factorize_dense(G, 1.0, array_namespace(G))
    >>> np.allclose((G + np.eye(2)) @ factor.solve(np.eye(2)), np.eye(2))
    True
    """
    if isinstance(gram, np.ndarray) and gram.shape[0] > _THREADED_POTRF_MAX and _lapack64():
        # scipy's cho_factor (32-bit OpenBLAS) crashed at this size; factor in place.
        system = _regularized(gram, alpha)
        info = _potrf_lower_inplace(system)
        pivots = np.diag(system) ** 2
        if info != 0 or not pivots.min() > _RCOND_THRESHOLD * pivots.max():
            del system
            return CholeskyFactor(None, xp, pinv=np.linalg.pinv(_regularized(gram, alpha)))
        return CholeskyFactor(system, xp, lapack64=True)
    if isinstance(gram, np.ndarray):
        system = _regularized(gram, alpha)
        try:
            lower, _ = linalg.cho_factor(system, lower=True, overwrite_a=True, check_finite=False)
            diag = np.diag(lower) ** 2
            if not diag.min() > _RCOND_THRESHOLD * diag.max():
                raise linalg.LinAlgError("ill-conditioned")
        except linalg.LinAlgError:
            return CholeskyFactor(None, xp, pinv=np.linalg.pinv(_regularized(gram, alpha)))
        return CholeskyFactor(np.tril(lower), xp)
    p = gram.shape[0]
    system = gram + alpha * xp.eye(p, dtype=gram.dtype, device=getattr(gram, "device", None))
    try:
        lower = xp.linalg.cholesky(system)
    except Exception:  # each backend raises its own LinAlgError type
        return CholeskyFactor(None, xp, pinv=xp.linalg.pinv(system))
    if bool(xp.any(xp.isnan(lower))):
        return CholeskyFactor(None, xp, pinv=xp.linalg.pinv(system))
    return CholeskyFactor(lower, xp)
