"""The model: a Hugging Face text encoder, a fusion of the text with the non-verbal modalities
(KEBR's TCMF by default, or any fusion of `kebr_model.fusions`, built by `make_fusion` from the
modalities' widths), a pre-training head on the [MASK] position, a fine-tuning head on the fused
vector, and optional unimodal heads (boosting-msa, MMML) on each modality's clip vector. With an
`audio_encoder` (kebr_model.audio_encoder), the batch's audio is a raw waveform that it turns into frames
inside the graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import fusions
from . import mcc as mcc_mod
from .fusions.base import masked_mean
from .heads import mlp
from .tcmf import TCMF


@dataclass
class Output:
    prediction: torch.Tensor  # (B,)
    c_a: torch.Tensor         # (B,) cosine of fused text and audio (zeros without audio)
    c_v: torch.Tensor         # (B,) cosine of fused text and visual (zeros without visual)
    mcc: torch.Tensor         # (B,) per-sample MCC term
    mcc_valid: torch.Tensor   # (B,) samples that have both audio and visual frames (the term is defined)
    modal: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> (B,) unimodal heads' predictions
    mcc_parts: dict[str, torch.Tensor] = field(default_factory=dict)  # separate MCC: m -> (B,) unweighted L^m


HEAD_DROPOUT_AT = ("input", "hidden")
POOLS = ("masked", "all")


def head(d: int, hidden: int = 256, dropout: float = 0.0, layers: int = 2, dropout_at: str = "input") -> nn.Module:
    """MLP d -> 256 -> 1 with ReLU (Eq. 15; `layers` = 3: MMML's three fully connected layers) with
    dropout on its input (`dropout_at = input`) or between the last ReLU and the last Linear (`hidden`:
    the release, fc2(dropout(relu(fc1(x)))) at models.py:150, 241, with 0.5). The parameters keep their
    names either way (dropout and ReLU hold none), so checkpoints load across the two."""
    if dropout_at not in HEAD_DROPOUT_AT:
        raise ValueError(f"unknown head dropout position {dropout_at!r}; choose one of {', '.join(HEAD_DROPOUT_AT)}")
    mods = list(mlp(d, hidden, layers))
    if dropout_at == "input" or layers < 2:
        return nn.Sequential(nn.Dropout(dropout), *mods)
    mods[-2] = nn.Sequential(mods[-2], nn.Dropout(dropout))
    return nn.Sequential(nn.Identity(), *mods)


def make_fusion(cfg: Any, d_t: int, widths: dict[str, int]) -> nn.Module:
    """The fusion module for `widths` (modality -> frame width). KEBR's TCMF is called as
    fusion(x_t, frames, masks) and returns (fused text, per-modality value sequences); any other
    choice is a `kebr_model.fusions` module over {"text": x_t, **frames}, returning a FusionOutput."""
    get = (lambda k, d: getattr(cfg, k, d)) if cfg is not None else (lambda k, d: d)
    name = get("fusion", "tcmf")
    if name == "tcmf" and not get("per_modality_query", False):
        return TCMF(d_t, widths, get("layers", 4), get("shared_layers", False), get("dropout", 0.1),
                    uniform=not get("use_tcmf", True), ffn=get("ffn", "gelu4"),
                    attention=get("tcmf_attention", "paper"), residual=get("tcmf_residual", "ln"),
                    embed=get("tcmf_embed_dim", 256))
    options: dict[str, Any] = {
        "tcmf": {"layers": get("layers", 4), "shared": get("shared_layers", False), "dropout": get("dropout", 0.1),
                 "uniform": not get("use_tcmf", True), "per_modality_query": get("per_modality_query", False),
                 "ffn": get("ffn", "gelu4")},
        "mult": {"dropout": get("dropout", 0.1), "d": get("mult_d", 32), "layers": get("mult_layers", 2)},
        "mmml": {"dropout": get("dropout", 0.1), "variant": get("mmml_variant", "fused"), "d": get("mmml_d", 64),
                 "heads": get("mmml_heads", 4), "layers": get("mmml_layers", 5)},
        "tfn": {"project": get("tfn_project", 16) or None},
        "audio_transformer": {"dropout": get("dropout", 0.1), "d": get("audio_transformer_d", 64),
                              "layers": get("audio_transformer_layers", 2)},
        "audio_cnn": {"channels": get("audio_cnn_channels", 8)},
    }.get(name, {})
    return fusions.make_fusion(name, {"text": d_t, **widths}, **options)


class KEBR(nn.Module):
    def __init__(self, encoder: nn.Module, widths: dict[str, int], cfg: Any = None,
                 audio_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.audio_encoder = audio_encoder
        get = (lambda k, d: getattr(cfg, k, d)) if cfg is not None else (lambda k, d: d)
        if get("mcc_space", "pooled") not in mcc_mod.SPACES:
            raise ValueError(f"mcc.space must be one of {mcc_mod.SPACES}")
        self.encoder = encoder
        d_t = encoder.config.hidden_size
        self.widths = dict(widths)
        self.fusion = make_fusion(cfg, d_t, self.widths)
        self.zoo = isinstance(self.fusion, fusions.Fusion)
        fused_dim = self.fusion.out_dim if self.zoo else d_t
        at = get("head_dropout_at", "input")
        self.pretrain_head = head(d_t, dropout=get("head_dropout", 0.0), dropout_at=at)
        self.finetune_head = head(fused_dim, dropout=get("head_dropout", 0.0), layers=get("head_layers", 2),
                                  dropout_at=at)
        self.pool = get("finetune_pool", "masked")
        if self.pool not in POOLS:
            raise ValueError(f"finetune_pool must be one of {POOLS}")
        alphas = cfg.alphas if cfg is not None and hasattr(cfg, "alphas") else {}
        modal_widths = {"text": d_t, **self.widths}
        self.modal_heads = nn.ModuleDict({m: head(modal_widths[m], layers=get("modal_head_layers", 2))
                                          for m in ("text", "audio", "visual")
                                          if alphas.get(m, 0.0) > 0 and m in modal_widths})
        self.mcc_space, self.mcc_form = get("mcc_space", "pooled"), get("mcc_form", "paper")
        self.mcc_s, self.mcc_g, self.mcc_negative = get("mcc_s", 1.0), get("mcc_g", 0.2), get("mcc_negative", "constant")
        self.mcc_audio_for_visual = get("mcc_audio_for_visual", False)
        self.mcc_separate = get("mcc_loss", "joint") == "separate"
        self.mcc_weights = get("mcc_weight_audio", 1.0), get("mcc_weight_visual", 1.0)

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> Output:
        text_mask = batch["attention_mask"].bool()
        x_t = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        frames = {m: batch[m] for m in self.widths}
        masks = {m: batch[f"{m}_mask"] for m in self.widths}
        if self.audio_encoder is not None and "audio" in frames:
            frames["audio"], masks["audio"] = self.audio_encoder(frames["audio"], masks["audio"])
        if self.zoo:
            fused = self.fusion({"text": x_t, **frames}, {"text": text_mask, **masks})
            x_k, pooled = fused.sequence, fused.pooled
        else:
            x_k, _ = self.fusion(x_t, frames, masks)
            # `all`: the release's torch.mean over every position, padding included (models.py:248)
            pooled = x_k.mean(1) if self.pool == "all" else mcc_mod.masked_mean(x_k, text_mask)
        if task == "pretrain":
            x = x_k[torch.arange(x_k.shape[0], device=x_k.device), batch["mask_pos"]]
            prediction = self.pretrain_head(x).squeeze(-1)
        else:
            prediction = self.finetune_head(pooled).squeeze(-1)
        zero = x_t.new_zeros(x_t.shape[0])
        seq_mask = fused.sequence_mask if self.zoo else text_mask
        # c_m needs a fused sequence, and in the pooled space TCMF's value maps (zeros where undefined)
        defined = x_k is not None and (self.mcc_space != "pooled" or not self.zoo or hasattr(self.fusion, "tcmf"))
        if defined and self.mcc_space == "released":
            cos = mcc_mod.released_cosines(x_k, frames, {m: masks[m].any(1) for m in self.widths},
                                           self.mcc_audio_for_visual)
        else:
            cos = {m: self.cosine(m, x_k, seq_mask, frames[m], masks[m]) if defined else zero for m in self.widths}
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
        p = mcc_mod.masked_mean(x_k, text_mask)
        tcmf = self.fusion.tcmf if self.zoo else self.fusion
        return nn.functional.cosine_similarity(p, tcmf.last.modal[m].pooled_value(frames, mask), dim=-1)
