"""Prediction heads: the main head on the fused vector and one head per modality, with the
multi-task loss L = Σ_k α_k L_k (boosting-msa paper Eq. 2; MMML's multi-loss).

A modality head reads that modality's clip vector (`FusionOutput.per_modality[m]`, the encoder's
output), as the boosting-msa paper connects each subtask to its feature extractor and MMML adds a
layer at the end of each feature network. Labels: per-modality labels where given (CH-SIMS), else
the main label duplicated (MOSI/MOSEI, as MMML does).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .fusions.base import MODALITIES, FusionOutput

TASKS = ("main", *MODALITIES)
LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


def mlp(d_in: int, hidden: int = 256, layers: int = 2) -> nn.Module:
    """`layers` linear maps d_in -> hidden -> ... -> 1 with ReLU between (2: KEBR's Eq. 15 head;
    3: MMML's three fully connected layers; 1: a linear read-out)."""
    if layers < 1:
        raise ValueError(f"a head needs at least one layer, got {layers}")
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, 1))
    return nn.Sequential(*mods)


class Heads(nn.Module):
    """The main head (on `pooled`) and a head for each modality in `modalities` (on its clip vector)."""

    def __init__(self, fused_dim: int, widths: dict[str, int], modalities: Iterable[str] = (), hidden: int = 256,
                 main_layers: int = 2, modality_layers: int = 2) -> None:
        super().__init__()
        unknown = sorted(set(modalities) - set(widths))
        if unknown:
            raise ValueError(f"no width for the modality head(s) {unknown}; widths has {sorted(widths)}")
        self.main = mlp(fused_dim, hidden, main_layers)
        self.modality = nn.ModuleDict({m: mlp(widths[m], hidden, modality_layers) for m in MODALITIES
                                       if m in set(modalities)})

    def forward(self, out: FusionOutput) -> dict[str, torch.Tensor]:
        """Predictions (B,) keyed by task: "main", and each modality that has a head and an input."""
        preds = {"main": self.main(out.pooled).squeeze(-1)}
        for m, head in self.modality.items():
            if m in out.per_modality:
                preds[m] = head(out.per_modality[m]).squeeze(-1)
        return preds


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
