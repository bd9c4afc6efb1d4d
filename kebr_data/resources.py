"""What one shard task needs from the machine, declared by stages and ASR engines alike (read by executors
that schedule resources)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """What one shard task of a stage needs (used by executors that schedule resources)."""

    cpus: float = 1.0
    gpus: float = 0.0
