"""The KEBR model: a Hugging Face text encoder, a fusion of the text with the non-verbal modalities
(TCMF, built by `make_fusion` from the modalities' widths), a pre-training head on the [MASK]
position and a fine-tuning head on the masked mean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import mcc as mcc_mod
from .tcmf import TCMF


@dataclass
class Output:
    prediction: torch.Tensor  # (B,)
    c_a: torch.Tensor         # (B,) cosine of fused text and audio (zeros without audio)
    c_v: torch.Tensor         # (B,) cosine of fused text and visual (zeros without visual)
    mcc: torch.Tensor         # (B,) per-sample MCC term
    mcc_valid: torch.Tensor   # (B,) samples that have both audio and visual frames (the term is defined)


def head(d: int, hidden: int = 256, dropout: float = 0.0) -> nn.Module:
    """MLP d -> 256 -> 1 with ReLU (Eq. 15), after optional dropout (the released head: 0.5)."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def make_fusion(cfg: Any, d_t: int, widths: dict[str, int]) -> nn.Module:
    """The fusion module for `widths` (modality -> frame width): called as fusion(x_t, frames, masks)
    with dicts by modality name, it returns (fused text, per-modality value sequences). One place to
    plug in other fusions."""
    return TCMF(d_t, widths, getattr(cfg, "layers", 4), getattr(cfg, "shared_layers", False),
                getattr(cfg, "dropout", 0.1), uniform=not getattr(cfg, "use_tcmf", True),
                ffn=getattr(cfg, "ffn", "gelu4"))


class KEBR(nn.Module):
    def __init__(self, encoder: nn.Module, widths: dict[str, int], cfg: Any = None) -> None:
        super().__init__()
        get = (lambda k, d: getattr(cfg, k, d)) if cfg is not None else (lambda k, d: d)
        if get("mcc_space", "pooled") not in mcc_mod.SPACES:
            raise ValueError(f"mcc.space must be one of {mcc_mod.SPACES}")
        self.encoder = encoder
        d_t = encoder.config.hidden_size
        self.widths = dict(widths)
        self.fusion = make_fusion(cfg, d_t, self.widths)
        self.pretrain_head = head(d_t, dropout=get("head_dropout", 0.0))
        self.finetune_head = head(d_t, dropout=get("head_dropout", 0.0))
        self.mcc_space, self.mcc_form = get("mcc_space", "pooled"), get("mcc_form", "paper")
        self.mcc_s, self.mcc_g, self.mcc_negative = get("mcc_s", 1.0), get("mcc_g", 0.2), get("mcc_negative", "constant")

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> Output:
        text_mask = batch["attention_mask"].bool()
        x_t = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        frames = {m: batch[m] for m in self.widths}
        masks = {m: batch[f"{m}_mask"] for m in self.widths}
        x_k, values = self.fusion(x_t, frames, masks)
        if task == "pretrain":
            x = x_k[torch.arange(x_k.shape[0], device=x_k.device), batch["mask_pos"]]
            prediction = self.pretrain_head(x).squeeze(-1)
        else:
            prediction = self.finetune_head(mcc_mod.masked_mean(x_k, text_mask)).squeeze(-1)
        cos = {m: self.cosine(m, x_k, text_mask, frames[m], masks[m]) for m in self.widths}
        zero = x_k.new_zeros(x_k.shape[0])
        c_a, c_v = cos.get("audio", zero), cos.get("visual", zero)
        term = mcc_mod.per_sample(self.mcc_form, c_a, c_v, self.mcc_s, self.mcc_g, self.mcc_negative)
        both = "audio" in masks and "visual" in masks
        valid = masks["audio"].any(1) & masks["visual"].any(1) if both else torch.zeros_like(zero, dtype=torch.bool)
        return Output(prediction, c_a, c_v, term, valid)

    def cosine(self, m: str, x_k: torch.Tensor, text_mask: torch.Tensor, frames: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """c_m: `pooled` compares the fused text's masked mean with the masked mean of the last layer's
        LN_m(X0_m) W_V^m; `flatten` compares the fused text with the raw input frames (released code)."""
        if self.mcc_space == "flatten":
            return mcc_mod.flatten_cosine(x_k, text_mask, frames, mask)
        p = mcc_mod.masked_mean(x_k, text_mask)
        return nn.functional.cosine_similarity(p, self.fusion.last.modal[m].pooled_value(frames, mask), dim=-1)
