"""What a stage is: a plain object with a name, a version, upstream stages, resources, a typed
config section (its `Settings` dataclass; the stage reads `self.settings`, an instance of it), an output
schema and `run_shard(ctx) -> table`. Stages know nothing about executors
or about where tables are stored; the registry (`kebr_data.stages`) derives everything else
(pipeline order, validation, export, report, CLI choices, the trainer's widths) from these
declarations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from ..errors import ClipError, EnvironmentFailure, environment_problem, redact
from ..features.numba_cache import first_use
from ..media.binaries import Tool
from ..resources import Resources
from ..schema import frame_columns, rows_to_batch, with_metadata
from ..settings import NoSettings, content_hash, runtime_keys, typed
from ..storage.store import TableSource


@dataclass
class ShardContext:
    """Everything a stage gets for one shard: input tables, a temp folder, a log, a progress callback."""

    shard: int
    inputs: dict[str, pa.Table | TableSource]
    tmp_dir: Path
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("kebr_data.stage"))
    progress: Callable[[int], None] = lambda n: None

    def source(self, name: str) -> TableSource:
        """The input table `name` (`plan` or an upstream stage) as a TableSource."""
        value = self.inputs[name]
        return value if isinstance(value, TableSource) else TableSource(value)

    def temp(self) -> Path:
        """The shard's temp folder, created on first use and removed by the engine at commit."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir


@dataclass
class ClipInput:
    """One clip's plan row and its rows from the upstream stages."""

    clip_id: str
    plan: dict[str, Any]
    upstream: dict[str, dict[str, Any]]


class Stage(ABC):
    """Base of every stage. Subclasses set the class attributes and implement `run_shard`."""

    name: ClassVar[str]
    version: ClassVar[str]
    #: the output table's columns; frame features are `list<fixed_size_list<float32, D>>` (see `frame_columns`)
    schema: ClassVar[pa.Schema]
    upstream: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources()
    #: the stage's config section (`[name]` in TOML files), a dataclass of `kebr_data.config.setting` fields
    Settings: ClassVar[type] = NoSettings
    #: run by `kebr-data extract` when no --stages are given
    extract_default: ClassVar[bool] = True
    #: columns `kebr-data export` leaves out (payloads other tools cannot use, e.g. FLAC bytes)
    export_drop: ClassVar[tuple[str, ...]] = ()
    #: string columns holding a per-shard setting (a recipe, a model): attributes of the stage's HDF5 export group
    hdf5_attributes: ClassVar[tuple[str, ...]] = ()
    #: names of the external programs `tools()` returns (`kebr-data validate` reads their hashes in the markers)
    tool_names: ClassVar[tuple[str, ...]] = ()
    #: histograms in `kebr-data report`: (column, title, x label, bins)
    report_plots: ClassVar[tuple[tuple[str, str, str, Any], ...]] = ()

    def __init__(self, settings: Any) -> None:
        """`settings`: an instance of `Settings`, or the resolved values of the stage's `[section]` (a dict
        from `kebr_data.config.load`, already checked there), typed here once."""
        self.settings = typed(self.Settings, settings)

    @classmethod
    def frame_columns(cls) -> dict[str, int]:
        """Frame-feature columns of the output and their widths D."""
        return frame_columns(cls.schema)

    @classmethod
    def runtime_keys(cls) -> tuple[str, ...]:
        """Config keys that change how the stage runs but not what it writes (left out of the hash)."""
        return runtime_keys(cls.Settings)

    def hashed_settings(self) -> dict[str, Any]:
        """The settings that decide what the stage writes: every key but the runtime ones (and those declared
        `hash_default=False` while at their default: added later, they leave older folders current)."""
        runtime, values = self.runtime_keys(), dataclasses.asdict(self.settings)
        unhashed = {f.name for f in dataclasses.fields(self.settings)
                    if not f.metadata.get("hash_default", True) and values[f.name] == f.default}
        return {k: v for k, v in values.items() if k not in runtime and k not in unhashed}

    def config_hash(self) -> str:
        """Hash of everything that determines this stage's output."""
        semantic = self.hashed_settings()
        return content_hash({"stage": self.name, "version": self.version, "config": semantic})

    def check(self) -> list[str]:
        """Missing prerequisites (binaries, models, extras) as messages; empty when ready."""
        return []

    def versions(self) -> dict[str, str]:
        """Versions of the external tools this stage uses, recorded in its markers."""
        return {}

    def tools(self) -> dict[str, Tool]:
        """External programs whose path is a runtime setting but whose build decides the output (ffmpeg,
        OpenFace): an output folder pins each at the stage's first run and refuses another one
        (`kebr_data.pipeline.pins`); their hashes go into the markers (`tool_hashes`)."""
        return {}

    def tool_hashes(self) -> dict[str, str]:
        """`<tool>_sha256` of each of `tools()`, recorded in the markers' versions."""
        return {f"{name}_sha256": tool.sha256 for name, tool in self.tools().items()}

    def input_columns(self) -> dict[str, list[str] | None]:
        """Columns to read from each upstream table (None = all)."""
        return {u: None for u in self.upstream}

    def warm_up(self, say: Callable[[str], None]) -> None:
        """One-time set-up run once by the engine before the workers start (e.g. compiling kernels into
        a cache every worker reads), so no worker stalls on it and it stays out of the shards' wall times.
        `say` prints a progress line."""

    @abstractmethod
    def run_shard(self, ctx: ShardContext) -> pa.Table:
        """Process one shard; return a table with one row per plan row, in plan order."""

    def shard_stats(self, table: pa.Table) -> dict[str, Any]:
        """Stage-specific counts kept in the done marker (numbers, or dicts of numbers, that add up
        across shards)."""
        return {}

    @staticmethod
    def format_stats(stats: dict[str, Any]) -> str:
        """One line describing the summed `shard_stats` of all shards, for `kebr-data status`."""
        return ""

    def table(self, rows: list[dict[str, Any]]) -> pa.Table:
        """Build this stage's output table from row dicts."""
        return pa.Table.from_pylist(rows, schema=with_metadata(self.schema, self.name))


