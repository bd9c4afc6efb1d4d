"""TCMF (KEBR paper §3.3, Eq. 5-8) behind the fusion interface, reusing `kebr_model.tcmf.TCMF`.

`per_modality_query=True` is SKESL's form (its Eq. 2): one query map W_Q^m per non-verbal modality
instead of KEBR's single W_Q (the existing `query` serves as W_Q^a, a second one is W_Q^v).
Text is required (the queries come from it); a missing audio or visual modality is attended by
no query and adds nothing to M (Eq. 7). The fused sequence is X_K over the text tokens (usable by
the MCC); pooled is its masked mean (the fine-tuning head's input); `extras` holds the last
layer's audio and visual values (the MCC's flatten space).
"""

from __future__ import annotations

import torch
from torch import nn

from ..tcmf import TCMF as KEBRTCMF
from ..tcmf import TCMFLayer, attend
from .base import Fusion, FusionOutput, masked_mean


class PerModalityQueryLayer(TCMFLayer):
    """A TCMF layer with SKESL's W_Q^a (`query`) and W_Q^v (`query_visual`) (SKESL Eq. 2, 5-7)."""

    def __init__(self, d_t: int, d_a: int, d_v: int, dropout: float = 0.1) -> None:
        super().__init__(d_t, d_a, d_v, dropout=dropout)
        self.query_visual = nn.Linear(d_t, d_t)

    def forward(self, x: torch.Tensor, kv_a: tuple[torch.Tensor, torch.Tensor], a_mask: torch.Tensor,
                kv_v: tuple[torch.Tensor, torch.Tensor], v_mask: torch.Tensor, uniform: bool = False) -> torch.Tensor:
        h = self.norm_q(x)
        m = attend(self.query(h), *kv_a, a_mask, uniform) + h + attend(self.query_visual(h), *kv_v, v_mask, uniform)
        return self.ffn(self.norm_ffn(m)) + m


class TCMF(Fusion):
    name = "tcmf"
    has_sequence = True

    def __init__(self, widths: dict[str, int], layers: int = 4, shared: bool = False, dropout: float = 0.1,
                 uniform: bool = False, per_modality_query: bool = False) -> None:
        if "text" not in widths:
            raise ValueError("fusion 'tcmf' is text-centred: widths must include 'text'")
        super().__init__(widths)
        d_t = self.widths["text"]
        # a modality the model is built without gets a width-1 slot that is always masked
        d_a, d_v = self.widths.get("audio", 1), self.widths.get("visual", 1)
        self.tcmf = KEBRTCMF(d_t, d_a, d_v, layers, shared, dropout, uniform)
        if per_modality_query:
            n = 1 if shared else layers
            self.tcmf.layers = nn.ModuleList([PerModalityQueryLayer(d_t, d_a, d_v, dropout) for _ in range(n)])
        self.per_modality_query = per_modality_query
        self.out_dim = d_t

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        if "text" not in h:
            raise ValueError("fusion 'tcmf' needs the text modality in its input")
        b, ref = h["text"].shape[0], h["text"]
        side = {}
        last = self.tcmf.last
        for m, d in (("audio", last.audio.key.in_features), ("visual", last.visual.key.in_features)):
            if m in h and m in self.widths:
                side[m] = (h[m], mask[m].bool())
            else:
                side[m] = (ref.new_zeros(b, 1, d), torch.zeros(b, 1, dtype=torch.bool, device=ref.device))
        t_mask = mask["text"].bool()
        x_k, v_a, v_v = self.tcmf(h["text"], *side["audio"], *side["visual"])
        return FusionOutput(masked_mean(x_k, t_mask), x_k, self.per_modality(h, mask), t_mask,
                            {"audio_values": v_a, "visual_values": v_v})
