"""The model: a Hugging Face text encoder, a fusion of the text with the non-verbal modalities
(KEBR's TCMF by default, or any fusion registered in `kebr_model.fusions`, built from its settings
object and the modalities' widths), a pre-training head on the [MASK] position, a fine-tuning head on the fused
vector, and optional unimodal heads (boosting-msa, MMML) on each modality's clip vector. With an
`audio_encoder` (kebr_model.audio_encoder), the batch's audio is a raw waveform that it turns into frames
inside the graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import fusions
from . import mcc as mcc_mod
from .config import TrainConfig
from .fusions.base import masked_mean


@dataclass
class Output:
    prediction: torch.Tensor  # (B,)
    c_a: torch.Tensor         # (B,) cosine of fused text and audio (zeros without audio)
    c_v: torch.Tensor         # (B,) cosine of fused text and visual (zeros without visual)
    mcc: torch.Tensor         # (B,) per-sample MCC term
    mcc_valid: torch.Tensor   # (B,) samples that have both audio and visual frames (the term is defined)
    modal: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> (B,) unimodal heads' predictions
    mcc_parts: dict[str, torch.Tensor] = field(default_factory=dict)  # separate MCC: m -> (B,) unweighted L^m


class KEBR(nn.Module):
    """Text encoder -> the configured fusion (`cfg.fusion`, built from its settings object) -> the pre-training
    head on the [MASK] position or the fine-tuning head on the fused vector, plus the unimodal heads
    (alpha_m > 0) and the MCC's per-sample term."""

    def __init__(self, encoder: nn.Module, widths: dict[str, int], cfg: TrainConfig,
                 audio_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.audio_encoder = audio_encoder
        self.encoder = encoder
        d_t = encoder.config.hidden_size
        self.widths = dict(widths)
        self.fusion = fusions.build(cfg.fusion, {"text": d_t, **self.widths}, cfg.fusion_settings, cfg.dropout)
        heads = cfg.make_heads()
        self.pretrain_head = heads.build("pretrain", d_t)
        self.finetune_head = heads.build("finetune", self.fusion.out_dim)
        modal_widths = {"text": d_t, **self.widths}
        self.modal_heads = nn.ModuleDict({m: heads.build("modal", modal_widths[m])
                                          for m in ("text", "audio", "visual")
                                          if cfg.alphas.get(m, 0.0) > 0 and m in modal_widths})
        self.mcc_space, self.mcc_form = cfg.mcc_space, cfg.mcc_form
        self.mcc_s, self.mcc_g, self.mcc_negative = cfg.mcc_s, cfg.mcc_g, cfg.mcc_negative
        self.mcc_audio_for_visual = cfg.mcc_audio_for_visual
        self.mcc_separate = cfg.mcc_loss == "separate"
        self.mcc_weights = cfg.mcc_weight_audio, cfg.mcc_weight_visual

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> Output:
        text_mask = batch["attention_mask"].bool()
        x_t = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        frames = {m: batch[m] for m in self.widths}
        masks = {m: batch[f"{m}_mask"] for m in self.widths}
        if self.audio_encoder is not None and "audio" in frames:
            frames["audio"], masks["audio"] = self.audio_encoder(frames["audio"], masks["audio"])
        fused = self.fusion({"text": x_t, **frames}, {"text": text_mask, **masks})
        x_k = fused.sequence
        if task == "pretrain":
            x = x_k[torch.arange(x_k.shape[0], device=x_k.device), batch["mask_pos"]]
            prediction = self.pretrain_head(x).squeeze(-1)
        else:
            prediction = self.finetune_head(fused.pooled).squeeze(-1)
        zero = x_t.new_zeros(x_t.shape[0])
        # c_m needs a fused sequence, and in the pooled space the fusion's value maps (zeros where undefined)
        defined = x_k is not None and (self.mcc_space != "pooled" or self.fusion.value_space)
        if defined and self.mcc_space == "released":
            cos = mcc_mod.released_cosines(x_k, frames, {m: masks[m].any(1) for m in self.widths},
                                           self.mcc_audio_for_visual)
        else:
            cos = {m: self.cosine(m, x_k, fused.sequence_mask, frames[m], masks[m]) if defined else zero
                   for m in self.widths}
        inputs = {"text": (x_t, text_mask), **{m: (frames[m], masks[m]) for m in self.widths}}
        modal = {m: h(masked_mean(*inputs[m])).squeeze(-1) for m, h in self.modal_heads.items()}
        c_a, c_v = cos.get("audio", zero), cos.get("visual", zero)
        term, parts = self.mcc_term(c_a, c_v)
        both = "audio" in masks and "visual" in masks
        valid = masks["audio"].any(1) & masks["visual"].any(1) if both else torch.zeros_like(zero, dtype=torch.bool)
        return Output(prediction, c_a, c_v, term, valid, modal, parts)

    def mcc_term(self, c_a: torch.Tensor, c_v: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample MCC: the joint form (Eq. 11-12 over both cosines), or the separate losses of the
        supplement's Fig. 5, λ L^a + α L^v, each Eq. 11 on one cosine (θ_a = θ_v, so y = c_m), returned
        unweighted too (their curves are what Fig. 5 compares)."""
        if not self.mcc_separate:
            return mcc_mod.per_sample(self.mcc_form, c_a, c_v, self.mcc_s, self.mcc_g, self.mcc_negative), {}
        parts = {m: mcc_mod.mcc_paper(c, c, self.mcc_s, self.mcc_g, self.mcc_negative)
                 for m, c in (("audio", c_a), ("visual", c_v))}
        return self.mcc_weights[0] * parts["audio"] + self.mcc_weights[1] * parts["visual"], parts

    def cosine(self, m: str, x_k: torch.Tensor, text_mask: torch.Tensor, frames: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """c_m: `pooled` compares the fused text's masked mean with the masked mean of the last layer's
        LN_m(X0_m) W_V^m; `flatten` compares the fused text with the raw input frames, pairwise and masked
        (not the release's computation: that is `mcc_space = released`, `mcc.released_cosines`)."""
        if self.mcc_space == "flatten":
            return mcc_mod.flatten_cosine(x_k, text_mask, frames, mask)
        return nn.functional.cosine_similarity(masked_mean(x_k, text_mask), self.fusion.pooled_value(m, frames, mask),
                                               dim=-1)
