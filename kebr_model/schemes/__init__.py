"""The training-scheme registry: one file per scheme, one line each in `BUILTIN`.

A scheme (`base.Scheme`) tells the trainer, per epoch, the phase, each task's loss weight, whether
the MCC trains, what is frozen and whether validation selects the model. `register` adds one at run
time (a notebook, a test), installed packages through the `kebr_model.schemes` entry point group:
docs/extending/scheme.md.
"""

from __future__ import annotations

from ..registry import Registry
from .base import NoSettings, Scheme
from .joint import Joint
from .single import Single
from .two_step import TwoStep

#: the toolkit's own schemes (the first is the default)
BUILTIN: tuple[type[Scheme], ...] = (Single, Joint, TwoStep)

REGISTRY: Registry[type[Scheme]] = Registry("scheme", Scheme, BUILTIN)
#: name -> class of the schemes registered so far (REGISTRY.all() also reads installed plugins)
SCHEMES = REGISTRY.classes
register, names, get = REGISTRY.register, REGISTRY.names, REGISTRY.get


__all__ = ["BUILTIN", "REGISTRY", "SCHEMES", "NoSettings", "Scheme", "get", "names", "register"]
