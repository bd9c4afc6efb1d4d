"""One point-seed of a sweep: its run (or its result when it finished before) in OUT/<point>/seed-N/,
its stderr in train.log, its result in sweep_result.json."""

from __future__ import annotations

import contextlib
import json
import statistics
import traceback
from pathlib import Path
from typing import Any

from kebr_data.errors import KebrError
from kebr_data.storage.atomic import open_append_text, read_owned_text

from ..training import run
from ..jsonout import dumps, read_owned_json, write_json
from .cost import trainer_cost
from .grid import Point, Sweep

RESULT = "sweep_result.json"  # a point-seed's final metrics: its presence means "finished, not rerun"


def run_point(sweep: Sweep, point: Point, seed: int, shards: Path, run_dir: Path,
              cost: Path | None = None) -> tuple[dict | None, str]:
    """Run (or resume) one point-seed in this process, as `kebr-train` would (its stderr in
    run_dir/train.log); its result (step, best_valid, test metrics) goes to run_dir/sweep_result.json.
    With `cost`, the model's parameter and FLOP counts are written there before it trains. A failed
    run is reported, not raised. Returns (result or None, what happened)."""
    done = run_dir / RESULT
    if (finished := read_owned_json(done)) is not None:
        return finished, "finished before, skipped"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_append_text(run_dir / "train.log", run_dir) as log, contextlib.redirect_stderr(log):

        def count(trainer: Any) -> None:  # a failed count is logged; the run still trains
            try:
                write_json(cost, trainer_cost(trainer), cost.parent)
            except Exception:  # noqa: BLE001 - costs are a side table, never the run's failure
                print("parameter and FLOP count failed (the run goes on):", file=log)
                traceback.print_exc(file=log)

        try:
            cfg = sweep.config(point, seed)
            run.split_defaults(cfg)
            result = run.train_run(cfg, shards, run_dir, sweep.init, "auto", before_fit=count if cost else None,
                               progress=False)
        except Exception as exc:  # noqa: BLE001 - this run's failure, whatever it is; the sweep goes on
            if not isinstance(exc, KebrError):
                traceback.print_exc(file=log)
            print(f"error: {exc}", file=log)
            return None, f"failed ({type(exc).__name__}: {exc}; {run_dir / 'train.log'})"
    result = json.loads(dumps(result))  # as the command prints it: strict JSON (no infinity)
    train_loss = last_epoch_loss(run_dir / "metrics.jsonl")
    if train_loss is not None:
        result["train_loss"] = train_loss
    write_json(done, result, run_dir)
    return result, "done"


def last_epoch_loss(metrics: Path) -> float | None:
    """Mean training loss over the last epoch's steps in a run's metrics.jsonl (what a pre-training
    sweep without a validation split reports)."""
    text = read_owned_text(metrics)
    if text is None:
        return None
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train" and isinstance(r.get("loss"), (int, float))]
    if not train:
        return None
    last = [r["loss"] for r in train if r.get("epoch") == train[-1].get("epoch")]
    return statistics.mean(last)
