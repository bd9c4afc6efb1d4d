"""Executors run (stage, shard) tasks; they know nothing of what a stage does.

Adding one is a file with an `Executor` subclass (its options, if any, an `Options` dataclass) plus one
line in `EXECUTORS` (docs/extending/executor.md).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Executor, TaskFailed, TaskFeed
from .local import LocalExecutor
from .ray import RayExecutor

EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def executor_class(name: str) -> type[Executor]:
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ConfigError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}") from None


def make_executor(name: str, workers: int, options: dict[str, Any] | None = None) -> Executor:
    """The executor called `name` (`--executor`) with its options (its config section's values, checked)."""
    cls = executor_class(name)
    return cls(workers, cls.Options(**(options or {})))


__all__ = ["Executor", "TaskFailed", "TaskFeed", "EXECUTORS", "executor_class", "make_executor"]
