"""The fusion zoo: one module per fusion, one line each in `FUSIONS`.

Every fusion takes `h: dict[str, (B, T_m, d_m)]` and `mask: dict[str, (B, T_m) bool]` (True = real
frame; modalities "text", "audio", "visual", any subset present) and returns a `FusionOutput`
(pooled (B, out_dim), a fused sequence or None, per-modality clip vectors). `has_sequence` says
whether the MCC can be used: tcmf, mult (with text) and mmml (except `direct_concat`) have a
fused text sequence; sf and tfn fuse clip-level vectors and have none; audio_transformer and audio_cnn
(MMML's audio-only baselines) read the audio alone.
"""

from __future__ import annotations

import inspect

from .audio_baselines import AudioCNN, AudioTransformer
from .base import MODALITIES, Fusion, FusionOutput, masked_mean
from .flops import count_flops, count_params
from .mmml import MMML
from .mult import MulT
from .sf import SF
from .tcmf import TCMF
from .tfn import TFN

FUSIONS: dict[str, type[Fusion]] = {
    "tcmf": TCMF,
    "sf": SF,
    "tfn": TFN,
    "mult": MulT,
    "mmml": MMML,
    "audio_transformer": AudioTransformer,
    "audio_cnn": AudioCNN,
}


def make_fusion(name: str, widths: dict[str, int], **options) -> Fusion:
    """Build fusion `name` for inputs of these widths; `options` are the fusion's own keyword arguments."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; choose one of {', '.join(FUSIONS)}")
    accepted = [p for p in inspect.signature(FUSIONS[name].__init__).parameters if p not in ("self", "widths")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"fusion {name!r}: unknown option(s) {unknown}; it takes {', '.join(accepted) or 'none'}")
    return FUSIONS[name](widths, **options)


__all__ = ["FUSIONS", "MODALITIES", "Fusion", "FusionOutput", "count_flops", "count_params", "make_fusion",
           "masked_mean"]
