"""Ray executor: one Ray task per (stage, shard), asking for the stage's CPUs and GPUs, so GPU
stages (ASR on CUDA) land on GPU nodes and CPU stages everywhere else. The same done markers
commit the work, so a run can move between the local executor and Ray and resume either way.

`--executor ray` starts a local Ray instance with `--workers` CPUs; `--address` (or run.ray_address)
joins an existing cluster (`ray start --head` on one node, `ray start --address ...` on the others,
every node seeing the same output folder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..deps import missing, require
from .base import Executor, TaskFailed, TaskFn
from .local import THREAD_VARS


def _call(fn: TaskFn, task: Any) -> Any:
    return fn(task, lambda n: None)


class RayExecutor(Executor):
    """`--executor ray [--address ADDR]`."""

    @classmethod
    def check(cls) -> list[str]:
        problem = missing("ray", "ray", "the Ray executor")
        return [problem] if problem else []

    def _init(self) -> Any:
        ray = require("ray", "ray", "the Ray executor")
        if not ray.is_initialized():
            env = {"env_vars": {k: "1" for k in THREAD_VARS}}
            if self.address:
                ray.init(address=self.address, runtime_env=env, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, self.workers), include_dashboard=False, runtime_env=env,
                         log_to_driver=False)
        return ray

    def run(self, fn: TaskFn, tasks: list[Any], on_progress: Callable[[Any, int], None],
            cpus: float = 1.0, gpus: float = 0.0) -> Iterator[tuple[Any, Any]]:
        if not tasks:
            return
        ray = self._init()
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_call)
        refs = {remote.remote(fn, task): task for task in tasks}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                for ref in done:
                    task = refs[ref]
                    try:
                        yield task, ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # the task raised: a toolkit error
                        yield task, TaskFailed(exc.cause if getattr(exc, "cause", None) else exc)
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                            ray.exceptions.RaySystemError) as exc:  # the process or node vanished
                        yield task, TaskFailed(exc, worker_died=True)
        except BaseException:  # Ctrl-C, or the caller stopped reading early: queued shards never start, and
            for ref in pending:  # running ones get KeyboardInterrupt, so they commit nothing
                ray.cancel(ref)
            raise
