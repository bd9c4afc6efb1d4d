"""One training run, as `kebr-train pretrain|finetune` and each point-seed of a sweep do it: open the
`--shards` folder once, preflight, take the run folder's lock, start or resume, fit, test on the best
checkpoint, plots. The CLI and `kebr_model.sweeps` call `train_run`; neither imports the other."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kebr_data.storage.lock import OutputLock

from . import checkpoint
from ..config import TrainConfig
from ..data import ShardReader, open_reader
from ..data.identity import identity_changes
from ..data.preflight import check_split, check_trainable
from ..errors import TrainSetupError
from ..evaluation.analyse import mcc_blocked
from ..evaluation.plots import plot_run
from ..jsonout import write_json
from .train import Trainer

RUN_LOCK = "_lock"  # in a run folder, as in a kebr-data output folder


def _echo(line: str) -> None:
    """A line for the user on stderr (a sweep sends a run's stderr to its train.log)."""
    print(line, file=sys.stderr)


def expected_steps(cfg: TrainConfig, candidates: int | None, world: int) -> int | None:
    """The optimiser steps a run will take (the progress bar's ETA), from the preflight's candidate count."""
    if candidates is None:
        return cfg.max_steps or None
    per_epoch = math.ceil(candidates / max(1, world) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    return min(total, cfg.max_steps) if cfg.max_steps else total


def start_or_resume(trainer: Any, out: Path, resume: str) -> None:
    """Resume from OUT's newest complete checkpoint (refusing changed settings), or start clean."""

    last, passed = checkpoint.resumable(out)
    if last is not None and resume == "never":
        raise TrainSetupError(f"{out} already holds a run (checkpoint {last.name}): use a new --out, or "
                              "--resume auto to continue it")
    if last is not None:
        saved = checkpoint.read_state(last)
        changes = trainer.cfg.resume_changes(saved["config"])
        if changes:
            raise TrainSetupError(f"{out} was trained with other settings ({'; '.join(changes)}): resume needs the "
                                  "same values (drop those --set/--config changes) or use a new --out")
        other = identity_changes(saved["data"], trainer.state["data"]) if "data" in saved else []
        if other:  # runs from before the record have their widths checked as the weights load
            raise TrainSetupError(f"{out} was trained on other data than {trainer.shards} ({'; '.join(other)}): "
                                  "resume needs the --shards it was trained on, or use a new --out to start over")
        for line in passed:
            _echo(f"{line}: falling back to {last.name}, the newest complete checkpoint")
        if passed and trainer.rank == 0:  # the pointer names what was resumed, so a finished run is whole again
            checkpoint.point(out / "checkpoints", "latest", last)
        _echo(trainer.resume(last))
        return
    swept = checkpoint.sweep(out)
    metrics = out / "metrics.jsonl"
    if metrics.exists() and trainer.rank == 0:  # an earlier start that died before its first checkpoint
        metrics.unlink()
        _echo(f"no checkpoint in {out}: starting from step 0 (cleared the metrics of an earlier start"
              f"{f', swept {len(swept)} temp folder(s)' if swept else ''})")


def run_lock(out: Path, command: str, rank: int = 0) -> contextlib.AbstractContextManager:
    """The run folder's lock, held by `command` (rank 0 takes it for all ranks): a second run, eval or
    analyse on the same folder is refused before it touches a checkpoint or writes a file. The
    pipeline's lock (`OutputLock`): an flock that a crash releases."""
    if rank != 0:
        return contextlib.nullcontext()
    return OutputLock(out / RUN_LOCK, command)


def train_run(cfg: TrainConfig, shards: Path | ShardReader, out: Path, init: Path | None, resume: str,
              before_fit: Callable[[Any], None] | None = None, progress: bool = True) -> dict:
    """One run, as `kebr-train pretrain|finetune` does it: preflight, start or resume, fit, test on the
    best checkpoint, plots; returns {step, best_valid, test}, and skipped_batches when batches
    went non-finite under nan_policy = skip_batch. `before_fit(trainer)` sees the built
    model before training (a sweep counts its parameters and FLOPs there). The --shards folder is
    opened once (`open_reader`) and that reader serves the preflight, the trainer and the plots."""
    data = open_reader(shards)
    shards = data.root
    inv = data.inventory(cfg.task, cfg.label)
    splits = {"train_split": cfg.train_split, "valid_split": cfg.valid_split}
    if cfg.task == "finetune":
        splits["test_split"] = cfg.test_split
    for option, split in splits.items():
        check_split(shards, inv, split, option)
    candidates = check_trainable(shards, inv, cfg.task, cfg.train_split)
    if cfg.valid_split:
        check_trainable(shards, inv, cfg.task, cfg.valid_split)
    rank = int(os.environ.get("RANK", 0))  # DDP: rank 0 holds the lock and owns the folder
    new_folder = rank == 0 and not out.exists()
    with run_lock(out, f"kebr-train {cfg.task} --out {out}", rank):
        try:
            trainer = Trainer(cfg, data, out, init_checkpoint(init), progress=progress)
        except BaseException:
            # refused before any step: leave no new folder behind (it holds only the lock and table verdicts)
            if new_folder:
                shutil.rmtree(out, ignore_errors=True)
            raise
        if rank == 0 and (blocked := mcc_blocked(cfg, data.frame_modalities(cfg.used), shards)):
            _echo(f"warning: {blocked}")  # once, as training starts: the mcc_* settings would change nothing
        trainer.expected_steps = expected_steps(cfg, candidates, trainer.world)
        start_or_resume(trainer, out, resume)
        if before_fit is not None:
            before_fit(trainer)
        state = trainer.fit()
        result = {"step": state["step"], "best_valid": state["best_valid"]}
        if state["skipped_batches"]:  # nan_policy = skip_batch
            result["skipped_batches"] = state["skipped_batches"]
        if cfg.task == "finetune" and cfg.test_split:
            best = checkpoint.best(out)
            if best is not None:
                checkpoint.load(best, trainer.model, restore_rng=False)
            result["test"] = trainer.evaluate(cfg.test_split)
            write_json(out / "test_metrics.json", result["test"], out)
        if trainer.rank == 0 and (out / "metrics.jsonl").exists():
            plot_run(out, data.frame_modalities())
    return result


def split_defaults(cfg: TrainConfig) -> None:
    """Fine-tuning trains on `train` and selects on `valid` unless told otherwise: never on every clip,
    test included."""
    if cfg.task == "finetune":
        cfg.train_split, cfg.valid_split = cfg.train_split or "train", cfg.valid_split or "valid"


def init_checkpoint(init: Path | None) -> Path | None:
    """A run folder's latest checkpoint, or a checkpoint folder itself."""
    if init is None:
        return None

    found = checkpoint.pointed(init, "latest") if init.is_dir() else None
    if found is None and not (init / "model.pt").is_file():
        raise TrainSetupError(f"--init {init} is neither a run folder with checkpoints nor a checkpoint folder "
                              "(with model.pt): give e.g. runs/pretrain")
    return found or init


