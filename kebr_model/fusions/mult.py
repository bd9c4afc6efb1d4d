"""MulT, the Multimodal Transformer (Tsai et al. 2019; boosting-msa paper §3.3).

Each modality is projected to width `d` (a kernel-1 convolution, i.e. a per-frame linear map) plus
sinusoidal positions. For each target modality m and each other source s, a crossmodal stack of
`layers` blocks (queries from m, keys/values from s) adapts m to s: with three modalities the
six bimodal cross-attention blocks (t<-a, t<-v, a<-t, a<-v, v<-t, v<-a). The target's adapted
streams are concatenated (width d·(n-1)) and go through its unimodal self-attention stack (the
three self-attention blocks, `layers` deep). pooled = concatenation of the three streams' masked
means (out_dim = n·(n-1)·d); fused sequence: the text stream (T_t × 2d).

Differences from the released MulT, documented: pre-LN blocks with a masked mean over real frames
instead of the last time step (padding-safe with unaligned, padded sequences); kernel-1 projection
only (a wider kernel would mix padding into real frames). A missing source modality's cross block
output is zero for that sample (dropped from the attention), a missing target's slot is zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kebr_data.config import setting

from .attention import Block
from .base import Fusion, FusionOutput, masked_mean


def sinusoidal(t: int, d: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Transformer positions (Vaswani et al. 2017): sin on even, cos on odd channels."""
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(t, d, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return pe.to(dtype)


def stack(d: int, heads: int, layers: int, dropout: float, cross: bool = False) -> nn.ModuleList:
    return nn.ModuleList([Block(d, heads, dropout=dropout, cross=cross) for _ in range(layers)])


@dataclass
class MulTSettings:
    """The `mult` fusion's options (`[train]` keys)."""

    mult_d: int = setting(32, "mult: crossmodal width d (the paper gives none; 32 is this project's)", min=1)
    mult_layers: int = setting(2, "mult: blocks per crossmodal and self-attention stack (the paper gives none)", min=1)


class MulT(Fusion):
    name = "mult"
    has_sequence = True
    Settings = MulTSettings

    @classmethod
    def from_settings(cls, widths: dict[str, int], settings: Any, dropout: float) -> "MulT":
        return cls(widths, d=settings.mult_d, layers=settings.mult_layers, dropout=dropout)

    def __init__(self, widths: dict[str, int], d: int = 32, heads: int = 4, layers: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__(widths)
        if len(self.modalities) < 2:
            raise ValueError("fusion 'mult' needs at least two modalities")
        self.d = d
        self.project = nn.ModuleDict({m: nn.Conv1d(self.widths[m], d, kernel_size=1) for m in self.modalities})
        self.pairs = [(t, s) for t in self.modalities for s in self.modalities if s != t]
        self.cross = nn.ModuleDict({f"{s}_to_{t}": stack(d, heads, layers, dropout, cross=True) for t, s in self.pairs})
        d_stream = d * (len(self.modalities) - 1)
        self.self_attn = nn.ModuleDict({m: stack(d_stream, heads, layers, dropout) for m in self.modalities})
        self.dropout = nn.Dropout(dropout)
        self.out_dim = d_stream * len(self.modalities)
        self.has_sequence = "text" in self.modalities

    def embed(self, m: str, x: torch.Tensor) -> torch.Tensor:
        y = self.project[m](x.transpose(1, 2)).transpose(1, 2) * math.sqrt(self.d)
        return self.dropout(y + sinusoidal(y.shape[1], self.d, y.device, y.dtype))

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        xs, ms = self.inputs(h, mask)
        e = {m: self.embed(m, xs[m]) for m in self.modalities}
        streams, pooled = {}, []
        for t in self.modalities:
            adapted = []
            for s in self.modalities:
                if s == t:
                    continue
                y = e[t]
                for block in self.cross[f"{s}_to_{t}"]:
                    y = block(y, ms[t], e[s], ms[s])
                adapted.append(y * ms[s].any(1)[:, None, None].to(y.dtype))
            y = torch.cat(adapted, dim=-1)
            for block in self.self_attn[t]:
                y = block(y, ms[t])
            streams[t] = y
            pooled.append(masked_mean(y, ms[t]))
        seq = streams.get("text")
        return FusionOutput(torch.cat(pooled, dim=-1), seq, self.per_modality(h, mask),
                            ms["text"] if seq is not None else None)
