"""The multi-task loss L = Σ_k α_k L_k over the main head and the unimodal heads (boosting-msa paper Eq. 2;
MMML's multi-loss). Labels: per-modality labels where given (CH-SIMS), else the main label duplicated
(MOSI/MOSEI, as MMML does)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from ..fusions.base import MODALITIES

TASKS = ("main", *MODALITIES)
LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


def task_labels(tasks: Iterable[str], label: torch.Tensor,
                labels: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The target of each task: its own label where given, else the main label duplicated."""
    labels = labels or {}
    return {k: labels.get(k, label) if k != "main" else label for k in tasks}


def weighted_loss(preds: dict[str, torch.Tensor], label: torch.Tensor, alphas: dict[str, float],
                  labels: dict[str, torch.Tensor] | None = None, loss: str = "l1",
                  valid: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = Σ_k α_k L_k over the tasks with α_k > 0 that have a prediction; returns (L, {k: L_k}).

    `valid[k]` (B,) bool leaves samples out of task k (e.g. a clip without that modality); a task
    with no valid sample adds zero."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    unknown = sorted(set(alphas) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in the loss weights; tasks are {', '.join(TASKS)}")
    tasks = [k for k, a in alphas.items() if a > 0 and k in preds]
    if "main" in alphas and alphas["main"] > 0 and "main" not in preds:
        raise ValueError("the loss weights the main task but there is no main prediction")
    targets = task_labels(tasks, label, labels)
    parts: dict[str, torch.Tensor] = {}
    total = label.new_zeros(())
    for k in tasks:
        p, y = preds[k], targets[k].to(preds[k].dtype)
        if valid is not None and k in valid:
            keep = valid[k].bool()
            p, y = p[keep], y[keep]
        parts[k] = LOSSES[loss](p, y) if p.numel() else p.new_zeros(())
        total = total + alphas[k] * parts[k]
    return total, parts
