"""The interface every fusion shares: a dict of modality sequences in, a `FusionOutput` out.

Input: `h[m]` of shape (B, T_m, d_m) and `mask[m]` (B, T_m), True on real frames, for any subset
of the modalities the fusion was built for (`widths`). A modality absent from `h`, or a sample
with no real frame of it, is *missing*: it is never attended, and what it would contribute to the
pooled vector is dropped (a zero slot, or, in TFN, the constant 1 of its factor).
`per_modality[m]` is the masked mean of the input `h[m]` (width d_m): the clip-level vector the
unimodal heads read (the boosting-msa paper's heads sit on each feature extractor's output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kebr_data.settings import NoSettings

MODALITIES = ("text", "audio", "visual")


@dataclass
class FusionOutput:
    pooled: torch.Tensor                    # (B, out_dim): what the main head reads
    sequence: torch.Tensor | None           # (B, T, d): a fused sequence (for the MCC), None where there is none
    per_modality: dict[str, torch.Tensor]   # m -> (B, d_m): masked mean of the input, for the unimodal heads
    sequence_mask: torch.Tensor | None = None  # (B, T) real positions of `sequence`
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # fusion-specific tensors (TCMF: values)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of the positions where `mask` is true (zero for an all-false row)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class Fusion(nn.Module):
    """Base class: `widths` (modality -> feature width d_m), `out_dim`, `has_sequence`.

    What a fusion declares for the registry (`kebr_model.fusions`): its `name` (the `fusion` key's
    value), its `Settings` dataclass (its options: each field a `[train]` key, declared with
    `kebr_data.settings.setting`, so its range is checked where it is declared), and `from_settings`,
    the constructor the trainer calls; `pretrains` (a fused sequence aligned with the text tokens, so
    the [MASK] position can be read: pre-training), `audio_only` (reads the audio alone:
    modalities.use = "a") and `value_space` (per-modality value maps for the pooled MCC, `pooled_value`).
    """

    name: str = ""
    has_sequence: bool = False
    pretrains: bool = False
    audio_only: bool = False
    value_space: bool = False
    Settings: type = NoSettings

    @classmethod
    def from_settings(cls, widths: dict[str, int], settings: Any, dropout: float) -> "Fusion":
        """The fusion for inputs of `widths` from its settings object and the run's `dropout`."""
        return cls(widths)

    @classmethod
    def sequence_for(cls, settings: Any) -> bool:
        """Whether the fusion built from `settings` has a fused sequence (what the MCC compares)."""
        return cls.has_sequence

    def __init__(self, widths: dict[str, int]) -> None:
        super().__init__()
        unknown = sorted(set(widths) - set(MODALITIES))
        if unknown or not widths:
            raise ValueError(f"fusion {self.name!r}: widths must name some of {MODALITIES}, got {sorted(widths)}")
        self.widths = {m: int(widths[m]) for m in MODALITIES if m in widths}
        self.modalities = tuple(self.widths)
        self.out_dim = 0

    def batch_size(self, h: dict[str, torch.Tensor]) -> int:
        for m in self.modalities:
            if m in h:
                return h[m].shape[0]
        raise ValueError(f"fusion {self.name!r}: none of {self.modalities} in the input (got {sorted(h)})")

    def inputs(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Every built modality as (B, T_m, d_m) with its mask; a missing one becomes one masked zero
        frame, so that code downstream has one shape to handle and attends to nothing there."""
        b = self.batch_size(h)
        ref = next(h[m] for m in self.modalities if m in h)
        xs, ms = {}, {}
        for m in self.modalities:
            if m in h:
                if h[m].shape[-1] != self.widths[m]:
                    raise ValueError(f"fusion {self.name!r}: {m} has width {h[m].shape[-1]}, "
                                     f"built for {self.widths[m]}")
                xs[m], ms[m] = h[m], mask[m].bool()
            else:
                xs[m] = ref.new_zeros(b, 1, self.widths[m])
                ms[m] = torch.zeros(b, 1, dtype=torch.bool, device=ref.device)
        return xs, ms

    def per_modality(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: masked_mean(h[m], mask[m].bool()) for m in self.modalities if m in h}
