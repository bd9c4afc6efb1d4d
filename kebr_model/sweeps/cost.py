"""A sweep point's cost: parameters (all, trainable) and forward FLOPs per clip of its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..jsonout import read_owned_json, write_json
from .grid import Point, Sweep

COST = "model_cost.json"


def trainer_cost(trainer: Any) -> dict[str, Any]:
    """Parameters (all, trainable) and forward FLOPs per clip of a trainer's model, counted with
    torch.utils.flop_counter on the first batch of the test split (finetune) or the training split,
    at the lengths the loader pads that batch to. Leaves the model's mode and the RNGs as they were."""
    import torch

    from ..fusions import count_flops, count_params

    cfg = trainer.cfg
    split = cfg.test_split if cfg.task == "finetune" else cfg.train_split
    batch = next(iter(trainer.batches(split, 0, shuffle=False)))
    mode = trainer.model.training
    with torch.random.fork_rng(devices=[]):
        trainer.model.eval()
        flops = count_flops(trainer.model, (trainer._to_device(batch), cfg.task))
    trainer.model.train(mode)
    clips = len(batch["label"])
    return {"params": count_params(trainer.model), "trainable_params": count_params(trainer.model, True),
            "flops_per_clip": flops // clips, "flops_batch_clips": clips}


def model_cost(cfg: TrainConfig, shards: Path) -> dict[str, Any]:
    """trainer_cost of the model a run with `cfg` builds (for points whose runs all finished before)."""
    import tempfile

    from ..training.run import split_defaults
    from ..training.train import Trainer

    split_defaults(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        return trainer_cost(Trainer(cfg, shards, Path(tmp)))


def point_cost(sweep: Sweep, point: Point, shards: Path, point_dir: Path) -> dict[str, Any]:
    """A point's parameter and FLOP counts: its cached model_cost.json, else counted on its model now."""
    cached = point_dir / COST
    if (known := read_owned_json(cached)) is not None:
        return known
    cost = model_cost(sweep.config(point), shards)
    write_json(cached, cost, point_dir)
    return cost
