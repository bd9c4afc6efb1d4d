"""Executors run (stage, shard) tasks; they know nothing of what a stage does."""

from __future__ import annotations

from .base import Executor, TaskFailed
from .local import LocalExecutor

EXECUTORS = {"local": LocalExecutor}


def make_executor(name: str, workers: int) -> Executor:
    """The executor called `name` (`--executor`)."""
    return EXECUTORS[name](workers=workers)


__all__ = ["Executor", "TaskFailed", "LocalExecutor", "EXECUTORS", "make_executor"]
