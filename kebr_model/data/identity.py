"""What a run trains on, recorded in its checkpoints (state.json `data`) so that a resume on other data
is refused: the plan's content (every plan shard's sha256: clips, splits, labels), the configuration
hashes and the committed sha256s of the stage tables it reads (tables are deterministic, so a rerun
of a stage with the same settings keeps them), and its modalities' frame widths. An HDF5 export has no plan
marker: its shard files' sizes, sha256s and the table hashes its export recorded (`_done/`) stand in.
Each reader makes the record (`ShardReader.identity`); this module compares two. The record's `source`
(`ShardReader.source`: the folder, its run.json settings and each stage's config hashes) is not compared on
resume: `kebr-train predict` makes new clips' features with those settings."""

from __future__ import annotations

from typing import Any


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
