"""The index stage: scan a source once, sort clips by clip_id, cut fixed-size shards, freeze them.

The plan is committed shard by shard and then by `plan/_plan.json` (its marker). Every later
stage reads it and never re-derives it; a different source or shard size needs `--replan`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import __version__, sources
from .config import content_hash
from .errors import PlanError
from .schema import PLAN, with_metadata
from .storage.atomic import atomic_write_json
from .storage.layout import OutputDir
from .storage.markers import CorruptMarker, read_marker
from .storage.parquet import read_table, write_table

PLAN_STAGE = "plan"
MAX_REJECTED_LISTED = 1000


def plan_identity(src: Path, index_cfg: dict[str, Any]) -> dict[str, Any]:
    """What determines the plan: the resolved source path and the index settings."""
    return {"src": str(src.resolve()), "layout": index_cfg["layout"], "shard_size": index_cfg["shard_size"]}


def read_plan_marker(out: OutputDir) -> dict[str, Any] | None:
    """The frozen plan's marker, or None when no plan is committed."""
    try:
        return json.loads(out.plan_marker.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def _table(clips: list[sources.Clip]) -> pa.Table:
    rows = [{**asdict(c), "status": "ok", "error": None, "message": None} for c in clips]
    return pa.Table.from_pylist(rows, schema=with_metadata(PLAN, PLAN_STAGE))


def build_plan(out: OutputDir, src: Path, index_cfg: dict[str, Any]) -> dict[str, Any]:
    """Scan `src`, write `plan/shard-*.parquet` and commit `plan/_plan.json`; return the marker."""
    shard_size = int(index_cfg["shard_size"])
    if shard_size < 1:
        raise PlanError(f"index.shard_size must be at least 1, got {shard_size}")
    t0 = time.monotonic()
    layout, result = sources.scan(src, index_cfg["layout"])
    if not result.clips:
        detail = f"; {len(result.rejected)} entries rejected, e.g. {result.rejected[0]}" if result.rejected else ""
        raise PlanError(f"no clips found in {src} (layout {layout}){detail}")
    shards = {}
    for i in range(0, len(result.clips), shard_size):
        n = i // shard_size
        size, digest = write_table(out.table(PLAN_STAGE, n), _table(result.clips[i:i + shard_size]))
        shards[f"{n:05d}"] = {"rows": min(shard_size, len(result.clips) - i), "bytes": size, "sha256": digest}
    out.drop_shards_from(len(shards))  # a previous, larger plan's tail must not look like part of this one
    identity = plan_identity(src, {**index_cfg, "layout": layout})
    marker = {
        **identity,
        "requested_layout": index_cfg["layout"],
        "identity_hash": content_hash(plan_identity(src, index_cfg)),
        "clips": len(result.clips),
        "num_shards": len(shards),
        "shards": shards,
        "plan_hash": content_hash(shards),
        "rejected": len(result.rejected),
        "rejected_examples": [{"entry": e, "reason": r} for e, r in result.rejected[:MAX_REJECTED_LISTED]],
        "wall_s": round(time.monotonic() - t0, 3),
        "toolkit_version": __version__,
    }
    atomic_write_json(out.plan_marker, marker)
    return marker


def check_plan(marker: dict[str, Any], src: Path | None, index_cfg: dict[str, Any]) -> None:
    """Refuse a run whose source or index settings differ from the frozen plan."""
    wanted = marker["identity_hash"] if src is None else content_hash(plan_identity(src, index_cfg))
    if src is not None and wanted != marker["identity_hash"]:
        raise PlanError(
            f"this output folder's plan was made from {marker['src']} (layout {marker['requested_layout']}, "
            f"shard_size {marker['shard_size']}), but this run asks for {src.resolve()} (layout "
            f"{index_cfg['layout']}, shard_size {index_cfg['shard_size']}). Use --replan to re-plan "
            "(shards whose clips change are recomputed), or another --out folder.")


def load_shard(out: OutputDir, shard: int) -> pa.Table:
    """The plan rows of one shard."""
    return read_table(out.table(PLAN_STAGE, shard))


def has_given_text(out: OutputDir, marker: dict[str, Any]) -> bool:
    """Whether any clip of the plan has a given transcript (what `mask` reads when ASR has not run)."""
    for shard in range(marker["num_shards"]):
        texts = read_table(out.table(PLAN_STAGE, shard), columns=["given_text"]).column("given_text").to_pylist()
        if any(t and t.strip() for t in texts):
            return True
    return False


def shard_hash(marker: dict[str, Any], shard: int) -> str:
    """The committed plan shard's sha256, the `upstream` hash recorded by stages that read it."""
    return marker["shards"][f"{shard:05d}"]["sha256"]


def current_hash(out: OutputDir, marker: dict[str, Any], stage: str, shard: int) -> str | None:
    """The sha256 of the table of (stage, shard) as committed now: what a downstream marker must
    have recorded to be current. None when that table is not committed (or its marker is corrupt)."""
    if stage == PLAN_STAGE:
        return shard_hash(marker, shard)
    try:
        m = read_marker(out.marker(stage, shard))
    except CorruptMarker:
        return None
    return m.output_sha256 if m else None
