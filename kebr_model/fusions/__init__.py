"""The fusion registry: one file per fusion, one line each in `BUILTIN`.

Every fusion takes `h: dict[str, (B, T_m, d_m)]` and `mask: dict[str, (B, T_m) bool]` (True = real
frame; modalities "text", "audio", "visual", any subset present) and returns a `FusionOutput`
(pooled (B, out_dim), a fused sequence or None, per-modality clip vectors). `has_sequence` says
whether the MCC can be used: tcmf, mult (with text) and mmml (except `direct_concat`) have a
fused text sequence; sf and tfn fuse clip-level vectors and have none; audio_transformer and audio_cnn
(MMML's audio-only baselines) read the audio alone.

A fusion declares its name, its settings dataclass (its `[train]` keys) and its constructor
(`Fusion.from_settings`); the trainer's config and model are derived from what is registered here.
Installed packages add fusions through the `kebr_model.fusions` entry point group; `register` adds
one at run time (a notebook, a test): docs/extending/fusion.md.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..registry import Registry
from .audio_baselines import AudioCNN, AudioTransformer
from .base import MODALITIES, Fusion, FusionOutput, NoSettings, masked_mean
from .flops import count_flops, count_params
from .mmml import MMML
from .mult import MulT
from .sf import SF
from .tcmf import TCMF
from .tfn import TFN

#: the toolkit's own fusions (the first is the default)
BUILTIN: tuple[type[Fusion], ...] = (TCMF, SF, TFN, MulT, MMML, AudioTransformer, AudioCNN)

REGISTRY: Registry[type[Fusion]] = Registry("fusion", Fusion, BUILTIN)
#: name -> class of the fusions registered so far (REGISTRY.all() also reads installed plugins)
FUSIONS = REGISTRY.classes
register, names, get = REGISTRY.register, REGISTRY.names, REGISTRY.get


def build(name: str, widths: dict[str, int], settings: Any, dropout: float) -> Fusion:
    """Fusion `name` for inputs of these widths, from its settings object (the trainer's path)."""
    return get(name).from_settings(widths, settings, dropout)


def make_fusion(name: str, widths: dict[str, int], **options) -> Fusion:
    """Build fusion `name` for inputs of these widths; `options` are the fusion's own keyword arguments."""
    cls = get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "widths")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"fusion {name!r}: unknown option(s) {unknown}; it takes {', '.join(accepted) or 'none'}")
    return cls(widths, **options)


__all__ = ["BUILTIN", "FUSIONS", "MODALITIES", "REGISTRY", "Fusion", "FusionOutput", "NoSettings", "build",
           "count_flops", "count_params", "get", "make_fusion", "masked_mean", "names", "register"]
