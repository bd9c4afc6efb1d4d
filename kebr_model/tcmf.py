"""Text-based cross-modal fusion (KEBR paper §3.3, Eq. 5-8).

Layer k: Q = LN(X_{k-1}) W_Q; K_m = LN_m(X0_m) W_K^m; V_m = LN_m(X0_m) W_V^m for each non-verbal
modality m (audio, visual, or any subset, each of its own width d_m);
M_m = softmax(Q K_m^T / sqrt(d_t) + padding mask) V_m; M = LN(X_{k-1}) + sum_m M_m;
X_k = FFN(LN(M)) + M. Single head, as Eq. 6. Padded audio/visual frames never receive attention,
and a modality with no frame at all contributes zero.

The audio/visual keys and values depend only on X0_m and the layer's weights: with shared
weights (the released code's choice) they are computed once for all K passes, not K times.
"""

from __future__ import annotations

import math

import torch
from torch import nn


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


def feed_forward(d_t: int, kind: str = "gelu4", dropout: float = 0.1) -> nn.Module:
    """The layer's FFN: `gelu4` (Linear d -> 4d, GELU, dropout, Linear) or `linear` (one Linear, the released code)."""
    if kind == "linear":
        return nn.Linear(d_t, d_t)
    return nn.Sequential(nn.Linear(d_t, 4 * d_t), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d_t, d_t))


class TCMFLayer(nn.Module):
    """One TCMF layer (Eq. 5-8) over any set of non-verbal modalities, each with its own width."""

    def __init__(self, d_t: int, widths: dict[str, int], ffn: str = "gelu4", dropout: float = 0.1) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(d_t)
        self.query = nn.Linear(d_t, d_t)
        self.modal = nn.ModuleDict({m: CrossModal(d, d_t) for m, d in widths.items()})
        self.norm_ffn = nn.LayerNorm(d_t)
        self.ffn = feed_forward(d_t, ffn, dropout)

    def forward(self, x: torch.Tensor, kv: dict[str, tuple[torch.Tensor, torch.Tensor]],
                masks: dict[str, torch.Tensor], uniform: bool = False) -> torch.Tensor:
        h = self.norm_q(x)
        q = self.query(h)
        m = h
        for name, (k, v) in kv.items():
            m = m + attend(q, k, v, masks[name], uniform)
        return self.ffn(self.norm_ffn(m)) + m


class TCMF(nn.Module):
    """K TCMF layers, with separate (paper) or shared (released code) weights."""

    def __init__(self, d_t: int, widths: dict[str, int], layers: int = 4, shared: bool = False,
                 dropout: float = 0.1, uniform: bool = False, ffn: str = "gelu4") -> None:
        super().__init__()
        self.k = layers
        self.shared = shared
        self.uniform = uniform
        self.widths = dict(widths)
        self.layers = nn.ModuleList([TCMFLayer(d_t, self.widths, ffn, dropout)
                                     for _ in range(1 if shared else layers)])

    @property
    def last(self) -> TCMFLayer:
        return self.layers[-1]

    def forward(self, x_t: torch.Tensor, frames: dict[str, torch.Tensor],
                masks: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (X_K, the last layer's value projections V_m per modality)."""
        cache: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        x = x_t
        for i in range(self.k):
            layer = self.layers[0 if self.shared else i]
            if cache is None or not self.shared:
                cache = {m: layer.modal[m].keys_values(frames[m]) for m in self.widths}
            x = layer(x, cache, masks, self.uniform)
        return x, {m: kv[1] for m, kv in (cache or {}).items()}
