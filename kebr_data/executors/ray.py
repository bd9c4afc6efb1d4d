"""Ray executor: one Ray task per (stage, shard), asking for the stage's CPUs and GPUs, so GPU
stages (ASR on CUDA) land on GPU nodes and CPU stages everywhere else. The same done markers
commit the work, so a run can move between the local executor and Ray and resume either way.

`--executor ray` starts a local Ray instance with `--workers` CPUs; `--address` (or ray.address)
joins an existing cluster (`ray start --head` on one node, `ray start --address ...` on the others,
every node seeing the same output folder). A cluster started with token authentication (what
`ray start --head` does since Ray 2.60 when a token exists) is joined with RAY_AUTH_MODE=token and
the cluster's token (docs/cluster.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ..deps import missing, require
from ..errors import PrerequisiteError
from ..settings import option
from .base import Executor, TaskFailed, TaskFeed, TaskFn, as_feed
from .local import THREAD_VARS

#: where Ray looks for a cluster's token, in order, when token authentication is on
TOKEN_SOURCES = "$RAY_AUTH_TOKEN, the file $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token"


@dataclass
class RayOptions:
    """The Ray executor's options: the cluster to join and how to authenticate to it."""

    address: str = option("", "an existing cluster's address ('auto', 'HEAD:6379', 'ray://HEAD:10001'); '' = "
                              "start a local one")
    auth_mode: Literal["env", "token", "disabled"] = option(
        "env", "token authentication towards the cluster: token (RAY_AUTH_MODE=token, for a cluster started with "
               "it) | disabled | env (RAY_AUTH_MODE as the environment sets it)", flag="ray-auth-mode")
    token_path: str = option("", "file holding the cluster's token (sets RAY_AUTH_TOKEN_PATH); '' = Ray's own "
                                 f"lookup: {TOKEN_SOURCES}", flag="ray-token-path")


def _call(fn: TaskFn, task: Any) -> Any:
    return fn(task, lambda n: None)


def join_failure(address: str, exc: BaseException) -> PrerequisiteError:
    """Ray's failure to join the cluster at `address` as one line naming the address and the token
    authentication this process used (a cluster started with token auth refuses a driver without it)."""
    mode = os.environ.get("RAY_AUTH_MODE") or "unset"
    token = ("RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else
             f"the file {os.environ['RAY_AUTH_TOKEN_PATH']}" if os.environ.get("RAY_AUTH_TOKEN_PATH") else
             "~/.ray/auth_token, if it exists")
    reason = " ".join(str(exc).split())[:300]
    return PrerequisiteError(
        f"cannot join the Ray cluster at {address} ({type(exc).__name__}: {reason}). Check that the address is "
        f"the head node's and that it is running (`ray status --address {address}`). Token authentication here: "
        f"RAY_AUTH_MODE={mode}, token from {token}. A cluster started with token authentication (Ray >= 2.60 "
        f"turns it on) needs RAY_AUTH_MODE=token (--ray-auth-mode token) and the head node's token (`ray "
        f"get-auth-token` there) in one of {TOKEN_SOURCES} (--ray-token-path FILE); see docs/cluster.md")


class RayExecutor(Executor):
    """`--executor ray [--address ADDR] [--ray-auth-mode token] [--ray-token-path FILE]`."""

    Options = RayOptions
    takes_feed = True
    options: RayOptions

    @classmethod
    def check(cls) -> list[str]:
        problem = missing("ray", "ray", "the Ray executor")
        return [problem] if problem else []

    def _auth_env(self) -> None:
        """Token authentication as the options say: RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH in this process, and
        Ray's cached view of them refreshed when Ray was imported already (the prerequisite check imports it),
        as Ray itself does when it turns token authentication on."""
        if self.options.auth_mode != "env":
            os.environ["RAY_AUTH_MODE"] = self.options.auth_mode
        if self.options.token_path:
            os.environ["RAY_AUTH_TOKEN_PATH"] = os.path.abspath(os.path.expanduser(self.options.token_path))
        if (self.options.auth_mode != "env" or self.options.token_path) and "ray._raylet" in sys.modules:
            from ray._raylet import AuthenticationTokenLoader, Config

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()

    def _init(self) -> Any:
        self._auth_env()
        ray = require("ray", "ray", "the Ray executor")
        if not ray.is_initialized():
            env = {"env_vars": {k: "1" for k in THREAD_VARS}}
            if self.options.address:
                try:
                    ray.init(address=self.options.address, runtime_env=env, log_to_driver=False)
                except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
                    raise join_failure(self.options.address, exc) from None
            else:
                ray.init(num_cpus=max(1, self.workers), include_dashboard=False, runtime_env=env,
                         log_to_driver=False)
        return ray

    def run(self, fn: TaskFn, tasks: list[Any] | TaskFeed, on_progress: Callable[[Any, int], None],
            cpus: float = 1.0, gpus: float = 0.0) -> Iterator[tuple[Any, Any]]:
        """See Executor.run. Every ready task is submitted at once with its own cpus/gpus: Ray starts each where
        those are free, so a GPU stage's shards run beside CPU stages' shards."""
        feed = as_feed(tasks, cpus, gpus)
        if not len(feed):
            return
        ray = self._init()
        remote = ray.remote(max_retries=0)(_call)
        refs: dict[Any, Any] = {}
        try:
            while True:
                for task, task_cpus, task_gpus in feed.take():
                    refs[remote.options(num_cpus=task_cpus, num_gpus=task_gpus).remote(fn, task)] = task
                if not refs:
                    break
                done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                for ref in done:
                    task = refs.pop(ref)
                    try:
                        yield task, ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # the task raised: a toolkit error
                        yield task, TaskFailed(exc.cause if getattr(exc, "cause", None) else exc)
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                            ray.exceptions.RaySystemError) as exc:  # the process or node vanished
                        yield task, TaskFailed(exc, worker_died=True)
        except BaseException:  # Ctrl-C, or the caller stopped reading early: queued shards never start, and
            for ref in refs:  # running ones get KeyboardInterrupt, so they commit nothing
                ray.cancel(ref)
            raise