def row(clip_id: str, status: str = "ok", error: str | None = None, message: str | None = None,
        **columns: Any) -> dict[str, Any]:
    """A stage row with the common columns every stage table has."""
    return {"clip_id": clip_id, "status": status, "error": error, "message": message, **columns}


def iter_clips(ctx: ShardContext, upstream: tuple[str, ...]) -> Iterator[ClipInput]:
    """Stream the shard's clips with their upstream rows, checking that all tables are row-aligned."""
    names = [u for u in upstream if u != "plan"]
    streams = [ctx.source("plan").rows()] + [ctx.source(u).rows() for u in names]
    for rows in itertools.zip_longest(*streams):
        plan = rows[0]
        for name, r in zip(names, rows[1:], strict=True):
            if plan is None or r is None or r["clip_id"] != plan["clip_id"]:
                raise RuntimeError(f"{name} table of shard {ctx.shard} is not aligned with the plan")
        yield ClipInput(plan["clip_id"], plan, dict(zip(names, rows[1:], strict=True)))


class ClipStage(Stage):
    """A stage that handles clips one at a time; a bad clip becomes a row, never a crash."""

    @abstractmethod
    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        """Columns of an `ok` row for `clip`; raise ClipError/ClipSkipped for a bad clip."""

    #: rows converted to Arrow at a time, so a shard never holds its payload twice as Python objects
    batch_rows: ClassVar[int] = 64
    #: librosa (numba) runs in `process`: a worker's first clip holds the kernel cache's lock (numba_cache.first_use)
    compiles_kernels: ClassVar[bool] = False

    def kernel_key(self) -> str:
        """What decides which kernels `process` compiles (the marker's name in the kernel cache)."""
        return self.name

    def run_shard(self, ctx: ShardContext) -> pa.Table:
        schema = with_metadata(self.schema, self.name)
        batches: list[pa.RecordBatch] = []
        rows: list[dict[str, Any]] = []
        for clip in iter_clips(ctx, self.upstream):
            rows.append(self._clip_row(clip, ctx))
            ctx.progress(1)
            if len(rows) == self.batch_rows:
                batches.append(rows_to_batch(rows, schema))
                rows = []
        if rows or not batches:
            batches.append(rows_to_batch(rows, schema))
        return pa.Table.from_batches(batches, schema=schema)

    def _clip_row(self, clip: ClipInput, ctx: ShardContext,
                  work: Callable[[ClipInput], dict[str, Any]] | None = None) -> dict[str, Any]:
        """One output row: skipped when an upstream row is not ok, else `process` (or `work`, a stage's own step
        of it), with clip errors as rows."""
        bad = next(((u, r) for u, r in clip.upstream.items() if r["status"] != "ok"), None)
        if bad is not None:
            u, r = bad
            return row(clip.clip_id, "skipped", f"upstream_{r['status']}", f"{u}: {r['error']}")
        t0 = time.monotonic()
        try:
            with first_use(self.kernel_key()) if self.compiles_kernels else contextlib.nullcontext():
                result = row(clip.clip_id, **(self.process(clip, ctx) if work is None else work(clip)))
        except ClipError as exc:
            if (problem := environment_problem(exc)) is not None:  # the machine's fault: abort, never a row
                raise EnvironmentFailure(f"{self.name} stopped at clip {clip.clip_id}: {redact(problem)}") from exc
            ctx.log.warning("%s %s: %s", exc.status, clip.clip_id, redact(str(exc)))
            return row(clip.clip_id, exc.status, exc.error, redact(exc.message))
        ctx.log.info("ok %s (%.3f s)", clip.clip_id, time.monotonic() - t0)
        return result


class AudioClipStage(ClipStage):
    """A clip stage computed from the audio stage's FLAC alone (acoustic, melspec, ...)."""

    upstream = ("plan", "audio")

    def input_columns(self) -> dict[str, list[str] | None]:
        return {"audio": ["clip_id", "status", "error", "flac"]}
