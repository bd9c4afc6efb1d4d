"""TCMF, text-based cross-modal fusion (KEBR paper §3.3, Eq. 5-8), the `tcmf` fusion.

Layer k: Q = LN(X_{k-1}) W_Q; K_m = LN_m(X0_m) W_K^m; V_m = LN_m(X0_m) W_V^m for each non-verbal
modality m (audio, visual, or any subset, each of its own width d_m);
M_m = softmax(Q K_m^T / sqrt(d_t) + padding mask) V_m; M = LN(X_{k-1}) + sum_m M_m;
X_k = FFN(LN(M)) + M. Single head, as Eq. 6. Padded audio/visual frames never receive attention,
and a modality with no frame at all (or absent from the input) contributes zero.

The audio/visual keys and values depend only on X0_m and the layer's weights: with shared
weights (the released code's choice) they are computed once for all K passes, not K times.

Options that reproduce the release (aoqzhu/KEBR models.py): `attention = "released"`
(`ReleasedCrossModal`, models.py:66-91), `residual = "raw"` (M = X_{k-1} + sum_m M_m, models.py:105),
`ffn = "linear-dropout"` (X_k = Dropout(Linear(LN(M))) + M, models.py:106-109) and `pool = "all"`
(the fine-tuning head reads the mean over every position, padding included, models.py:248).
`per_modality_query` is SKESL's form (its Eq. 2): one query map W_Q^m per non-verbal modality instead
of KEBR's single W_Q (the layer's `query` serves the first modality, `extra_queries` the others).

The fused sequence is X_K over the text tokens (usable by the MCC); pooled is its masked mean (the
fine-tuning head's input); `extras` holds the last layer's value projections per modality (`<m>_values`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from kebr_data.config import setting

from .base import Fusion, FusionOutput, masked_mean


class CrossModal(nn.Module):
    """One modality's LN_m, W_K^m and W_V^m (d_m -> d_t)."""

    def __init__(self, d_m: int, d_t: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_m)
        self.key = nn.Linear(d_m, d_t)
        self.value = nn.Linear(d_m, d_t)

    def keys_values(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(x0)
        return self.key(h), self.value(h)

    def pooled_value(self, x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """masked_mean(LN_m(X0) W_V^m) computed as (gamma * masked_mean(x̂) + beta) W_V^m: the mean
        commutes with the affine maps, and x̂ (the normalised input) needs no gradient, so the
        frames are pooled once, without autograd, and projected once (B × d_t, not B × L × d_t)."""
        with torch.no_grad():
            xhat = nn.functional.layer_norm(x0, x0.shape[-1:], eps=self.norm.eps)
            m = mask.to(xhat.dtype).unsqueeze(-1)
            mean = (xhat * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.value(mean * self.norm.weight + self.norm.bias)


class ReleasedCrossModal(CrossModal):
    """The release's CrossModalAttention (models.py:66-91), one per modality: its own LN of the text and
    query map d_t -> e, LN_m, W_K^m and W_V^m d_m -> e, scores scaled by e^-0.5 with no padding mask
    (padded frames are attended), and an output map e -> d_t."""

    def __init__(self, d_m: int, d_t: int, embed: int = 256) -> None:
        super().__init__(d_m, embed)
        self.text_norm = nn.LayerNorm(d_t)
        self.text_query = nn.Linear(d_t, embed)
        self.out = nn.Linear(embed, d_t)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, uniform: bool = False) -> torch.Tensor:
        """out(softmax(LN(x) W_Q K^T e^-0.5) V) over every frame, padding included (`uniform`: equal weights)."""
        if uniform:
            weights = x.new_full((x.shape[0], x.shape[1], k.shape[1]), 1.0 / k.shape[1])
        else:
            q = self.text_query(self.text_norm(x))
            weights = torch.softmax(q @ k.transpose(1, 2) * k.shape[-1] ** -0.5, dim=-1)
        return self.out(weights @ v)

    def pooled_value(self, x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pooled value projection, mapped to the text width by the output map (affine: it commutes
        with the mean)."""
        return self.out(super().pooled_value(x0, mask))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
           uniform: bool = False) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + mask) V over valid frames; zero for samples with no valid frame.

    `uniform` (the no-TCMF ablation) ignores the text query: every valid frame gets equal weight.
    """
    if uniform:
        scores = torch.zeros(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype, device=q.device)
    else:
        scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    any_valid = mask.any(dim=1)[:, None, None]
    weights = torch.where(any_valid, weights, torch.zeros_like(weights))
    return weights @ v


FFNS = ("gelu4", "linear", "linear-dropout")
ATTENTIONS = ("paper", "released")
RESIDUALS = ("ln", "raw")


def feed_forward(d_t: int, kind: str = "gelu4", dropout: float = 0.1) -> nn.Module:
    """The layer's FFN: `gelu4` (Linear d -> 4d, GELU, dropout, Linear), `linear` (one Linear) or
    `linear-dropout` (one Linear, then dropout: the release, models.py:107-108, with dropout 0.5)."""
    if kind == "linear":
        return nn.Linear(d_t, d_t)
    if kind == "linear-dropout":
        return nn.Sequential(nn.Linear(d_t, d_t), nn.Dropout(dropout))
    return nn.Sequential(nn.Linear(d_t, 4 * d_t), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d_t, d_t))


POOLS = ("masked", "all")


class TCMFLayer(nn.Module):
    """One TCMF layer (Eq. 5-8) over any set of non-verbal modalities, each with its own width.

    `attention`: `paper` (one query map, sqrt(d_t) scaling, padding masked) or `released`
    (`ReleasedCrossModal`, `embed` wide); `residual`: `ln` (M = LN(X) + sum_m M_m, Eq. 7) or `raw`
    (M = X + sum_m M_m, the release, models.py:105); `per_modality_query`: SKESL's W_Q^m (`query` for
    the first modality, `extra_queries[m]` for the others)."""

    def __init__(self, d_t: int, widths: dict[str, int], ffn: str = "gelu4", dropout: float = 0.1,
                 attention: str = "paper", residual: str = "ln", embed: int = 256,
                 per_modality_query: bool = False) -> None:
        super().__init__()
        for name, value, choices in (("attention", attention, ATTENTIONS), ("residual", residual, RESIDUALS),
                                     ("ffn", ffn, FFNS)):
            if value not in choices:
                raise ValueError(f"unknown TCMF {name} {value!r}; choose one of {', '.join(choices)}")
        self.released = attention == "released"
        if per_modality_query and self.released:
            raise ValueError("TCMF's per-modality queries are a form of the paper's attention, not the release's")
        self.raw_residual = residual == "raw"
        self.uses_norm_q = not (self.released and self.raw_residual)  # LN(X) feeds the query or the residual
        if self.uses_norm_q:
            self.norm_q = nn.LayerNorm(d_t)
        if not self.released:
            self.query = nn.Linear(d_t, d_t)
        self.modal = nn.ModuleDict({m: ReleasedCrossModal(d, d_t, embed) if self.released else CrossModal(d, d_t)
                                    for m, d in widths.items()})
        self.norm_ffn = nn.LayerNorm(d_t)
        self.ffn = feed_forward(d_t, ffn, dropout)
        self.extra_queries = nn.ModuleDict({m: nn.Linear(d_t, d_t) for m in list(widths)[1:]}
                                           if per_modality_query else {})

    def forward(self, x: torch.Tensor, kv: dict[str, tuple[torch.Tensor, torch.Tensor]],
                masks: dict[str, torch.Tensor], uniform: bool = False) -> torch.Tensor:
        h = self.norm_q(x) if self.uses_norm_q else x
        q = None if self.released else self.query(h)
        m = x if self.raw_residual else h
        for name, (k, v) in kv.items():
            if q is None:
                m = m + self.modal[name].attend(x, k, v, uniform)
            else:
                query = self.extra_queries[name](h) if name in self.extra_queries else q
                m = m + attend(query, k, v, masks[name], uniform)
        return self.ffn(self.norm_ffn(m)) + m


@dataclass
class TCMFSettings:
    """The `tcmf` fusion's options (`[train]` keys)."""

    layers: int = setting(4, "TCMF layers K (paper: 4)", min=1)
    shared_layers: bool = setting(False, "one set of TCMF weights for all K passes (the release, models.py:116-121)")
    ffn: Literal["gelu4", "linear", "linear-dropout"] = setting(
        "gelu4", "TCMF feed-forward: gelu4 (Linear d->4d, GELU, dropout, Linear) | linear (one Linear d->d) | "
                 "linear-dropout (one Linear, then dropout: the release, models.py:107-108, dropout 0.5)")
    tcmf_attention: Literal["paper", "released"] = setting(
        "paper", "paper (one query map d_t->d_t, sqrt(d_t) scaling, padding masked) | released (models.py:66-91: "
                 "per modality its own LN(text) and query map to tcmf_embed_dim, e^-0.5 scaling, no padding "
                 "mask, an output map back to d_t)")
    tcmf_embed_dim: int = setting(256, "tcmf_attention = released: the attention width e (the release: 256)", min=1)
    tcmf_residual: Literal["ln", "raw"] = setting(
        "ln", "ln (M = LN(X) + sum M_m, Eq. 7) | raw (M = X + sum M_m, the release, models.py:105)")
    finetune_pool: Literal["masked", "all"] = setting(
        "masked", "fine-tuning head's input: masked (mean over the text tokens) | all (mean over every position, "
                  "padding included, the release, models.py:248; fixed with pad_to_max)")
    per_modality_query: bool = setting(False, "tcmf: one query map per non-verbal modality (SKESL Eq. 2)")
    use_tcmf: bool = setting(True, "ablation C3 when false: same layers, attention not driven by the text")

    def released_parts(self) -> list[str]:
        """The options set to the release's form, which only the plain (single-query) TCMF has."""
        return [k for k, v in (("tcmf_attention", self.tcmf_attention == "released"),
                               ("tcmf_residual", self.tcmf_residual == "raw"),
                               ("finetune_pool", self.finetune_pool == "all")) if v]

    def problems(self) -> list[str]:
        """Combinations of these options that cannot be built."""
        parts = self.released_parts()
        if parts and self.per_modality_query:
            return [f"{parts[0]} = {getattr(self, parts[0])!r} is an option of the plain TCMF: set fusion = 'tcmf' "
                    "and per_modality_query = false"]
        return []


class TCMF(Fusion):
    """K TCMF layers, with separate (paper) or shared (released code) weights, over the text and any
    subset of the non-verbal modalities of `widths`."""

    name = "tcmf"
    has_sequence = True
    pretrains = True
    value_space = True
    Settings = TCMFSettings

    def __init__(self, widths: dict[str, int], layers: int = 4, shared: bool = False, dropout: float = 0.1,
                 uniform: bool = False, ffn: str = "gelu4", attention: str = "paper", residual: str = "ln",
                 embed: int = 256, per_modality_query: bool = False, pool: str = "masked") -> None:
        if "text" not in widths:
            raise ValueError("fusion 'tcmf' is text-centred: widths must include 'text'")
        if pool not in POOLS:
            raise ValueError(f"unknown TCMF pool {pool!r}; choose one of {', '.join(POOLS)}")
        super().__init__(widths)
        d_t = self.widths["text"]
        self.side = {m: d for m, d in self.widths.items() if m != "text"}
        self.k, self.shared, self.uniform, self.pool = layers, shared, uniform, pool
        self.per_modality_query = per_modality_query
        n = 1 if shared else layers
        stack = [TCMFLayer(d_t, self.side, ffn, dropout, attention, residual, embed) for _ in range(n)]
        if per_modality_query:  # drawn after single-query layers, as before issue #26: a seed keeps its weights
            stack = [TCMFLayer(d_t, self.side, ffn, dropout, per_modality_query=True) for _ in range(n)]
        self.layers = nn.ModuleList(stack)
        self.out_dim = d_t

    @classmethod
    def from_settings(cls, widths: dict[str, int], settings: TCMFSettings, dropout: float) -> "TCMF":
        return cls(widths, settings.layers, settings.shared_layers, dropout, uniform=not settings.use_tcmf,
                   ffn=settings.ffn, attention=settings.tcmf_attention, residual=settings.tcmf_residual,
                   embed=settings.tcmf_embed_dim, per_modality_query=settings.per_modality_query,
                   pool=settings.finetune_pool)

    @property
    def last(self) -> TCMFLayer:
        return self.layers[-1]

    def fuse(self, x_t: torch.Tensor, frames: dict[str, torch.Tensor],
             masks: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(X_K, the last layer's value projections V_m per modality) for the text X_0 = `x_t` and every
        non-verbal modality's frames and (bool) masks."""
        cache: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        x = x_t
        for i in range(self.k):
            layer = self.layers[0 if self.shared else i]
            if cache is None or not self.shared:
                cache = {m: layer.modal[m].keys_values(frames[m]) for m in self.side}
            x = layer(x, cache, masks, self.uniform)
        return x, {m: kv[1] for m, kv in (cache or {}).items()}

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        if "text" not in h:
            raise ValueError("fusion 'tcmf' needs the text modality in its input")
        b, ref = h["text"].shape[0], h["text"]
        frames, masks = {}, {}
        for m, d in self.side.items():
            if m in h:
                frames[m], masks[m] = h[m], mask[m].bool()
            else:
                frames[m] = ref.new_zeros(b, 1, d)
                masks[m] = torch.zeros(b, 1, dtype=torch.bool, device=ref.device)
        t_mask = mask["text"].bool()
        x_k, values = self.fuse(h["text"], frames, masks)
        pooled = x_k.mean(1) if self.pool == "all" else masked_mean(x_k, t_mask)
        return FusionOutput(pooled, x_k, self.per_modality(h, mask), t_mask,
                            {f"{m}_values": v for m, v in values.items()})

    def pooled_value(self, m: str, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """masked_mean(LN_m(X0_m) W_V^m) of the last layer: what the pooled MCC compares the fused text with."""
        return self.last.modal[m].pooled_value(frames, mask)
