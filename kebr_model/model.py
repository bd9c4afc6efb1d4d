"""The KEBR model: a Hugging Face text encoder, TCMF over audio and visual frames,
a pre-training head on the [MASK] position and a fine-tuning head on the masked mean."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import mcc as mcc_mod
from .tcmf import TCMF


@dataclass
class Output:
    prediction: torch.Tensor  # (B,)
    c_a: torch.Tensor         # (B,) cosine of fused text and audio
    c_v: torch.Tensor         # (B,) cosine of fused text and visual
    mcc: torch.Tensor         # (B,) per-sample MCC term
    mcc_valid: torch.Tensor   # (B,) samples that have both audio and visual frames (the term is defined)


def head(d: int, hidden: int = 256) -> nn.Module:
    """MLP d -> 256 -> 1 with ReLU (Eq. 15)."""
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class KEBR(nn.Module):
    def __init__(self, encoder: nn.Module, d_a: int = 33, d_v: int = 709, layers: int = 4, shared: bool = False,
                 dropout: float = 0.1, use_tcmf: bool = True, mcc_space: str = "pooled", mcc_form: str = "paper",
                 mcc_s: float = 1.0, mcc_g: float = 0.2) -> None:
        super().__init__()
        if mcc_space not in mcc_mod.SPACES:
            raise ValueError(f"mcc.space must be one of {mcc_mod.SPACES}")
        self.encoder = encoder
        d_t = encoder.config.hidden_size
        self.tcmf = TCMF(d_t, d_a, d_v, layers, shared, dropout, uniform=not use_tcmf)
        self.pretrain_head = head(d_t)
        self.finetune_head = head(d_t)
        self.mcc_space, self.mcc_form, self.mcc_s, self.mcc_g = mcc_space, mcc_form, mcc_s, mcc_g

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> Output:
        text_mask = batch["attention_mask"].bool()
        x_t = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        x_k, v_a, v_v = self.tcmf(x_t, batch["audio"], batch["audio_mask"], batch["visual"], batch["visual_mask"])
        if task == "pretrain":
            x = x_k[torch.arange(x_k.shape[0], device=x_k.device), batch["mask_pos"]]
            prediction = self.pretrain_head(x).squeeze(-1)
        else:
            prediction = self.finetune_head(mcc_mod.masked_mean(x_k, text_mask)).squeeze(-1)
        if self.mcc_space == "pooled":
            # q_m = masked mean of the last layer's LN_m(X0_m) W_V^m, pooled before projecting
            p = mcc_mod.masked_mean(x_k, text_mask)
            last = self.tcmf.last
            c_a = nn.functional.cosine_similarity(p, last.audio.pooled_value(batch["audio"], batch["audio_mask"]),
                                                  dim=-1)
            c_v = nn.functional.cosine_similarity(p, last.visual.pooled_value(batch["visual"], batch["visual_mask"]),
                                                  dim=-1)
        else:
            c_a = mcc_mod.flatten_cosine(x_k, text_mask, v_a, batch["audio_mask"])
            c_v = mcc_mod.flatten_cosine(x_k, text_mask, v_v, batch["visual_mask"])
        term = mcc_mod.per_sample(self.mcc_form, c_a, c_v, self.mcc_s, self.mcc_g)
        valid = batch["audio_mask"].any(1) & batch["visual_mask"].any(1)
        return Output(prediction, c_a, c_v, term, valid)
