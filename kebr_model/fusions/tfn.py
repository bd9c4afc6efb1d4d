"""TFN, tensor fusion (Zadeh et al. 2017; boosting-msa paper §3.3).

z_m = [W_m mean(h_m) + b_m ; 1] for each modality, pooled = flatten(z_t ⊗ z_a ⊗ z_v), so
out_dim = (p_t+1)(p_a+1)(p_v+1): the unimodal, bimodal and trimodal interaction terms side by side.
The product is taken in the order text, audio, visual (text the slowest index).

Substitution, documented: the paper's TFN adds no trainable parameter, but the product of the raw
widths has 6·10^8 entries for its extractors (769·769·1025) and 9·10^6 for KEBR's features
(385·34·710), so each clip vector is first projected linearly to `project` widths (default 16
each: 17^3 = 4,913 entries).
`project=None` keeps the raw widths (no parameter at all, for small inputs; `kebr-train`: tfn_project = 0).
A missing modality has z_m = [0 ... 0; 1]: it drops out of the product, which then holds exactly
the other modalities' terms. No fused sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kebr_data.config import setting

from .base import Fusion, FusionOutput, masked_mean


@dataclass
class TFNSettings:
    """The `tfn` fusion's options (`[train]` keys)."""

    tfn_project: int = setting(16, "tfn: project each clip vector to this width before the outer product; 0 = the "
                                   "paper's parameter-free form on the raw widths (boosting-msa §3.3)", min=0)


class TFN(Fusion):
    name = "tfn"
    has_sequence = False
    Settings = TFNSettings

    @classmethod
    def from_settings(cls, widths: dict[str, int], settings: Any, dropout: float) -> "TFN":
        return cls(widths, project=settings.tfn_project or None)

    def __init__(self, widths: dict[str, int], project: int | dict[str, int] | None = 16) -> None:
        super().__init__(widths)
        if project is None:
            self.proj_widths = dict(self.widths)
            self.project = None
        else:
            p = project if isinstance(project, dict) else {m: int(project) for m in self.modalities}
            self.proj_widths = {m: int(p[m]) for m in self.modalities}
            self.project = nn.ModuleDict({m: nn.Linear(self.widths[m], self.proj_widths[m]) for m in self.modalities})
        self.out_dim = math.prod(w + 1 for w in self.proj_widths.values())

    def factor(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """z_m = [projected clip vector; 1], with the vector zeroed where the modality is missing."""
        v = masked_mean(x, mask)
        if self.project is not None:
            v = self.project[m](v)
        v = torch.where(mask.any(1, keepdim=True), v, torch.zeros_like(v))
        return torch.cat([v, v.new_ones(v.shape[0], 1)], dim=-1)

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        xs, ms = self.inputs(h, mask)
        z = None
        for m in self.modalities:
            f = self.factor(m, xs[m], ms[m])
            z = f if z is None else (z[:, :, None] * f[:, None, :]).flatten(1)
        return FusionOutput(z, None, self.per_modality(h, mask))
