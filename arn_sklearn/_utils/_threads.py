"""BLAS threads: one-thread sections and the worker pools of the row-block kernels."""

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController


@contextmanager
def single_threaded_blas():
    """Run the block with one BLAS thread (numpy's OpenBLAS and friends).

    A small multithreaded GEMM (the similarity, ``b x d`` by ``d x m``, or
    ``Z^T y``) between two large ``syrk`` calls was measured to make the next
    ``syrk`` about twice slower with OpenBLAS (``benchmarks/efficiency.py``),
    and the kernels that spread row blocks over Python threads would
    oversubscribe the cores; a large ``dpotrf`` is only correct on one thread.

    BLAS thread limits are process-wide, and a limit must be restored by the
    thread that set it (overlapping set/restore sequences from concurrent fits
    were seen to leave the process on one thread). So one thread at a time
    holds the limited section (a re-entrant lock: nested blocks of the same
    thread share it); concurrent fits wait for each other's sections. A
    :class:`_WorkerPool`'s threads run inside their owner's section: there the
    limit is already in effect and held until they finish.
    """
    if _BLAS_LIMIT_DEPTH.value > 0:  # nested, or a pool worker within its owner's section
        _BLAS_LIMIT_DEPTH.value += 1
        try:
            yield
        finally:
            _BLAS_LIMIT_DEPTH.value -= 1
        return
    # The limiter as a context manager: on exit it also gives up threadpoolctl's
    # controlling thread of OpenBLAS (a process-wide pool is limited by one
    # thread at a time); restore_original_limits() alone kept the first thread
    # in control, and sections entered by any other thread later limited nothing.
    with _BLAS_LIMIT_LOCK, _controller().limit(limits=1, user_api="blas"):
        _BLAS_LIMIT_DEPTH.value += 1
        try:
            yield
        finally:
            _BLAS_LIMIT_DEPTH.value -= 1


@contextmanager
def single_threaded_openmp():
    """Run the block with one OpenMP thread (scikit-learn's KMeans and friends).

    Process-wide like the BLAS limit; used around small OpenMP work whose
    threads spin waiting for a descheduled peer on a busy machine.
    """
    with _controller().limit(limits=1, user_api="openmp"):
        yield


def blas_thread_count():
    """Threads of the loaded BLAS (the smallest if several are loaded), at least 1."""
    n = [info["num_threads"] for info in _controller().info() if info["user_api"] == "blas"]
    return max(1, min(n) if n else 1)


@functools.cache
def _controller():
    """One controller for the process.

    Building one scans the loaded shared libraries (about 4 ms); a learned
    fit enters hundreds of one-thread sections, which cost 1.6 s of a 12 s
    fit with a fresh scan each. numpy and SciPy, whose BLAS libraries are the
    ones limited, are loaded by the time the package is imported.
    """
    return ThreadpoolController()


class _Depth(threading.local):
    value = 0


_BLAS_LIMIT_LOCK = threading.RLock()
_BLAS_LIMIT_DEPTH = _Depth()


def _within_section(task):
    """Run ``task`` (on a pool thread) as part of the owner's one-thread BLAS section."""
    _BLAS_LIMIT_DEPTH.value += 1
    try:
        return task()
    finally:
        _BLAS_LIMIT_DEPTH.value -= 1


class _WorkerPool:
    """Threads for the per-pair GEMMs, with BLAS on one thread meanwhile.

    The GEMMs are small ((d + 1) x n_pair x (d + 1)) and each runs on one core;
    numpy releases the GIL in gathers, products and BLAS, so one Python thread
    per BLAS thread keeps every core busy.
    """

    def __init__(self):
        self.n_threads = blas_thread_count()
        self.buffer = None
        self.executor = ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None

    def run(self, tasks):
        """Run the callables of ``tasks`` (a list of lists), one list per thread."""
        with single_threaded_blas():
            if self.executor is None:
                for group in tasks:
                    group()
                return
            for future in [self.executor.submit(_within_section, group) for group in tasks]:
                future.result()

    def close(self):
        if self.executor is not None:
            self.executor.shutdown()
