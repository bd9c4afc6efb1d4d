"""What a run trains on, recorded in its checkpoints (state.json `data`) so that a resume on other data
is refused: the plan's content (every plan shard's sha256: clips, splits, labels), the configuration
hashes and the committed sha256s of the stage tables it reads (tables are deterministic, so a rerun
of a stage with the same settings keeps them), and its modalities' frame widths. An HDF5 export has no plan
marker: its shard files' sizes, sha256s and the table hashes its export recorded (`_done/`) stand in.
Its `source` (`shards_record`: the folder, its run.json settings and each stage's config hashes) is not
compared on resume: `kebr-train predict` makes new clips' features with those settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kebr_data.config import content_hash
from kebr_data.storage.store import Store

from .data import hdf5_export


def _hdf5_content(root: Path) -> str:
    """A hash of an HDF5 export: each shard file's size, and the sources and file sha256 its export marker
    lists (the trainer has checked each file against that sha256)."""
    from kebr_data.export.base import read_done

    files = sorted(root.glob("shard-*.h5"))
    done = {p.stem: read_done(root, p.stem) or {} for p in files}
    return content_hash({"files": {p.name: p.stat().st_size for p in files},
                         "sources": {k: {f: d.get(f) for f in ("sources", "sha256")} for k, d in done.items()}})


def shards_record(root: Path) -> dict[str, Any]:
    """How the shards in `root` were made, for `kebr-train predict`: the folder, the plan hash, the metric
    set its labels call for, the configuration and pinned tools its run.json saved, and the config hashes
    of every stage's committed shards (an HDF5 export: the folder alone)."""
    from kebr_data.pipeline import run_record
    from kebr_data.storage.layout import OutputDir

    from .metrics import metric_set

    if hdf5_export(root):
        return {"path": str(root.resolve())}
    store, saved = Store(root), run_record.read(OutputDir(root))
    return {"path": str(root.resolve()), "plan_hash": store.plan.plan_hash, "metric_set": metric_set("auto", root),
            "config": saved.get("config"), "tools": saved.get("tools", {}),
            "config_hashes": {s: sorted(store.config_hashes(s)) for s in store.stages()}}


def data_identity(root: Path, stages: list[str], widths: dict[str, int]) -> dict[str, Any]:
    """The identity of the data in `root` that a run reads: `stages` (the stage tables it reads) and
    `widths` (frame width per modality), with the `source` it was made from (not compared on resume)."""
    if hdf5_export(root):
        return {"plan": _hdf5_content(root), "stages": {}, "widths": dict(widths), "source": shards_record(root)}
    store = Store(root)
    plan = content_hash({shard: entry["sha256"] for shard, entry in store.plan.shards.items()})
    shards = range(store.plan.num_shards)
    found = {s: {"settings": sorted(store.config_hashes(s)),
                 "tables": content_hash([store.committed_hash(s, k) for k in shards])} for s in stages}
    return {"plan": plan, "stages": found, "widths": dict(widths), "source": shards_record(root)}


def _stage_change(stage: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> str | None:
    if before == after:
        return None
    if before is None or after is None:
        return f"{stage} tables {'added' if before is None else 'gone'}"
    if before.get("settings") != after.get("settings"):
        return f"{stage} tables made with other settings"
    return f"{stage} tables hold other values"


def identity_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the data a run was trained on (`saved`) and the data given now, one item each."""
    changes = []
    if saved.get("plan") != now["plan"]:
        changes.append("another plan (other clips, splits or labels)")
    before, after = saved.get("stages", {}), now["stages"]
    changes += [why for stage in sorted(set(before) | set(after))
                if (why := _stage_change(stage, before.get(stage), after.get(stage)))]
    widths = saved.get("widths", {})
    changes += [f"{m} width {widths.get(m)} -> {now['widths'].get(m)}"
                for m in sorted(set(widths) | set(now["widths"])) if widths.get(m) != now["widths"].get(m)]
    return changes
