"""`two-step` (boosting-msa §3.4): step `one` (the first `step_one_epochs` epochs) trains the encoders in
the graph (text, and an in-graph audio encoder) with the unimodal heads on their own labels (α_m; the main
task weight 0, no MCC, no model selection); step `two` freezes them (no gradient, eval mode: no dropout)
and trains the fusion and the main head on the main task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kebr_data.config import setting

from .base import Scheme

if TYPE_CHECKING:
    from ..config import TrainConfig


@dataclass
class TwoStepSettings:
    """The `two-step` scheme's options (`[train]` keys)."""

    step_one_epochs: int = setting(1, "two-step: epochs of step one (unimodal heads)", min=1)


class TwoStep(Scheme):
    name = "two-step"
    Settings = TwoStepSettings
    needs_modal_heads = True

    def phase(self, epoch: int) -> str:
        return "one" if epoch < self.settings.step_one_epochs else "two"

    def weights(self, phase: str, alphas: dict[str, float]) -> dict[str, float]:
        if phase == "one":
            return {"main": 0.0, **{m: a for m, a in alphas.items() if m != "main"}}
        return {"main": 1.0}

    def trains_mcc(self, phase: str) -> bool:
        return phase != "one"

    def freezes(self, phase: str) -> bool:
        return phase == "two"

    def selects(self, phase: str) -> bool:
        return phase != "one"  # step one trains other heads than the one selected on

    def problems(self, cfg: TrainConfig) -> list[str]:
        if cfg.epochs <= self.settings.step_one_epochs:
            return [*super().problems(cfg),
                    f"scheme 'two-step' needs epochs > step_one_epochs ({self.settings.step_one_epochs}) for step two"]
        return super().problems(cfg)
