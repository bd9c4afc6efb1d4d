"""The fusion registry: one file per fusion, one line each in `BUILTIN`.

Every fusion takes `h: dict[str, (B, T_m, d_m)]` and `mask: dict[str, (B, T_m) bool]` (True = real
frame; modalities "text", "audio", "visual", any subset present) and returns a `FusionOutput`
(pooled (B, out_dim), a fused sequence or None, per-modality clip vectors). `has_sequence` says
whether the MCC can be used: tcmf, mult (with text) and mmml (except `direct_concat`) have a
fused text sequence; sf and tfn fuse clip-level vectors and have none; audio_transformer and audio_cnn
(MMML's audio-only baselines) read the audio alone.

A fusion declares its name, its settings dataclass (its `[train]` keys) and its constructor
(`Fusion.from_settings`); the trainer's config and model are derived from what is registered here.
`register` adds one at run time (a plugin, a test): docs/extending/fusion.md.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from kebr_data.errors import ConfigError

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

FUSIONS: dict[str, type[Fusion]] = {cls.name: cls for cls in BUILTIN}


def register(cls: type[Fusion]) -> type[Fusion]:
    """Add a fusion class (usable as a decorator). Its name must be new and an identifier, and its
    settings' keys must not be another fusion's (every fusion's keys are `[train]` keys)."""
    if not (isinstance(cls, type) and issubclass(cls, Fusion)):
        raise ConfigError(f"{cls!r} is not a kebr_model.fusions.Fusion subclass")
    if not cls.name.isidentifier():
        raise ConfigError(f"fusion name {cls.name!r} is not an identifier")
    if FUSIONS.get(cls.name, cls) is not cls:
        raise ConfigError(f"fusion {cls.name} is defined twice, by {FUSIONS[cls.name].__module__} and "
                          f"{cls.__module__}: rename one (its `name`)")
    taken = {f.name: other.name for other in FUSIONS.values() if other is not cls
             for f in dataclasses.fields(other.Settings)}
    clash = next((f.name for f in dataclasses.fields(cls.Settings) if f.name in taken), None)
    if clash:
        raise ConfigError(f"fusion {cls.name}'s setting {clash} is already fusion {taken[clash]}'s: rename it")
    FUSIONS[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    """The registered fusions' names, built-ins first."""
    return tuple(FUSIONS)


def get(name: str) -> type[Fusion]:
    """The fusion class registered as `name`."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; choose one of {', '.join(FUSIONS)}")
    return FUSIONS[name]


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


__all__ = ["BUILTIN", "FUSIONS", "MODALITIES", "Fusion", "FusionOutput", "NoSettings", "build", "count_flops",
           "count_params", "get", "make_fusion", "masked_mean", "names", "register"]
