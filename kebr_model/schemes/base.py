"""The interface every training scheme shares: what the trainer asks a scheme at each epoch.

A scheme (boosting-msa paper §3.4) says which phase an epoch trains in, the loss weight of each task
(main and unimodal) in that phase, whether the MCC term trains, whether the encoders and unimodal heads
are frozen, and whether the epoch's validation may select the model. It declares its name, its settings
dataclass (its `[train]` keys, declared with `kebr_data.config.setting`) and any combination of the
run's settings it cannot train with (`problems`). The trainer (`kebr_model.training.train.Trainer`) is its only
user: one scheme implementation for the trainer, the tests and bench/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kebr_data.settings import NoSettings

if TYPE_CHECKING:
    from ..config import TrainConfig


class Scheme:
    """Base class: the `single` behaviour (one phase named after the scheme, the main task alone)."""

    name: str = ""
    Settings: type = NoSettings
    #: the scheme trains unimodal heads: a run needs alpha_text, alpha_audio or alpha_visual > 0
    needs_modal_heads: bool = False

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def phase(self, epoch: int) -> str:
        """The phase epoch `epoch` (0-based) trains in."""
        return self.name

    def weights(self, phase: str, alphas: dict[str, float]) -> dict[str, float]:
        """The loss weight of each task ("main", "text", "audio", "visual") in `phase`; `alphas` are the run's."""
        return {"main": 1.0}

    def trains_mcc(self, phase: str) -> bool:
        """Whether the MCC term joins the loss in `phase` (with use_mcc)."""
        return True

    def freezes(self, phase: str) -> bool:
        """Whether the encoders in the graph and the unimodal heads are frozen (no gradient, eval mode) in `phase`."""
        return False

    def selects(self, phase: str) -> bool:
        """Whether a validation in `phase` may select the best model."""
        return True

    def problems(self, cfg: TrainConfig) -> list[str]:
        """Why the run's settings cannot train with this scheme (one line each), or nothing."""
        if self.needs_modal_heads and not any(cfg.alphas[m] > 0 for m in ("text", "audio", "visual")):
            return [f"scheme {self.name!r} trains unimodal heads: set alpha_text, alpha_audio or alpha_visual > 0"]
        return []
