"""The index stage: scan a source once, sort clips by clip_id, cut fixed-size shards, freeze them.

The plan is committed shard by shard and then by `_done/plan.json` (its marker). Every later
stage reads it and never re-derives it; a different source or shard size needs `--replan`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import __version__, sources
from ..config import IndexSettings
from ..errors import PlanError, PlanMismatch
from ..schema import PLAN, with_metadata
from ..settings import content_hash, typed
from ..storage.layout import PLAN_FORMAT, OutputDir
from ..storage.markers import PlanMarker
from ..storage.parquet import write_table

PLAN_STAGE = "plan"
MAX_REJECTED_LISTED = 1000


def plan_identity(src: Path, layout: str, shard_size: int) -> dict[str, Any]:
    """What determines the plan: the resolved source path and the index settings."""
    return {"src": str(src.resolve()), "layout": layout, "shard_size": shard_size}


def _table(clips: list[sources.Clip]) -> pa.Table:
    rows = [{**asdict(c), "status": "ok", "error": None, "message": None} for c in clips]
    return pa.Table.from_pylist(rows, schema=with_metadata(PLAN, PLAN_STAGE))


def build_plan(out: OutputDir, src: Path, index: IndexSettings | dict[str, Any]) -> PlanMarker:
    """Scan `src` with the `[index]` settings (typed here), write `plan/shard-*.parquet` and commit
    `plan/_plan.json`; return the marker."""
    index = typed(IndexSettings, index)
    shard_size = index.shard_size
    t0 = time.monotonic()
    layout, result = sources.scan(src, index.layout)
    if not result.clips:
        detail = f"; {len(result.rejected)} entries rejected, e.g. {result.rejected[0]}" if result.rejected else ""
        raise PlanError(f"no clips found in {src} (layout {layout}){detail}")
    shards = {}
    for i in range(0, len(result.clips), shard_size):
        n = i // shard_size
        size, digest = write_table(out.table(PLAN_STAGE, n), _table(result.clips[i:i + shard_size]),
                                   out.root)
        shards[f"{n:05d}"] = {"rows": min(shard_size, len(result.clips) - i), "bytes": size, "sha256": digest}
    out.drop_shards_from(len(shards))  # a previous, larger plan's tail must not look like part of this one
    marker = PlanMarker(
        **plan_identity(src, layout, shard_size),
        requested_layout=index.layout,
        identity_hash=content_hash(plan_identity(src, index.layout, shard_size)),
        clips=len(result.clips),
        num_shards=len(shards),
        shards=shards,
        plan_hash=content_hash(shards),
        rejected=len(result.rejected),
        rejected_examples=[{"entry": e, "reason": r} for e, r in result.rejected[:MAX_REJECTED_LISTED]],
        wall_s=round(time.monotonic() - t0, 3),
        toolkit_version=__version__,
        plan_format=PLAN_FORMAT,
    )
    marker.write(out.plan_marker, out.root)
    return marker


def build_subplan(out: OutputDir, parent: PlanMarker, shards: list[pa.Table], limit: int) -> PlanMarker:
    """Commit the first `limit` clips of a parent plan (its shard tables `shards`, in order) as the plan of
    `out`, cut into the parent's shard size (`extract --limit`); the same clips give the same bytes."""
    table = pa.concat_tables(shards).slice(0, limit)
    size = parent.shard_size
    written = {}
    for i in range(0, table.num_rows, size):
        n = i // size
        nbytes, digest = write_table(out.table(PLAN_STAGE, n), table.slice(i, size), out.root)
        written[f"{n:05d}"] = {"rows": min(size, table.num_rows - i), "bytes": nbytes, "sha256": digest}
    out.drop_shards_from(len(written))
    marker = PlanMarker(src=parent.src, layout=parent.layout, shard_size=size, clips=table.num_rows,
                        num_shards=len(written), shards=written, requested_layout=parent.requested_layout,
                        identity_hash=parent.identity_hash, plan_hash=content_hash(written),
                        toolkit_version=__version__, plan_format=parent.plan_format, extra={"limit": limit})
    marker.write(out.plan_marker, out.root)
    return marker


def check_plan(marker: PlanMarker, src: Path | None, index: IndexSettings | dict[str, Any]) -> None:
    """Refuse a run whose source or index settings (`[index]`, typed here) differ from the frozen plan, or
    whose plan was made by an older toolkit (its paths may be relative to another working directory)."""
    index = typed(IndexSettings, index)
    if marker.plan_format != PLAN_FORMAT:
        raise PlanMismatch(
            f"this output folder's plan was made by an older kebr-data (its media paths may be relative to the "
            f"directory it ran in, and it lacks media sizes): rerun with --replan (and --src {marker.src}) "
            "to re-index; shards whose clips change are recomputed")
    if src is not None and content_hash(plan_identity(src, index.layout, index.shard_size)) != marker.identity_hash:
        raise PlanMismatch(
            f"this output folder's plan was made from {marker.src} (layout {marker.requested_layout}, "
            f"shard_size {marker.shard_size}), but this run asks for {src.resolve()} (layout "
            f"{index.layout}, shard_size {index.shard_size}). Use --replan to re-plan "
            "(shards whose clips change are recomputed), or another --out folder.")
