"""Checks made before a model is built: is `--shards` an output folder, are the stage tables the
task needs committed, do the named splits exist, is there anything to train on. Each failure is
one line that names the fix (exit 2), instead of a traceback or a run that trains on nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TrainSetupError

if TYPE_CHECKING:
    import pyarrow as pa

    from kebr_data.storage.store import Store

__all__ = ["Inventory", "TrainSetupError", "check_labelled", "check_split", "check_trainable", "inventory"]


@dataclass
class Inventory:
    """What a folder offers the trainer: shards, the task read for, clips with a label, the splits present,
    candidate samples per split."""

    shards: int
    task: str = "finetune"
    labelled: int = 0  # clips with an utterance `label`, whatever their split and the target column
    splits: set[str] = field(default_factory=set)
    candidates: dict[str, int] = field(default_factory=dict)  # split ("" = all) -> clips usable by the task


def inventory(store: Store, plan: list[pa.Table] | None, task: str, label: str = "label") -> Inventory:
    """What an output folder offers `task`, from its plan's split and label columns (`plan`, one table per
    shard, as `ParquetReader.plan_labels` reads them once) and, for pre-training, the mask stage's status."""
    root = store.root
    if plan is None:
        raise TrainSetupError(f"{root} is not a kebr-data output folder (no committed plan): give the --out folder "
                              "of `kebr-data extract` (or of `kebr-train import-mmsa`)")
    shards = len(plan)
    if task == "pretrain":
        done = len(store.committed_shards("mask"))
        if done < shards:
            what = "no committed" if done == 0 else f"only {done} of {shards} shards of the"
            raise TrainSetupError(f"{root} has {what} mask/ table, which {task} needs: run "
                                  f"`kebr-data mask --out {root}` first")
    inv = Inventory(shards, task)
    for k, table in enumerate(plan):
        if label not in table.column_names:
            raise TrainSetupError(f"the plan of {root} has no {label} column (made before per-modality labels): "
                                  f"re-index with --replan, or fine-tune on `label`")
        if "label" in table.column_names:
            inv.labelled += len(table) - table.column("label").null_count
        status = store.read("mask", k, ["status"]).column("status").to_pylist() if task == "pretrain" else None
        for i, (split, y) in enumerate(zip(table.column("split").to_pylist(), table.column(label).to_pylist())):
            split = split or ""
            if split:
                inv.splits.add(split)
            if (status[i] == "ok") if status is not None else y is not None:
                inv.candidates[split] = inv.candidates.get(split, 0) + 1
    inv.candidates = {**inv.candidates, "": sum(inv.candidates.values())}
    return inv


def check_split(root: Path, inv: Inventory | None, split: str, option: str) -> None:
    """Refuse a split name the plan does not have (a typo such as `tset` would evaluate nothing); first, a
    fine-tuning task on a folder without any label (its splits are missing for that reason, not a typo)."""
    check_labelled(root, inv)
    if inv is None or not split or split in inv.splits:
        return
    have = ", ".join(sorted(inv.splits)) or "none: the plan has no split column values"
    raise TrainSetupError(f"split {split!r} ({option}) is not in {root} (splits: {have}); fix the name")


def check_labelled(root: Path, inv: Inventory | None) -> None:
    """Refuse fine-tuning on a folder whose plan has no label at all (e.g. an unlabelled VoxCeleb extraction),
    naming a command that makes a labelled folder."""
    if inv is None or inv.task != "finetune" or inv.labelled:
        return
    raise TrainSetupError(f"{root} has no labels (its plan comes from an unlabelled source): fine-tuning needs a "
                          "labelled dataset, e.g. `kebr-data extract --src demo/mmsa --out FOLDER --config "
                          "pipelines/demo_mmsa.toml` (or `kebr-train import-mmsa`)")


def check_trainable(root: Path, inv: Inventory | None, task: str, split: str) -> int | None:
    """Refuse a run with no candidate sample; return the candidate count (None when unknown)."""
    if inv is None:
        return None
    n = inv.candidates.get(split, 0)
    if n:
        return n
    where = f"split {split!r} of {root}" if split else str(root)
    if task == "pretrain":
        raise TrainSetupError(f"no clip in {where} has an ok masked transcript (mask status ok): check "
                              f"`kebr-data status --out {root}` (did ASR run? was `kebr-data mask` run?)")
    raise TrainSetupError(f"no clip in {where} has a label: fine-tuning needs labelled clips (an mmsa source's "
                          "label.csv, a manifest's label column, or `kebr-train import-mmsa`)")
