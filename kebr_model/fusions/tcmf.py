"""TCMF (KEBR paper §3.3, Eq. 5-8) behind the fusion interface, reusing `kebr_model.tcmf.TCMF`.

`per_modality_query=True` is SKESL's form (its Eq. 2): one query map W_Q^m per non-verbal modality
instead of KEBR's single W_Q (the layer's `query` serves the first modality, `extra_queries` the
others). Text is required (the queries come from it); a missing audio or visual modality is
attended by no query and adds nothing to M (Eq. 7). The fused sequence is X_K over the text tokens
(usable by the MCC); pooled is its masked mean (the fine-tuning head's input); `extras` holds the
last layer's value projections per modality (`<m>_values`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..tcmf import TCMF as KEBRTCMF
from ..tcmf import TCMFLayer, attend
from .base import Fusion, FusionOutput, masked_mean


class PerModalityQueryLayer(TCMFLayer):
    """A TCMF layer with SKESL's W_Q^m: `query` for the first modality, `extra_queries[m]` for the rest."""

    def __init__(self, d_t: int, widths: dict[str, int], ffn: str = "gelu4", dropout: float = 0.1) -> None:
        super().__init__(d_t, widths, ffn, dropout)
        self.extra_queries = nn.ModuleDict({m: nn.Linear(d_t, d_t) for m in list(widths)[1:]})

    def forward(self, x: torch.Tensor, kv: dict[str, tuple[torch.Tensor, torch.Tensor]],
                masks: dict[str, torch.Tensor], uniform: bool = False) -> torch.Tensor:
        h = self.norm_q(x)
        m = h
        for name, (k, v) in kv.items():
            query = self.extra_queries[name] if name in self.extra_queries else self.query
            m = m + attend(query(h), k, v, masks[name], uniform)
        return self.ffn(self.norm_ffn(m)) + m


class TCMF(Fusion):
    name = "tcmf"
    has_sequence = True

    def __init__(self, widths: dict[str, int], layers: int = 4, shared: bool = False, dropout: float = 0.1,
                 uniform: bool = False, per_modality_query: bool = False, ffn: str = "gelu4") -> None:
        if "text" not in widths:
            raise ValueError("fusion 'tcmf' is text-centred: widths must include 'text'")
        super().__init__(widths)
        d_t = self.widths["text"]
        side = {m: d for m, d in self.widths.items() if m != "text"}
        self.tcmf = KEBRTCMF(d_t, side, layers, shared, dropout, uniform, ffn)
        if per_modality_query:
            n = 1 if shared else layers
            self.tcmf.layers = nn.ModuleList([PerModalityQueryLayer(d_t, side, ffn, dropout) for _ in range(n)])
        self.per_modality_query = per_modality_query
        self.out_dim = d_t

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        if "text" not in h:
            raise ValueError("fusion 'tcmf' needs the text modality in its input")
        b, ref = h["text"].shape[0], h["text"]
        frames, masks = {}, {}
        for m, d in self.tcmf.widths.items():
            if m in h:
                frames[m], masks[m] = h[m], mask[m].bool()
            else:
                frames[m] = ref.new_zeros(b, 1, d)
                masks[m] = torch.zeros(b, 1, dtype=torch.bool, device=ref.device)
        t_mask = mask["text"].bool()
        x_k, values = self.tcmf(h["text"], frames, masks)
        return FusionOutput(masked_mean(x_k, t_mask), x_k, self.per_modality(h, mask), t_mask,
                            {f"{m}_values": v for m, v in values.items()})
