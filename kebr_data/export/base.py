"""What every export format shares: the shard's committed, current stage tables (read through the
store), the transcript rule, and the done markers that make a half-written export detectable.

A format writes each file to a temp name and renames it, then a done marker in `DEST/_done/`
records the source tables' hashes and the file's own size and sha256: a file without its marker is
unfinished, and a rerun redoes what is missing, out of date, or not the bytes it wrote (truncated,
edited, replaced by a symlink).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from .. import __version__
from ..settings import NoOptions
from ..schema import clip_text
from ..stages import registry
from ..storage.atomic import atomic_write_json, file_digest, read_control_file
from ..storage.layout import shard_name
from ..storage.store import PLAN, Store


@dataclass
class ShardTables:
    """One shard's plan and stage tables (rows aligned with the plan) and the hashes they were read at."""

    shard: int
    plan: pa.Table
    stages: dict[str, pa.Table]
    hashes: dict[str, str]

    def texts(self) -> tuple[list[str], list[str], list[float]]:
        """(transcript, masked text, mask label) per clip; '' and NaN where a clip has none."""
        n = self.plan.num_rows
        given = self.plan.column("given_text").to_pylist()
        mask = self.stages["mask"].to_pylist() if "mask" in self.stages else [None] * n
        asr = self.stages["asr"].select(["status", "text"]).to_pylist() if "asr" in self.stages else [None] * n
        text = [clip_text(g, m, a) or "" for g, m, a in zip(given, mask, asr, strict=True)]
        masked = [m["masked_text"] if m and m["status"] == "ok" else "" for m in mask]
        mask_label = [m["label"] if m and m["status"] == "ok" else np.nan for m in mask]
        return text, masked, mask_label


def exported_stages(store: Store) -> list[str]:
    """The registered stages with outputs in the folder, in pipeline order."""
    present = set(store.stages())
    return [name for name in registry() if name in present]


def load_shard(store: Store, shard: int, stages: list[str]) -> ShardTables:
    """The shard's tables without the columns their stages leave out of exports."""
    plan = store.read(PLAN, shard)
    ids = plan.column("clip_id").to_pylist()
    tables, hashes = {}, {PLAN: store.committed_hash(PLAN, shard)}
    for stage in stages:
        cls = registry()[stage]
        columns = [f.name for f in cls.schema if f.name not in cls.export_drop]
        tables[stage] = store.read_aligned(stage, shard, columns, ids)
        hashes[stage] = store.committed_hash(stage, shard)
    return ShardTables(shard, plan, tables, hashes)


def done_path(dest: Path, name: str) -> Path:
    return dest / "_done" / f"{name}.json"


def read_done(dest: Path, name: str) -> dict[str, Any] | None:
    """The done marker of export file `name` (read without following a symlink); None when it is absent,
    planted or not a marker."""
    try:
        done = json.loads(read_control_file(done_path(dest, name)))
    except (OSError, ValueError):  # NotRegularFile is a ValueError
        return None
    return done if isinstance(done, dict) else None


def recorded_output(dest: Path, name: str) -> tuple[int, str] | None:
    """The (size, sha256) that export file `name`'s marker recorded when it was written, or None."""
    done = read_done(dest, name) or {}
    try:
        return int(done["bytes"]), str(done["sha256"])
    except (KeyError, TypeError, ValueError):
        return None


def up_to_date(dest: Path, name: str, sources: Any, target: Path) -> bool:
    """True when the done marker of `target` records exactly these sources and `target` is a regular file
    (no symlink followed) with the size and sha256 the marker records: the bytes this export wrote."""
    done, recorded = read_done(dest, name), recorded_output(dest, name)
    try:
        return done is not None and done.get("sources") == sources and file_digest(target) == recorded
    except (FileNotFoundError, ValueError):  # NotRegularFile is a ValueError
        return False


def mark_done(dest: Path, name: str, sources: Any, fmt: str, output: tuple[int, str] | None = None,
              **extra: Any) -> None:
    """Commit the done marker of export file `name`: its sources' hashes and, for a file per shard, the
    (size, sha256) of the file written, which `up_to_date` checks."""
    digest = {"bytes": output[0], "sha256": output[1]} if output else {}
    atomic_write_json(done_path(dest, name), {"sources": sources, "format": fmt, "toolkit_version": __version__,
                                              **digest, **extra}, dest)


class ExportFormat(ABC):
    """One export format; subclass `ShardFormat` (a file per shard) or `FolderFormat` (one file). Its options
    are the fields of its `Options` dataclass (`kebr_data.plugin_options.option`), which `kebr-data export`
    offers as flags; the format receives them checked, as `self.options`."""

    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()

    def check(self, store: Store, stages: list[str]) -> None:
        """Refuse before writing anything (raise a KebrError)."""

    @abstractmethod
    def describe(self) -> str:
        """What the format is, for --help."""


class ShardFormat(ExportFormat):
    """A format written as one file per shard, redone only when its sources changed."""

    suffix: str

    @abstractmethod
    def write_shard(self, path: Path, tables: ShardTables) -> tuple[int, str]:
        """Write one shard's file (atomically, in a folder already checked); return its (size, sha256)."""


class FolderFormat(ExportFormat):
    """A format written as one file for the whole folder."""

    @abstractmethod
    def build(self, shards: list[ShardTables]) -> tuple[Any, str]:
        """The whole export's content and a one-line note for the user; refuse (raise a KebrError) an
        export that would be useless, before any folder or file is made."""

    @abstractmethod
    def write(self, dest: Path, content: Any) -> None:
        """Write what `build` returned (atomically, in a folder already checked)."""


def shard_file(dest: Path, shard: int, suffix: str) -> Path:
    return dest / shard_name(shard, suffix)
