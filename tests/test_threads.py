"""One-thread BLAS sections and the worker pool (``arn_sklearn._utils._threads``)."""

import threading

import pytest

from arn_sklearn._utils._threads import _controller, _WorkerPool, single_threaded_blas


def _blas_threads():
    """Threads of the BLAS libraries that the one-thread sections limit."""
    return [info["num_threads"] for info in _controller().info() if info["user_api"] == "blas"]


def test_pool_workers_enter_one_thread_sections_within_their_owners():
    # A pool's task that enters a one-thread section (as the statistics'
    # accumulation does) runs inside its owner's section: no deadlock on the
    # owner's lock, the owner's limit seen meanwhile, the threads restored after.
    before = _blas_threads()
    seen, owner_saw, errors = [], [], []

    def task():
        with single_threaded_blas():
            seen.append(_blas_threads())

    def owner():
        pool = _WorkerPool()
        try:
            with single_threaded_blas():
                owner_saw.append(_blas_threads())
                pool.run([task, task])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            pool.close()

    thread = threading.Thread(target=owner)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "a pool worker waited on its owner's section"
    assert not errors
    assert seen == owner_saw * 2
    assert _blas_threads() == before


def test_sections_of_successive_threads_each_limit_blas():
    # threadpoolctl lets one thread at a time limit OpenBLAS's process-wide
    # pool; a section must hand that control back on exit, or every section
    # entered later by another thread (a Dask worker, a pool) limits nothing.
    before = _blas_threads()
    if max(before) == 1:
        pytest.skip("BLAS already runs on one thread")
    inside = []

    def section():
        with single_threaded_blas():
            inside.append(_blas_threads())

    section()  # the main thread first, then two others in turn
    for _ in range(2):
        thread = threading.Thread(target=section)
        thread.start()
        thread.join()
    assert inside == [[1] * len(before)] * 3
    assert _blas_threads() == before
