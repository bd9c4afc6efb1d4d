"""SF, "shallow fusion" (boosting-msa paper §3.3): the clip-level vectors concatenated.

pooled = [mean(h_t); mean(h_a); mean(h_v)] (masked means over real frames), out_dim = Σ d_m.
No trainable parameter, as in the paper. A missing modality's slot is zero. No fused sequence.
"""

from __future__ import annotations

import torch

from .base import Fusion, FusionOutput, masked_mean


class SF(Fusion):
    name = "sf"
    has_sequence = False

    def __init__(self, widths: dict[str, int]) -> None:
        super().__init__(widths)
        self.out_dim = sum(self.widths.values())

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        xs, ms = self.inputs(h, mask)
        pooled = torch.cat([masked_mean(xs[m], ms[m]) for m in self.modalities], dim=-1)
        return FusionOutput(pooled, None, self.per_modality(h, mask))
