"""The one commit sequence of a (stage, shard): the table atomically, then its done marker.

Used by the worker (`pipeline.shard_task`) and by everything that writes stage tables without
running a stage (the MMSA importer, test fixtures). The order is what makes a crash at any moment
safe: without its marker a shard is simply recomputed.
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import time
from typing import Any

import pyarrow as pa

from .. import __version__
from ..schema import rows_to_batch, with_metadata
from .layout import PLAN_FORMAT, OutputDir
from .markers import Marker, PlanMarker
from .parquet import write_table


def histogram(table: pa.Table) -> dict[str, int]:
    """`status/error` -> count over the rows that are not ok."""
    counts = collections.Counter(
        f"{s}/{e}" for s, e in zip(table.column("status").to_pylist(), table.column("error").to_pylist(), strict=True)
        if s != "ok")
    return dict(sorted(counts.items()))


def commit_table(out: OutputDir, stage: str, shard: int, table: pa.Table, *, config_hash: str, stage_version: str,
                 versions: dict[str, str], upstream: dict[str, str], wall_s: float = 0.0,
                 stats: dict[str, Any] | None = None) -> Marker:
    """Write the table of (stage, shard), then its marker; return the marker."""
    size, digest = write_table(out.table(stage, shard), table, out.root)
    statuses = collections.Counter(table.column("status").to_pylist())
    marker = Marker(stage=stage, shard=shard, rows=table.num_rows, ok=statuses["ok"], failed=statuses["failed"],
                    skipped=statuses["skipped"], errors=histogram(table), wall_s=round(wall_s, 3),
                    config_hash=config_hash, stage_version=stage_version,
                    versions={"kebr-toolkit": __version__, "python": sys.version.split()[0],
                              "pyarrow": pa.__version__, **versions},
                    upstream=upstream, output_bytes=size, output_sha256=digest,
                    finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), host=socket.gethostname(), pid=os.getpid(),
                    stats=stats or {})
    marker.write(out.marker(stage, shard), out.root)
    return marker


def commit_rows(out: OutputDir, stage: str, shard: int, rows: list[dict[str, Any]], schema: pa.Schema,
                made_by: str, plan_sha: str | None = None) -> dict[str, Any]:
    """Commit one (stage, shard) table built from rows by `made_by` (an importer); plan shards get no marker
    of their own (the plan marker, written last by `commit_plan_marker`, lists them)."""
    table = pa.Table.from_batches([rows_to_batch(rows, with_metadata(schema, stage))])
    if stage == "plan":
        size, sha = write_table(out.table(stage, shard), table, out.root)
        return {"rows": len(rows), "bytes": size, "sha256": sha}
    m = commit_table(out, stage, shard, table, config_hash=made_by, stage_version="1", versions={},
                     upstream={"plan": plan_sha} if plan_sha else {})
    return {"rows": m.rows, "bytes": m.output_bytes, "sha256": m.output_sha256}


def commit_plan_marker(out: OutputDir, shards: dict[str, dict[str, Any]], source: str, shard_size: int) -> None:
    """The plan's marker, written after every plan shard it lists."""
    PlanMarker(src=source, layout=source, requested_layout=source, shard_size=shard_size,
               clips=sum(s["rows"] for s in shards.values()), num_shards=len(shards),
               shards=shards, plan_format=PLAN_FORMAT).write(out.plan_marker, out.root)
