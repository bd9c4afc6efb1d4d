"""Executors run (stage, shard) tasks; they know nothing of what a stage does."""

from __future__ import annotations

from .base import Executor, TaskFailed
from .local import LocalExecutor
from .ray import RayExecutor

EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, workers: int, address: str = "") -> Executor:
    """The executor called `name` (`--executor`); `address` is a Ray cluster's."""
    if name == "ray":
        return RayExecutor(workers, address)
    return EXECUTORS[name](workers=workers)


__all__ = ["Executor", "TaskFailed", "LocalExecutor", "RayExecutor", "EXECUTORS", "make_executor"]
