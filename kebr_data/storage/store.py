"""The store: the only code that opens an output folder's plan, markers and stage tables.

Every reader (engine, workers, validate, export, report, status, the trainer) asks the store,
so "is this shard committed and current" has one answer everywhere:

- committed: the done marker parses and the table exists with the size (and, when verified,
  the sha256) the marker records;
- current: the upstream tables it was made from are the ones committed now (recursively, up to
  the plan), and all shards of a stage were made with one configuration.

A `Store` is one snapshot of the folder: each marker is read once and cached (`reads` counts the
file reads), until a writer calls `forget` after committing a new one.
"""

from __future__ import annotations

import collections
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import PlanError, StaleOutputError
from .atomic import NotRegularFile
from .layout import OutputDir
from .markers import CorruptMarker, Marker, PlanMarker, read_marker, read_plan_marker_file
from .verified import Digests

PLAN = "plan"


@dataclass(frozen=True)
class Frames:
    """A frame-feature column of one shard, straight from Arrow buffers: clip i's frames are
    `values[offsets[i]:offsets[i+1]]` (N_frames × dim float32); null rows have no frames."""

    values: np.ndarray
    offsets: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def clip(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]


def frames_of(column: pa.ChunkedArray | pa.Array) -> Frames:
    """Values + offsets of a `list<fixed_size_list<float32, D>>` column without Python floats."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = array.type.value_type.list_size
    offsets = array.offsets.to_numpy().astype(np.int64)
    flat = array.values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    values = flat.reshape(-1, dim)[offsets[0]:offsets[-1]]
    return Frames(values, offsets - offsets[0])


class TableSource:
    """One input table of a shard: in memory, or a Parquet file read a row group at a time, so a
    worker holds one batch of its inputs (say, 64 clips of FLAC) rather than the whole shard."""

    def __init__(self, table: pa.Table | None = None, path: Path | None = None,
                 columns: list[str] | None = None) -> None:
        self.table, self.path, self.columns = table, path, columns

    def rows(self, batch_rows: int = 64) -> Iterator[dict[str, Any]]:
        if self.table is not None:
            batches = self.table.select(self.columns).to_batches(batch_rows) if self.columns else \
                self.table.to_batches(batch_rows)
        else:
            batches = pq.ParquetFile(self.path).iter_batches(batch_size=batch_rows, columns=self.columns)
        for batch in batches:
            yield from batch.to_pylist()

    def read(self) -> pa.Table:
        return self.table if self.table is not None else pq.read_table(self.path, columns=self.columns)


def fix_command(root: Path, stage: str) -> str:
    """The command that (re)computes `stage` in `root`."""
    if stage == "mask":
        return f"kebr-data mask --out {root}"
    if stage == PLAN:
        return f"kebr-data extract --out {root} --replan"
    return f"kebr-data extract --out {root} --stages {stage}"


def force_command(root: Path, stage: str) -> str:
    """The command that recomputes every shard of `stage` in `root` (`kebr-data mask` has no --force: extract
    runs the mask stage too)."""
    if stage == PLAN:
        return fix_command(root, PLAN)
    return f"kebr-data extract --out {root} --stages {stage} --force"


def no_plan_error(root: Path) -> PlanError:
    """The error for a folder without a committed plan, naming the command that makes one."""
    what = "does not exist" if not root.exists() else "is not a kebr-data output folder (no committed plan)"
    return PlanError(f"{root} {what}: first run `kebr-data extract --src DATASET --out {root}`")


class Store:
    """A read snapshot of one output folder (see the module docstring)."""

    def __init__(self, root: Path | str, digests: Digests | None = None) -> None:
        self.out = OutputDir(Path(root))
        #: the tables' sha256 when verified (`verify=True`): each hashed once while its stat stays the same
        self.digests = digests or Digests()
        self._plan: PlanMarker | None = None
        self._markers: dict[tuple[str, int], Marker | None] = {}
        self._corrupt: dict[tuple[str, int], str] = {}
        #: file reads per (stage, shard) marker, for tests and for the curious
        self.reads: collections.Counter = collections.Counter()

    @property
    def root(self) -> Path:
        return self.out.root

    # -- plan -------------------------------------------------------------------------------------
    def plan_or_none(self) -> PlanMarker | None:
        """The plan marker (new layout, else the pre-0.2 one), None when no plan is committed."""
        if self._plan is None:
            self.reads[(PLAN, -1)] += 1
            try:
                self._plan = read_plan_marker_file(self.out.plan_marker) or \
                    read_plan_marker_file(self.out.legacy_plan_marker)
            except CorruptMarker as exc:
                raise PlanError(f"the plan marker of {self.root} is damaged ({exc}); re-index with "
                                f"`kebr-data extract --out {self.root} --replan --src ...`") from None
        return self._plan

    @property
    def plan(self) -> PlanMarker:
        """The plan marker; a PlanError when `root` is not an output folder."""
        marker = self.plan_or_none()
        if marker is None:
            raise no_plan_error(self.root)
        return marker

    def forget_plan(self) -> None:
        self._plan = None

    def plan_ids(self, shard: int) -> list[str]:
        return self.read(PLAN, shard, ["clip_id"]).column("clip_id").to_pylist()

    # -- markers ----------------------------------------------------------------------------------
    def marker(self, stage: str, shard: int) -> Marker | None:
        """The done marker of (stage, shard); None when absent or corrupt (see `corrupt`)."""
        key = (stage, shard)
        if key not in self._markers:
            self.reads[key] += 1
            try:
                found = read_marker(self.out.marker(stage, shard))
                if found is None:
                    found = read_marker(self.out.legacy_marker(stage, shard))
                if found is not None and (found.stage, found.shard) != key:
                    raise CorruptMarker(f"marker of {stage} shard {shard:05d} describes {found.stage} "
                                        f"shard {found.shard:05d}")
            except CorruptMarker as exc:
                self._corrupt[key] = str(exc)
                found = None
            self._markers[key] = found
        return self._markers[key]

    def corrupt(self, stage: str, shard: int) -> str | None:
        """Why the marker of (stage, shard) could not be read, if it could not."""
        self.marker(stage, shard)
        return self._corrupt.get((stage, shard))

    def forget(self, stage: str, shard: int) -> None:
        """Drop the cached marker after a writer committed a new one."""
        self._markers.pop((stage, shard), None)
        self._corrupt.pop((stage, shard), None)

    def stages(self) -> list[str]:
        """Stages that have at least one done marker."""
        return self.out.stage_names()

    def committed_hash(self, stage: str, shard: int) -> str | None:
        """sha256 of the (stage, shard) table as committed now: what a downstream marker records."""
        if stage == PLAN:
            return self.plan.shard_sha256(shard)
        m = self.marker(stage, shard)
        return m.output_sha256 if m else None

    # -- committed and current ---------------------------------------------------------------------
    def problem(self, stage: str, shard: int, verify: bool = False) -> str | None:
        """Why (stage, shard) is not committed and current, or None when it is.

        `verify` re-hashes the table (sha256) instead of comparing its size only."""
        if stage == PLAN:
            return self._table_problem(self.out.table(PLAN, shard), self.plan.shard(shard)["bytes"],
                                       self.plan.shard_sha256(shard), verify)
        m = self.marker(stage, shard)
        if m is None:
            corrupt = self.corrupt(stage, shard)
            return f"corrupt marker ({corrupt})" if corrupt else "not done"
        found = self._table_problem(self.out.table(stage, shard), m.output_bytes, m.output_sha256, verify)
        if found:
            return found
        for up, recorded in sorted(m.upstream.items()):
            if self.committed_hash(up, shard) != recorded:
                return f"stale: made from another {up} table than the one committed now"
        return None

    def committed_shards(self, stage: str) -> list[int]:
        """Shards of `stage` whose marker and table are present and agree in size (current or not)."""
        return [shard for shard in range(self.plan.num_shards) if (m := self.marker(stage, shard)) is not None
                and not self._table_problem(self.out.table(stage, shard), m.output_bytes, m.output_sha256, False)]

    def _table_problem(self, path: Path, size: int, sha256: str, verify: bool) -> str | None:
        try:
            st = os.lstat(path)  # a table replaced by a symlink, FIFO or folder is never read
            if not stat.S_ISREG(st.st_mode):
                return "table is not a regular file (a symlink?)"
            if not verify:
                return None if st.st_size == size else "table truncated or replaced (size differs from its marker)"
            return None if self.digests.digest(path) == (size, sha256) else "table differs from its marker (sha256)"
        except FileNotFoundError:
            return "marker without table"
        except NotRegularFile:
            return "table is not a regular file (a symlink?)"

    def config_hashes(self, stage: str) -> collections.Counter:
        """How many committed shards of `stage` were made with each config hash."""
        return collections.Counter(m.config_hash for shard in range(self.plan.num_shards)
                                   if (m := self.marker(stage, shard)) is not None)

    def require_current(self, stages: list[str], verify: bool = False) -> None:
        """Raise StaleOutputError naming the fix unless every shard of every stage in `stages` is committed,
        current, aligned with the plan, and made with one configuration per stage."""
        lines = []
        for stage in stages:
            bad = [(shard, why) for shard in range(self.plan.num_shards)
                   if (why := self.problem(stage, shard, verify))]
            if bad:
                shard, why = bad[0]
                lines.append(f"{stage}: {len(bad)} of {self.plan.num_shards} shard(s) not usable (shard "
                             f"{shard:05d}: {why}); fix: {fix_command(self.root, stage)}")
            elif stage != PLAN and len(self.config_hashes(stage)) > 1:
                lines.append(f"{stage}: shards were made with different settings (an interrupted rerun); fix: "
                             f"{fix_command(self.root, stage)}" + (" --force" if stage != "mask" else ""))
        if lines:
            raise StaleOutputError(f"{self.root} holds tables that must not be read as they are:\n  " +
                                   "\n  ".join(lines) + "\n(experts: `kebr-train --set allow_stale=true` reads them "
                                   "anyway)")

    # -- tables -------------------------------------------------------------------------------------
    def source(self, stage: str, shard: int, columns: list[str] | None = None) -> TableSource:
        """A streaming source over the committed table of (stage, shard)."""
        return TableSource(path=self.out.table(stage, shard), columns=columns)

    def read(self, stage: str, shard: int, columns: list[str] | None = None) -> pa.Table:
        """The committed table of (stage, shard) (optionally some columns)."""
        return pq.read_table(self.out.table(stage, shard), columns=columns)

    def read_aligned(self, stage: str, shard: int, columns: list[str], plan_ids: list[str]) -> pa.Table:
        """Like `read`, checking row by row that the table holds the plan shard's clips in plan order."""
        table = self.read(stage, shard, ["clip_id", *[c for c in columns if c != "clip_id"]])
        if table.column("clip_id").to_pylist() != plan_ids:
            raise StaleOutputError(f"{stage} shard {shard:05d} of {self.root} is not aligned with the plan "
                                   f"(its rows are other clips); fix: {force_command(self.root, stage)}")
        return table

    def frame_width(self, stage: str, column: str = "features") -> int | None:
        """The frame width of a stage's frame column, from the schema of its first committed shard
        (None when no shard is committed or the column is not a frame column)."""
        shards = self.committed_shards(stage)
        if not shards:
            return None
        schema = pq.read_schema(self.out.table(stage, shards[0]))
        if column not in schema.names:
            return None
        typ = schema.field(column).type
        if pa.types.is_list(typ) and pa.types.is_fixed_size_list(typ.value_type):
            return int(typ.value_type.list_size)
        return None

    def frames(self, stage: str, shard: int, column: str = "features") -> Frames:
        """A frame-feature column as values + offsets."""
        return frames_of(self.read(stage, shard, [column]).column(column))
