"""Executors run (stage, shard) tasks; they know nothing of what a stage does.

Adding one is a file with an `Executor` subclass plus one line in `EXECUTORS`.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Executor, TaskFailed
from .local import LocalExecutor
from .ray import RayExecutor

EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def executor_class(name: str) -> type[Executor]:
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ConfigError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}") from None


def make_executor(name: str, workers: int, address: str = "") -> Executor:
    """The executor called `name` (`--executor`); `address` is a cluster's (Ray)."""
    return executor_class(name)(workers, address)


__all__ = ["Executor", "TaskFailed", "EXECUTORS", "executor_class", "make_executor"]
