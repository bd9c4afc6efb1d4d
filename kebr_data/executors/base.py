"""The executor interface: run a function over tasks, yield each outcome as it finishes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from ..settings import NoOptions

#: a task function receives its task and a `progress(n)` callable for clip-level progress; tasks call it at
#: clip boundaries (n = 0: a boundary without progress), where it raises KeyboardInterrupt once the run is
#: interrupted, so a shard stops between clips and commits nothing
TaskFn = Callable[[Any, Callable[[int], None]], Any]


@dataclass
class TaskFailed:
    """A task that raised, or whose worker died; `worker_died` means the process vanished (SIGKILL, OOM)."""

    error: BaseException
    worker_died: bool = False


class Executor(ABC):
    """Runs tasks somewhere; reports clip-level progress back to the caller's thread. Its options are the
    fields of its `Options` dataclass (`kebr_data.plugin_options.option`): the config section named after
    the executor (`[ray] address = ...`) and a flag of the commands that run stages (`--address`)."""

    Options: ClassVar[type] = NoOptions

    def __init__(self, workers: int, options: Any = None) -> None:
        self.workers = workers
        self.options = options if options is not None else self.Options()

    @classmethod
    def check(cls) -> list[str]:
        """Missing prerequisites (extras) as messages; empty when usable."""
        return []

    @abstractmethod
    def run(self, fn: TaskFn, tasks: list[Any], on_progress: Callable[[Any, int], None],
            cpus: float = 1.0, gpus: float = 0.0) -> Iterator[tuple[Any, Any]]:
        """Yield `(task, result)` as tasks finish; result is a TaskFailed when the task did not finish.

        `on_progress(task, n)` is called in the caller's thread while tasks run (executors that
        cannot report clips report whole shards). `cpus`/`gpus` are what one task needs.
        """
