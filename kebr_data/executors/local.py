"""Local executor: a process pool (spawn) on this machine, one BLAS/torch thread per worker.

Spawned processes avoid fork-after-threads hangs; a single thread per worker avoids N workers
each starting N BLAS threads (a silent slowdown users of multi-process extraction keep hitting).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from .base import Executor, TaskFailed, TaskFeed, TaskFn, as_feed

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")

_progress_queue: Any = None
#: a byte shared by the run and its workers: 1 once the run is interrupted (Ctrl-C)
_stop: Any = None


def _request_stop(signum: int, frame: Any) -> None:
    """A worker's SIGINT (Ctrl-C reaches the whole process group) sets the stop flag rather than raising
    KeyboardInterrupt wherever the worker is (concurrent.futures would catch it and hand the worker its
    next shard): this shard and every worker's stop at the next clip boundary, outside any library call.
    Setting a shared byte is safe in a signal handler (no lock)."""
    _stop.value = 1


def _stop_point() -> None:
    """Where a worker may stop: before a shard starts and at each clip boundary (its progress reports)."""
    if _stop is not None and _stop.value:
        raise KeyboardInterrupt


def _init_worker(progress_queue: Any, stop: Any, parent_pid: int) -> None:
    """Keep the progress queue and the stop flag, stop on SIGINT at a clip boundary, and make the kernel
    kill this worker if the parent dies.

    Without the last, workers orphaned by a killed run would keep writing while a rerun recomputes
    the same shards.
    """
    global _progress_queue, _stop
    _progress_queue, _stop = progress_queue, stop
    signal.signal(signal.SIGINT, _request_stop)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


def _call(fn: TaskFn, key: int, task: Any) -> Any:
    """Run `fn(task, progress)` in a worker, sending progress to the parent through the queue; once the run
    is interrupted, a shard not yet started is not started and a running one stops at its next report."""
    def progress(n: int) -> None:
        if _progress_queue is not None and n:
            _progress_queue.put((key, n))
        _stop_point()
    _stop_point()
    return fn(task, progress)


@contextmanager
def single_threaded_env() -> Iterator[None]:
    """Set the thread-count variables to 1 while workers are spawned (they inherit os.environ)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update({k: "1" for k in THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LocalExecutor(Executor):
    """`--executor local --workers N` (no options of its own)."""
    takes_feed = True

    def run(self, fn: TaskFn, tasks: list[Any] | TaskFeed, on_progress: Callable[[Any, int], None],
            cpus: float = 1.0, gpus: float = 0.0) -> Iterator[tuple[Any, Any]]:
        """See Executor.run. Tasks go to the pool as workers free up (never more queued than workers), so a
        feed's priorities hold; their cpus/gpus are not scheduled: every task takes one worker."""
        feed = as_feed(tasks, cpus, gpus)
        if not len(feed):
            return
        ctx = mp.get_context("spawn")
        # SimpleQueue writes synchronously (no feeder thread), so a task's progress is in the pipe
        # before its result reaches us, and the final drain sees all of it
        progress_queue = ctx.SimpleQueue()
        stop = ctx.RawValue("b", 0)
        workers = max(1, min(self.workers, feed.planned))
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(progress_queue, stop, os.getpid()))
        futures: dict[Future, tuple[int, Any]] = {}
        keys = itertools.count()
        running: dict[int, Any] = {}
        try:
            while True:
                # processes are spawned on demand at submit time: the one-thread environment must be in place
                # then (numpy reads it when a worker imports it, before any initializer could act)
                broken = []
                with single_threaded_env():
                    for task, _, _ in feed.take(workers - len(futures)):
                        key = next(keys)
                        running[key] = task
                        try:
                            futures[pool.submit(_call, fn, key, task)] = (key, task)
                        except BrokenProcessPool as exc:  # a worker died earlier: the pool takes no more tasks
                            broken.append((task, TaskFailed(exc, worker_died=True)))
                yield from broken
                if not futures and not len(feed):
                    break
                done, _ = wait(set(futures), timeout=0.2, return_when=FIRST_COMPLETED)
                self._drain(progress_queue, running, on_progress)
                for fut in done:
                    _, task = futures.pop(fut)
                    try:
                        yield task, fut.result()
                    except BrokenProcessPool as exc:
                        yield task, TaskFailed(exc, worker_died=True)
                    except Exception as exc:  # the task's own error, re-raised from the worker
                        yield task, TaskFailed(exc)
            self._drain(progress_queue, running, on_progress)
        except BaseException:  # Ctrl-C (here or re-raised from a worker), or the caller stopped reading early
            stop.value = 1  # running shards stop at their next clip boundary, queued ones never start
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            progress_queue.close()

    @staticmethod
    def _drain(q: Any, tasks: dict[int, Any], on_progress: Callable[[Any, int], None]) -> None:
        while not q.empty():
            key, n = q.get()
            on_progress(tasks[key], n)
