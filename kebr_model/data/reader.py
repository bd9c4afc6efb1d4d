"""The one reader of a run's training data: opened once per run over the `--shards` folder, it answers
every question the trainer, eval, analyse, the plots and sweeps ask of that folder.

Two backends implement the same small interface (`ShardReader`): `ParquetReader` over a kebr-data
output folder (built on one `Store`, so each marker is read once and the plan walked once per run) and
`Hdf5Reader` over a `kebr-data export --format hdf5` folder. `detect.open_reader` is the only place that
tells them apart; callers never branch on the backend. How to add one: docs/extending/reader.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

    from kebr_data.storage.verified import Digests

    from .preflight import Inventory


@dataclass
class ShardRows:
    """One shard's rows, shaped like the stage tables and aligned with its plan: the plan rows (clip_id,
    split, given_text and the label columns), the mask and asr rows (None when the stage is absent), and
    per frame stage its rows (`status` and a `features` array, or the audio stage's `flac`; None when absent)."""

    plan: list[dict[str, Any]]
    mask: list[dict[str, Any]] | None
    asr: list[dict[str, Any]] | None
    frames: dict[str, list[dict[str, Any]] | None]


@runtime_checkable
class ShardReader(Protocol):
    """What the trainer side reads from a folder of shards (see the module docstring)."""

    root: Path

    def shard_ids(self) -> list[int]:
        """The shard numbers, in order; PlanError for a folder that holds no shards."""

    def inventory(self, task: str, label: str = "label") -> Inventory | None:
        """Shards, labelled clips, splits and candidate samples per split (preflight); None when the
        backend cannot tell before reading the frames (an HDF5 export)."""

    def plan_labels(self) -> list[pa.Table] | None:
        """Each plan shard's `split` and label columns, read once; None without a plan (an HDF5 export)."""

    def check(self, task: str, allow_stale: bool = False, modalities: dict[str, str] | None = None,
              digests: Digests | None = None) -> list[str]:
        """Refuse tables that are absent, stale or edited (one line naming the fix), unless `allow_stale`;
        return the stage tables the run reads. `modalities` (modality -> stage; default audio and visual from
        their usual stages) must be there; `digests` keeps the tables' verified sha256s (the run's record)."""

    def widths(self, modalities: dict[str, str]) -> dict[str, int]:
        """Frame width per modality (a new dict each call); PlanError for a stage without frames."""

    def frame_modalities(self, modalities: dict[str, str] | None = None) -> set[str]:
        """The modalities of `modalities` (modality -> stage; default audio and visual from their usual
        stages) whose frames the folder holds (all of them when the backend cannot tell)."""

    def identity(self, stages: list[str], widths: dict[str, int]) -> dict[str, Any]:
        """What a run reads, recorded in its checkpoints so that a resume on other data is refused."""

    def source(self) -> dict[str, Any]:
        """How the folder was made, for `kebr-train predict`: its path and, where the backend knows them, the
        plan hash, the configuration and pinned tools its run.json saved, and each stage's config hashes."""

    def shard_rows(self, shard: int, stages: list[str], digests: Digests | None = None) -> ShardRows:
        """One shard's rows (`stages`: the frame stages); with `digests`, its tables are checked again
        against their markers first (a table edited during training is refused)."""
