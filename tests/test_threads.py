"""One-thread BLAS sections and the worker pool (``arn_sklearn._utils._threads``)."""

import threading

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
