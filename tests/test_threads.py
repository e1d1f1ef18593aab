"""One-thread BLAS sections and the worker pool (``arn_sklearn._utils._threads``)."""

import threading

from threadpoolctl import threadpool_info

from arn_sklearn._utils._threads import _WorkerPool, single_threaded_blas


def _blas_threads():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_pool_workers_enter_one_thread_sections_within_their_owners():
    # A pool's task that enters a one-thread section (as the statistics'
    # accumulation does) runs inside its owner's section: no deadlock on the
    # owner's lock, one BLAS thread meanwhile, the limit restored after.
    before = _blas_threads()
    seen, errors = [], []

    def task():
        with single_threaded_blas():
            seen.append(_blas_threads())

    def owner():
        pool = _WorkerPool()
        try:
            with single_threaded_blas():
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
    assert len(seen) == 2 and all(all(n == 1 for n in threads) for threads in seen)
    assert _blas_threads() == before
