"""`kebr-data validate`: re-read every committed shard and check it against its marker and the plan.

Checks per (stage, shard): the table exists, its size and sha256 equal the marker's, it parses,
its schema is the stage's (DESIGN §4), its rows are the plan shard's clips in plan order, its
status counts equal the marker's, and the upstream tables it was made from are still the current
ones. Missing shards are reported too.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from . import plan as plan_mod
from .errors import PlanError
from .schema import ACOUSTIC, ASR, AUDIO, MASK, PLAN, VISUAL
from .storage.atomic import file_digest
from .storage.layout import OutputDir
from .storage.markers import CorruptMarker, read_marker

SCHEMAS = {"plan": PLAN, "audio": AUDIO, "asr": ASR, "mask": MASK, "acoustic": ACOUSTIC, "visual": VISUAL}


@dataclass
class Problem:
    stage: str
    shard: int
    what: str


def validate(root: Path) -> tuple[int, list[Problem]]:
    """(shards checked, problems found) for every stage folder in `root`."""
    out = OutputDir(root)
    marker = plan_mod.read_plan_marker(out)
    if marker is None:
        raise PlanError(f"{root} holds no committed plan (is it a kebr-data output folder?)")
    problems: list[Problem] = []
    checked = 0
    plan_ids = {}
    for shard in range(marker["num_shards"]):
        path = out.table("plan", shard)
        want = marker["shards"][f"{shard:05d}"]
        if not path.exists() or file_digest(path) != (want["bytes"], want["sha256"]):
            problems.append(Problem("plan", shard, "plan table missing or not the one the plan marker describes"))
            continue
        plan_ids[shard] = pq.read_table(path, columns=["clip_id"]).column(0).to_pylist()
        checked += 1
    stages = [s for s in SCHEMAS if s != "plan" and (root / s).is_dir()]
    for stage in stages:
        for shard in range(marker["num_shards"]):
            checked += 1
            problems += [Problem(stage, shard, w) for w in _check(out, marker, stage, shard, plan_ids.get(shard))]
    return checked, problems


def _check(out: OutputDir, plan_marker: dict, stage: str, shard: int, ids: list[str] | None) -> list[str]:
    try:
        m = read_marker(out.marker(stage, shard))
    except CorruptMarker as exc:
        return [f"corrupt marker: {exc}"]
    if m is None:
        return ["not done (no marker)"]
    path = out.table(stage, shard)
    if not path.exists():
        return ["marker without table"]
    size, digest = file_digest(path)
    if (size, digest) != (m.output_bytes, m.output_sha256):
        return [f"table differs from its marker (size {size} vs {m.output_bytes}, sha256 mismatch)"]
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        return [f"unreadable table: {exc}"]
    found = []
    want = SCHEMAS[stage]
    if [(f.name, f.type) for f in table.schema] != [(f.name, f.type) for f in want]:
        found.append("schema differs from DESIGN §4")
    if ids is not None and table.column("clip_id").to_pylist() != ids:
        found.append("rows are not the plan shard's clips in plan order")
    counts = collections.Counter(table.column("status").to_pylist())
    if (table.num_rows, counts["ok"], counts["failed"], counts["skipped"]) != (m.rows, m.ok, m.failed, m.skipped):
        found.append("status counts differ from the marker")
    for up, recorded in m.upstream.items():
        if plan_mod.current_hash(out, plan_marker, up, shard) != recorded:
            found.append(f"stale: made from another {up} table than the current one")
    return found
