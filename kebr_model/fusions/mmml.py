"""MMML's fusion network (Wu et al., multi-modality multi-loss fusion, §3.2-3.4), text + audio.

Each modality is projected to width `d` and a learned CLS token is prepended. Each of `layers`
fusion layers (5, the paper's best) runs, per stream, a cross-attention block (text stream:
text queries, audio keys/values; audio stream: the mirror), a self-attention block and a
pointwise ReLU feed-forward network (pre-LN, residual). The CLS outputs, concatenated, are the
pooled vector; the paper's three fully connected layers are the main head (the `mlp` head kind with
`main_layers=3`). Keys/values always come from the other modality's projected input, as in TCMF.

Variants (`variant`):
- `fused` (default, "fused features only"): pooled = [CLS_t; CLS_a], out_dim 2d.
- `direct_concat`: no fusion network: pooled = [mean(h_t); mean(h_a)], out_dim d_t + d_a.
- `concat_variation`: per modality, Linear([mean(h_m); CLS_m]) -> d, concatenated, out_dim 2d.
- `transformer_variation`: per modality, [projected input; fused stream] along the feature axis
  (2d) through one self-attention block, masked mean, concatenated, out_dim 4d.

Our reading, documented: the paper draws the text stream (text queries, audio keys/values); the
mirror audio stream is what makes "the CLS outputs" of both modalities. Missing modality: its
tokens are never attended and its slot of the pooled vector is zero. Fused sequence: the text
stream without its CLS (none for `direct_concat`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from kebr_data.config import setting

from .attention import Block
from .base import Fusion, FusionOutput, masked_mean

VARIANTS = ("fused", "direct_concat", "concat_variation", "transformer_variation")


class FusionLayer(nn.Module):
    """Cross-attention, then self-attention and the FFN (the self block carries the FFN)."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.cross = Block(d, heads, dropout=dropout, cross=True)
        self.self_attn = Block(d, heads, dropout=dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        return self.self_attn(self.cross(x, x_mask, kv, kv_mask), x_mask)


@dataclass
class MMMLSettings:
    """The `mmml` fusion's options (`[train]` keys)."""

    mmml_variant: Literal["fused", "direct_concat", "concat_variation", "transformer_variation"] = setting(
        "fused", "mmml: the fusion network or one of the paper's variants")
    mmml_d: int = setting(64, "mmml: fusion width (the paper gives none; 64 is this project's)", min=1)
    mmml_heads: int = setting(4, "mmml: attention heads (the paper gives none; mmml_d must be a multiple)", min=1)
    mmml_layers: int = setting(5, "mmml: fusion layers (MMML A.1: 'using 5 layers of fusion network')", min=1)


class MMML(Fusion):
    name = "mmml"
    has_sequence = True
    Settings = MMMLSettings

    @classmethod
    def from_settings(cls, widths: dict[str, int], settings: Any, dropout: float) -> "MMML":
        return cls(widths, d=settings.mmml_d, heads=settings.mmml_heads, layers=settings.mmml_layers, dropout=dropout,
                   variant=settings.mmml_variant)

    @classmethod
    def sequence_for(cls, settings: Any) -> bool:
        return settings.mmml_variant != "direct_concat"

    def __init__(self, widths: dict[str, int], d: int = 64, heads: int = 4, layers: int = 5, dropout: float = 0.1,
                 variant: str = "fused", pair: tuple[str, str] = ("text", "audio")) -> None:
        super().__init__({m: widths[m] for m in pair if m in widths})
        if variant not in VARIANTS:
            raise ValueError(f"unknown mmml variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if len(self.modalities) != 2:
            raise ValueError(f"fusion 'mmml' fuses two modalities {pair}; widths has {sorted(widths)}")
        self.variant = variant
        self.has_sequence = variant != "direct_concat" and "text" in self.modalities
        self.d = d
        if variant == "direct_concat":
            self.out_dim = sum(self.widths.values())
            return
        self.project = nn.ModuleDict({m: nn.Linear(self.widths[m], d) for m in self.modalities})
        self.cls = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m in self.modalities})
        self.layers = nn.ModuleDict({m: nn.ModuleList([FusionLayer(d, heads, dropout) for _ in range(layers)])
                                     for m in self.modalities})
        if variant == "concat_variation":
            self.combine = nn.ModuleDict({m: nn.Linear(self.widths[m] + d, d) for m in self.modalities})
            self.out_dim = 2 * d
        elif variant == "transformer_variation":
            self.combine = nn.ModuleDict({m: Block(2 * d, heads, dropout=dropout) for m in self.modalities})
            self.out_dim = 4 * d
        else:
            self.out_dim = 2 * d

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        xs, ms = self.inputs(h, mask)
        per = self.per_modality(h, mask)
        present = {m: ms[m].any(1, keepdim=True) for m in self.modalities}
        if self.variant == "direct_concat":
            pooled = torch.cat([masked_mean(xs[m], ms[m]) for m in self.modalities], dim=-1)
            return FusionOutput(pooled, None, per)
        b = xs[self.modalities[0]].shape[0]
        x0, m0 = {}, {}
        for m in self.modalities:
            cls = self.cls[m].expand(b, 1, -1)
            x0[m] = torch.cat([cls, self.project[m](xs[m])], dim=1)
            m0[m] = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=ms[m].device), ms[m]], dim=1)
        slots, streams = [], {}
        for m in self.modalities:
            other = next(o for o in self.modalities if o != m)
            y = x0[m]
            for layer in self.layers[m]:
                y = layer(y, m0[m], x0[other], key_mask(ms[other]))
            streams[m] = y
            if self.variant == "fused":
                slot = y[:, 0]
            elif self.variant == "concat_variation":
                slot = self.combine[m](torch.cat([masked_mean(xs[m], ms[m]), y[:, 0]], dim=-1))
            else:
                z = self.combine[m](torch.cat([x0[m], y], dim=-1), m0[m])
                slot = masked_mean(z, m0[m])
            slots.append(torch.where(present[m], slot, torch.zeros_like(slot)))
        seq = streams["text"][:, 1:] if "text" in streams else None
        return FusionOutput(torch.cat(slots, dim=-1), seq, per, ms["text"] if seq is not None else None)


def key_mask(frames: torch.Tensor) -> torch.Tensor:
    """The other stream's key mask: its CLS is a key only when the modality has a real frame."""
    return torch.cat([frames.any(1, keepdim=True), frames], dim=1)
