"""Read an output folder as one per-clip table: `kebr_data.open("features/")`.

One row per clip of the plan, in plan order; `clip_id`, then every column of every stage named
`<stage>.<column>` (`plan.label`, `mask.label`, `asr.text`, `acoustic.features`, each stage's
`status` and `error`), so no two stages' columns collide. Payloads that exports leave out (the audio
stage's FLAC bytes) are read only when named in `columns`; on a large folder, name the columns you need. Only committed tables are read, through
the `Store`: by default every selected stage must be current in every shard (else the error names
the command that fixes it); `partial=True` keeps just the shards that are.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import Any, Literal

import pyarrow as pa

from .errors import ConfigError, PrerequisiteError
from .schema import PLAN as PLAN_SCHEMA
from .stages import registry
from .storage.store import PLAN, Store

Format = Literal["arrow", "pandas", "datasets"]
FORMATS = ("arrow", "pandas", "datasets")


def _stage_schema(stage: str) -> pa.Schema:
    return PLAN_SCHEMA if stage == PLAN else registry()[stage].schema


def _wanted(stages: list[str], columns: Iterable[str] | None) -> dict[str, list[str]]:
    """The columns to read per stage ('clip_id' excluded), from qualified names such as `mask.label`."""
    if columns is None:  # every column but payloads such as the audio stage's FLAC bytes (`export_drop`)
        return {s: [c for c in _stage_schema(s).names if c != "clip_id" and
                    (s == PLAN or c not in registry()[s].export_drop)] for s in stages}
    wanted: dict[str, list[str]] = {}
    for name in columns:
        if name == "clip_id":
            continue
        stage, _, column = name.partition(".")
        if stage not in registry() and stage != PLAN or column not in _stage_schema(stage).names:
            raise ConfigError(f"unknown column {name!r}: give <stage>.<column>, e.g. plan.label or mask.label")
        wanted.setdefault(stage, []).append(column)
    return wanted


def _empty(wanted: dict[str, list[str]]) -> pa.Table:
    fields = [pa.field("clip_id", pa.string())]
    for stage, cols in wanted.items():
        schema = _stage_schema(stage)
        fields += [pa.field(f"{stage}.{c}", schema.field(c).type) for c in cols]
    return pa.schema(fields).empty_table()


def read_folder(root: str | os.PathLike[str], stages: Iterable[str] | None = None, columns: Iterable[str] | None = None,
                partial: bool = False) -> pa.Table:
    """The joined per-clip table of output folder `root` (see the module docstring).

    `stages`: which stages to join (default: every stage with outputs; the plan always comes first);
    `columns`: qualified names to keep (default: all). Raises StaleOutputError (naming the fix) when a
    selected stage is not current, unless `partial`."""
    store = Store(root)
    marker = store.plan
    if stages is None:
        present = set(store.stages())
        stages = [s for s in registry() if s in present]
    else:
        stages = [s for s in stages if s != PLAN]
        for s in stages:
            if s not in registry():
                raise ConfigError(f"unknown stage {s!r}; available: {', '.join(registry())}")
    names = [PLAN, *stages]
    wanted = _wanted(names, columns)
    needed = [s for s in names if s in wanted or s == PLAN]
    if not partial:
        store.require_current(needed)
    shards = [k for k in range(marker.num_shards) if all(store.problem(s, k) is None for s in needed)]
    parts = []
    for shard in shards:
        ids = store.plan_ids(shard)
        arrays, fields = [pa.array(ids, pa.string())], ["clip_id"]
        for stage, cols in wanted.items():
            table = store.read_aligned(stage, shard, cols, ids)
            arrays += [table.column(c) for c in cols]
            fields += [f"{stage}.{c}" for c in cols]
        parts.append(pa.table(arrays, names=fields))
    empty = _empty(wanted)
    return pa.concat_tables([p.cast(empty.schema) for p in parts]) if parts else empty


def open_folder(root: str | os.PathLike[str], stages: Iterable[str] | None = None, columns: Iterable[str] | None = None,
                partial: bool = False, format: Format = "arrow") -> Any:
    """`read_folder` as a pyarrow Table (`format="arrow"`), a pandas DataFrame or an HF `datasets.Dataset`."""
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    table = read_folder(root, stages, columns, partial)
    if format == "pandas":
        _importable("pandas", format)
        return table.to_pandas()
    if format == "datasets":
        return _importable("datasets", format).Dataset(table)
    return table


def _importable(module: str, format: str) -> Any:
    """`module`, or a PrerequisiteError naming the pip command: no extra of the toolkit installs the readers'
    libraries (a user picks theirs)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PrerequisiteError(f"format={format!r} needs the Python package {module!r}: pip install {module}") from None
