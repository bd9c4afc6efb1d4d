"""Committing stage tables that no stage run produced (MMSA imports, test fixtures) through the same
commit points as the engine: each table atomically, then its marker, and the plan's marker last."""

from __future__ import annotations

import collections
import time
from typing import Any

import pyarrow as pa

from ..arrow_rows import rows_to_batch
from ..schema import with_metadata
from .atomic import atomic_write_json
from .layout import PLAN_FORMAT, OutputDir
from .markers import Marker
from .parquet import write_table


def commit_rows(out: OutputDir, stage: str, shard: int, rows: list[dict[str, Any]], schema: pa.Schema,
                made_by: str, plan_sha: str | None = None) -> dict[str, Any]:
    """Write one (stage, shard) table from rows; non-plan stages get a marker naming `made_by`."""
    table = pa.Table.from_batches([rows_to_batch(rows, with_metadata(schema, stage))])
    size, sha = write_table(out.table(stage, shard), table)
    if stage != "plan":
        counts = collections.Counter(r["status"] for r in rows)
        Marker(stage, shard, len(rows), counts["ok"], counts["failed"], counts["skipped"], {}, 0.0, made_by, "1",
               {}, {"plan": plan_sha} if plan_sha else {}, size, sha,
               time.strftime("%Y-%m-%dT%H:%M:%S%z")).write(out.marker(stage, shard))
    return {"rows": len(rows), "bytes": size, "sha256": sha}


def commit_plan_marker(out: OutputDir, shards: dict[str, dict[str, Any]], source: str, shard_size: int) -> None:
    """The plan's marker, written after every plan shard it lists."""
    atomic_write_json(out.plan_marker, {
        "num_shards": len(shards), "shards": shards, "clips": sum(s["rows"] for s in shards.values()),
        "src": source, "layout": source, "requested_layout": source, "shard_size": shard_size,
        "identity_hash": "", "rejected": 0, "rejected_examples": [], "plan_format": PLAN_FORMAT})
