"""Training schemes of the boosting-msa paper (§3.4): `single`, `joint` and `two-step`.

- `single`: the main task only (α = {main: 1}); encoders, fusion and main head train together.
- `joint`: main and unimodal tasks together, L = Σ α_k L_k (Eq. 2).
- `two-step`: step 1 fine-tunes each unimodal encoder with its own head on its unimodal labels
  (the main label where there is none); step 2 freezes every encoder (requires_grad False, eval
  mode: no dropout, and it stays in eval mode when the model is put back in training mode) and
  trains only the fusion and the main head.

Adam with the paper's two learning rates: `lr_encoder` (1e-5) for the pre-trained encoders and
`lr_rest` (1e-4) for everything else. An encoder is any module called as `encoder(x, mask)`
returning (B, T, d_m) (a Hugging Face model needs a two-line wrapper).

A batch is a dict: `inputs` {m: (B, T_m, ...)}, `mask` {m: (B, T_m) bool}, `label` (B,), and
optionally `labels` {m: (B,)} (per-modality labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .fusions.base import Fusion, FusionOutput, masked_mean
from .heads import Heads, weighted_loss

SCHEMES = ("single", "joint", "two-step")
Batch = dict


class MultimodalModel(nn.Module):
    """Unimodal encoders -> fusion -> heads."""

    def __init__(self, encoders: dict[str, nn.Module], fusion: Fusion, heads: Heads) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.heads = heads
        self.frozen: set[str] = set()

    def encode(self, inputs: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.encoders[m](x, mask[m]) for m, x in inputs.items() if m in self.encoders}

    def fuse(self, inputs: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        h = self.encode(inputs, mask)
        return self.fusion(h, {m: mask[m] for m in h})

    def forward(self, inputs: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predictions (B,) per task: "main" and each modality head."""
        return self.heads(self.fuse(inputs, mask))

    def unimodal(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Modality m's prediction from its encoder and head alone (two-step, step 1)."""
        return self.heads.modality[m](masked_mean(self.encoders[m](x, mask), mask.bool())).squeeze(-1)

    def freeze_encoders(self, modalities: Iterable[str] | None = None) -> None:
        """Freeze encoders: no gradient (a stale one from earlier training is dropped), eval mode,
        kept in eval mode by `train()`."""
        for m in modalities if modalities is not None else self.encoders:
            freeze(self.encoders[m])
            self.encoders[m].eval()
            self.frozen.add(m)

    def train(self, mode: bool = True) -> MultimodalModel:
        super().train(mode)
        for m in self.frozen:
            self.encoders[m].eval()
        return self


def freeze(module: nn.Module) -> None:
    """requires_grad False on every parameter, and no leftover gradient."""
    for p in module.parameters():
        p.requires_grad_(False)
        p.grad = None


def optimizer(groups: Sequence[tuple[Iterable[nn.Parameter], float]]) -> torch.optim.Adam:
    """Adam over (parameters, learning rate) groups, leaving out parameters that do not train."""
    out = []
    for params, lr in groups:
        ps = [p for p in params if p.requires_grad]
        if ps:
            out.append({"params": ps, "lr": lr})
    return torch.optim.Adam(out)


def phase(scheme: str, epoch: int, step_one_epochs: int) -> str:
    """The phase a scheme trains in at `epoch` (0-based): `single`, `joint`, or two-step's step `one`
    for the first `step_one_epochs` epochs, then `two`. The trainer (`Trainer.phase`) asks this too."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme == "two-step":
        return "one" if epoch < step_one_epochs else "two"
    return scheme


def phase_weights(phase: str, alphas: dict[str, float]) -> dict[str, float]:
    """The loss weight of each task in a phase, the one rule the trainer's loss and `run_scheme` use:
    `single` and two-step's step `two` the main task (weight 1); `joint` every task (α_k, α_main
    included); step `one` the unimodal tasks (α_m) and the main task weight 0. (`run_scheme`'s step one
    trains each encoder alone, one after another, on its own loss: there α_m would only scale it.)"""
    if phase in ("single", "two"):
        return {"main": 1.0}
    if phase == "joint":
        return dict(alphas)
    if phase == "one":
        return {"main": 0.0, **{m: a for m, a in alphas.items() if m != "main"}}
    raise ValueError(f"unknown phase {phase!r}; phases are single, joint, one, two")


def scheme_alphas(scheme: str, alphas: dict[str, float]) -> dict[str, float]:
    """The loss weights a scheme uses in its (last) step: `single` and `two-step` the main task only."""
    return phase_weights(phase(scheme, 1, 0), alphas)


def present(batch: Batch) -> dict[str, torch.Tensor]:
    """Per modality, the samples that have a real frame of it: a unimodal head learns only from those."""
    return {m: mk.bool().any(1) for m, mk in batch["mask"].items()}


def _cycle(batches: Sequence[Batch], steps: int) -> Iterable[Batch]:
    for i in range(steps):
        yield batches[i % len(batches)]


def train_fused(model: MultimodalModel, batches: Sequence[Batch], steps: int, alphas: dict[str, float],
                lr_encoder: float = 1e-5, lr_rest: float = 1e-4, loss: str = "l1") -> list[float]:
    """`single` / `joint` (and two-step's step 2 once encoders are frozen): the weighted loss over
    the fused model; returns the loss of each step."""
    model.train()
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoders.")]
    opt = optimizer([(model.encoders.parameters(), lr_encoder), (rest, lr_rest)])
    losses = []
    for b in _cycle(batches, steps):
        preds = model(b["inputs"], b["mask"])
        total, _ = weighted_loss(preds, b["label"], alphas, b.get("labels"), loss, valid=present(b))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(total.item())
    return losses


def train_step_one(model: MultimodalModel, batches: Sequence[Batch], steps: int, lr_encoder: float = 1e-5,
                   lr_rest: float = 1e-4, loss: str = "l1") -> dict[str, list[float]]:
    """Two-step, step 1: each encoder with its own head on its unimodal label, one after the other."""
    model.train()
    losses: dict[str, list[float]] = {}
    for m in model.heads.modality:
        opt = optimizer([(model.encoders[m].parameters(), lr_encoder), (model.heads.modality[m].parameters(), lr_rest)])
        losses[m] = []
        for b in _cycle(batches, steps):
            if m not in b["inputs"]:
                continue
            pred = model.unimodal(m, b["inputs"][m], b["mask"][m])
            total, _ = weighted_loss({m: pred}, b["label"], {m: 1.0}, b.get("labels"), loss, valid=present(b))
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses[m].append(total.item())
    return losses


def train_step_two(model: MultimodalModel, batches: Sequence[Batch], steps: int, alphas: dict[str, float],
                   lr_rest: float = 1e-4, loss: str = "l1") -> list[float]:
    """Two-step, step 2: encoders frozen, only the fusion and the main head train (main loss)."""
    model.freeze_encoders()
    for head in model.heads.modality.values():
        freeze(head)
    return train_fused(model, batches, steps, phase_weights("two", alphas), 0.0, lr_rest, loss)


def run_scheme(model: MultimodalModel, scheme: str, batches: Sequence[Batch], steps: int,
               alphas: dict[str, float] | None = None, step_one_steps: int | None = None,
               lr_encoder: float = 1e-5, lr_rest: float = 1e-4, loss: str = "l1") -> dict[str, list[float]]:
    """Train `model` with `scheme`; returns the step losses ("main", and "step1-<m>" for two-step)."""
    alphas = alphas or {"main": 1.0}
    weights = scheme_alphas(scheme, alphas)
    if scheme != "two-step":
        return {"main": train_fused(model, batches, steps, weights, lr_encoder, lr_rest, loss)}
    if not model.heads.modality:
        raise ValueError("scheme 'two-step' needs a head per modality (step 1 trains each encoder with its head)")
    first = train_step_one(model, batches, step_one_steps or steps, lr_encoder, lr_rest, loss)
    out = {f"step1-{m}": v for m, v in first.items()}
    out["main"] = train_step_two(model, batches, steps, weights, lr_rest, loss)
    return out
