"""The executor interface: run a function over tasks, yield each outcome as it finishes."""

from __future__ import annotations

import heapq
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
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


class TaskFeed:
    """Tasks released while a run goes on (overlapped stages: a shard's next stage once its inputs are
    committed), each with the resources one needs. Executors take what is ready, highest priority (lowest
    number) first, and ask again after each outcome they yield, so the caller may `add` while reading them."""

    def __init__(self, tasks: Iterable[Any] = (), cpus: float = 1.0, gpus: float = 0.0, planned: int = 0) -> None:
        self._heap: list[tuple[int, int, Any, float, float]] = []
        self._order = itertools.count()
        #: how many tasks the feed may release in all (sizes a process pool); grows with `add`
        self.planned = planned
        self._added = 0
        for task in tasks:
            self.add(task, cpus, gpus)

    def add(self, task: Any, cpus: float = 1.0, gpus: float = 0.0, priority: int = 0) -> None:
        """Make `task` ready; among ready tasks the lowest `priority` goes first, then the oldest."""
        heapq.heappush(self._heap, (priority, next(self._order), task, cpus, gpus))
        self._added += 1
        self.planned = max(self.planned, self._added)

    def take(self, limit: int | None = None) -> list[tuple[Any, float, float]]:
        """Up to `limit` (None: all) ready tasks as (task, cpus, gpus), removed from the feed."""
        n = len(self._heap) if limit is None else max(0, min(limit, len(self._heap)))
        return [heapq.heappop(self._heap)[2:] for _ in range(n)]

    def __len__(self) -> int:
        return len(self._heap)


def as_feed(tasks: list[Any] | TaskFeed, cpus: float, gpus: float) -> TaskFeed:
    """A feed of `tasks` (a list: all ready now, each needing `cpus`/`gpus`)."""
    return tasks if isinstance(tasks, TaskFeed) else TaskFeed(tasks, cpus, gpus, planned=len(tasks))


class Executor(ABC):
    """Runs tasks somewhere; reports clip-level progress back to the caller's thread. Its options are the
    fields of its `Options` dataclass (`kebr_data.plugin_options.option`): the config section named after
    the executor (`[ray] address = ...`) and a flag of the commands that run stages (`--address`)."""

    Options: ClassVar[type] = NoOptions
    #: whether `run` takes a growing TaskFeed (overlapped stages, `run.overlap`); others run stage by stage
    takes_feed: ClassVar[bool] = False

    def __init__(self, workers: int, options: Any = None) -> None:
        self.workers = workers
        self.options = options if options is not None else self.Options()

    @classmethod
    def check(cls) -> list[str]:
        """Missing prerequisites (extras) as messages; empty when usable."""
        return []

    @abstractmethod
    def run(self, fn: TaskFn, tasks: list[Any] | TaskFeed, on_progress: Callable[[Any, int], None],
            cpus: float = 1.0, gpus: float = 0.0) -> Iterator[tuple[Any, Any]]:
        """Yield `(task, result)` as tasks finish; result is a TaskFailed when the task did not finish.

        `on_progress(task, n)` is called in the caller's thread while tasks run (executors that
        cannot report clips report whole shards). `cpus`/`gpus` are what one task of a list needs; a
        TaskFeed carries each task's own and may grow while its outcomes are read (see TaskFeed).
        """
