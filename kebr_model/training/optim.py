"""Optimiser and learning-rate schedule of a run: parameter groups (encoders, audio input maps,
visual input maps, the rest) with their own learning rates; Adam, AdamW or SGD; an optional linear
warm-up over steps times a cosine annealing over epochs (the release: CosineAnnealingLR, T_max 20,
aoqzhu/KEBR main.py:91)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Trainable parameters by learning rate: `encoder.*` (the text encoder) and `audio_encoder.*` (an in-graph
    audio encoder) at lr_encoder, a modality's input maps (`fusion.*.modal.<m>.*`) at lr_audio / lr_visual
    (-1 = the fusion's rate), the rest of the fusion (`fusion.*`) at lr_fusion (-1 = lr_other, and no group
    of its own), everything else at lr_other."""
    lr_fusion = cfg.lr_fusion
    fusion = lr_fusion if lr_fusion >= 0 else cfg.lr_other
    lrs = {"encoder": cfg.lr_encoder, "audio": cfg.lr_audio if cfg.lr_audio >= 0 else fusion,
           "visual": cfg.lr_visual if cfg.lr_visual >= 0 else fusion, "fusion": fusion, "other": cfg.lr_other}
    groups: dict[str, list[nn.Parameter]] = {k: [] for k in lrs}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(("encoder.", "audio_encoder.")):
            key = "encoder"
        else:
            key = next((m for m in ("audio", "visual") if f".modal.{m}." in name), "other")
            if key == "other" and lr_fusion >= 0 and name.startswith("fusion."):
                key = "fusion"
        groups[key].append(p)
    return [{"params": ps, "lr": lrs[k], "name": k} for k, ps in groups.items() if ps]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the paper), AdamW or plain SGD over `param_groups`."""
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)


def lr_factor(step: int, epoch: int, warmup_steps: int, kind: str, t_max: int) -> float:
    """The factor on each group's base learning rate: min(1, (step + 1) / warmup) during warm-up,
    times (1 + cos(π · epoch / t_max)) / 2 for `cosine` (the closed form of CosineAnnealingLR with
    eta_min 0, so the period repeats after 2·t_max epochs as torch's does)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    cos = (1 + math.cos(math.pi * epoch / t_max)) / 2 if kind == "cosine" else 1.0
    return warm * cos


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   epoch: Callable[[], int]) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A LambdaLR stepped after every optimiser step (its state, saved in checkpoints, counts steps);
    None when there is neither warm-up nor annealing."""
    if cfg.scheduler == "none" and not cfg.warmup_steps:
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, epoch(), cfg.warmup_steps, cfg.scheduler, cfg.scheduler_t_max))
