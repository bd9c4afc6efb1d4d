"""The head-kind registry (one file per kind, one line each in `BUILTIN`) and the multi-task loss.

A head kind (`base.HeadKind`) builds the model's pre-training, fine-tuning and unimodal heads; the
`head` key chooses it. `register` adds one at run time (a notebook, a test), installed packages through
the `kebr_model.heads` entry point group: docs/extending/head.md.
"""

from __future__ import annotations

from ..registry import Registry
from .base import ROLES, HeadKind, NoSettings
from .loss import LOSSES, TASKS, task_labels, weighted_loss
from .mlp import MLPHead, head, mlp

#: the toolkit's own head kinds (the first is the default)
BUILTIN: tuple[type[HeadKind], ...] = (MLPHead,)

REGISTRY: Registry[type[HeadKind]] = Registry("head", HeadKind, BUILTIN)
#: name -> class of the head kinds registered so far (REGISTRY.all() also reads installed plugins)
HEADS = REGISTRY.classes
register, names, get = REGISTRY.register, REGISTRY.names, REGISTRY.get


__all__ = ["BUILTIN", "HEADS", "LOSSES", "REGISTRY", "ROLES", "TASKS", "HeadKind", "NoSettings", "get", "head", "mlp",
           "names", "register", "task_labels", "weighted_loss"]
