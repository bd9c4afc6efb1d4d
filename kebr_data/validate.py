"""`kebr-data validate`: re-read every committed shard and check it against its marker and the plan.

Checks per (stage, shard): the table exists, its size and sha256 equal the marker's, it parses,
its schema is the one its stage declares, its rows are the plan shard's clips in plan order, its
status counts equal the marker's, its labels and frame features are finite (what the trainer reads:
a NaN or infinity there makes every loss NaN), and the upstream tables it was made from are still
the current ones; per stage, that all shards were made with one configuration and one build of each
external program (ffmpeg, OpenFace: `Stage.tool_names`). Missing shards are reported too.
Every stage in the registry is checked, so a new stage is validated without touching this file.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import PLAN, any_width, frame_columns, same_columns
from .stages import registry
from .storage.store import Store, force_command


@dataclass
class Problem:
    stage: str
    shard: int
    what: str


def _schemas() -> dict[str, pa.Schema]:
    return {"plan": PLAN, **{name: cls.schema for name, cls in registry().items()}}


def validate(root: Path) -> tuple[int, list[Problem]]:
    """(shards checked, problems found) for every stage with outputs in `root`."""
    store = Store(root)
    marker = store.plan
    problems: list[Problem] = []
    checked = 0
    plan_ids = {}
    for shard in range(marker.num_shards):
        if store.problem("plan", shard, verify=True):
            problems.append(Problem("plan", shard, "plan table missing or not the one the plan marker describes"))
            continue
        plan_ids[shard] = store.plan_ids(shard)
        problems += [Problem("plan", shard, w) for w in nonfinite(store.read("plan", shard))]
        checked += 1
    schemas = _schemas()
    if marker.layout == "mmsa-pickle":  # imported features keep the pickle's widths (MOSI 5/20, MOSEI 74/35, ...)
        schemas = {name: any_width(schema) for name, schema in schemas.items()}
    present = set(store.stages())
    for stage in (s for s in schemas if s in present):
        for shard in range(marker.num_shards):
            checked += 1
            problems += [Problem(stage, shard, w) for w in _check(store, schemas[stage], stage, shard,
                                                                   plan_ids.get(shard))]
        hashes = store.config_hashes(stage)
        if len(hashes) > 1:
            detail = ", ".join(f"{n} shard(s) with {h}" for h, n in hashes.most_common())
            problems.append(Problem(stage, -1, f"shards were made with different settings ({detail}): rerun the "
                                               f"stage with the settings you want: {force_command(root, stage)}"))
        problems += _mixed_tools(store, stage)
    unknown = present - set(schemas)
    problems += [Problem(s, -1, "no registered stage of this name (a plugin not installed?)") for s in sorted(unknown)]
    return checked, problems


def _mixed_tools(store: Store, stage: str) -> list[Problem]:
    """A problem per external program (ffmpeg, OpenFace) whose shards of `stage` were made by several builds."""
    cls = registry().get(stage)
    found = []
    for tool in cls.tool_names if cls is not None else ():
        key = f"{tool}_sha256"
        builds = collections.Counter(m.versions[key] for shard in range(store.plan.num_shards)
                                     if (m := store.marker(stage, shard)) is not None and key in m.versions)
        if len(builds) > 1:
            detail = ", ".join(f"{n} shard(s) with sha256 {h}" for h, n in builds.most_common())
            found.append(Problem(stage, -1, f"shards were made by different {tool} builds ({detail}): recompute the "
                                            f"stage with one (kebr-data extract --out {store.root} --force --stages "
                                            f"{stage})"))
    return found


def _check(store: Store, want: pa.Schema, stage: str, shard: int, ids: list[str] | None) -> list[str]:
    m = store.marker(stage, shard)
    if m is None:
        corrupt = store.corrupt(stage, shard)
        return [f"corrupt marker: {corrupt}" if corrupt else "not done (no marker)"]
    problem = store.problem(stage, shard, verify=True)
    if problem and not problem.startswith("stale"):
        return [problem]
    try:
        table = store.read(stage, shard)
    except Exception as exc:  # pyarrow raises several types for damaged files
        return [f"unreadable table: {exc}"]
    found = []
    if not same_columns(table.schema, want):
        found.append(f"schema differs from the {stage} stage's declared schema")
    if ids is not None and table.column("clip_id").to_pylist() != ids:
        found.append("rows are not the plan shard's clips in plan order")
    counts = collections.Counter(table.column("status").to_pylist())
    if (table.num_rows, counts["ok"], counts["failed"], counts["skipped"]) != (m.rows, m.ok, m.failed, m.skipped):
        found.append("status counts differ from the marker")
    found += nonfinite(table)
    if problem:
        found.append(problem)
    return found


#: clips named per non-finite column (the rest are counted)
LISTED = 10


def _nonfinite_rows(column: pa.ChunkedArray) -> np.ndarray:
    """Indices of the rows of a float column, or of a (nested) list of floats, holding NaN or infinity."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    parents: list[np.ndarray] = []
    while pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type):
        parents.append(pc.list_parent_indices(array).to_numpy())
        array = pc.list_flatten(array)
    values = array.fill_null(0).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(~np.isfinite(values))
    for parent in reversed(parents):
        rows = parent[rows]
    return np.unique(rows)


def nonfinite(table: pa.Table) -> list[str]:
    """One problem per label (`label*`) or frame-feature column holding NaN or infinity, naming the first clips."""
    columns = [f.name for f in table.schema if f.name.startswith("label") and pa.types.is_floating(f.type)]
    found = []
    for name in [*columns, *frame_columns(table.schema)]:
        rows = _nonfinite_rows(table.column(name))
        if len(rows):
            ids = table.column("clip_id").take(pa.array(rows[:LISTED])).to_pylist()
            found.append(f"{name} holds NaN or infinity in {len(rows)} clip(s) ({', '.join(map(repr, ids))}"
                         f"{', ...' if len(rows) > LISTED else ''}): the trainer would learn NaN; fix the source of "
                         "these clips and recompute")
    return found
