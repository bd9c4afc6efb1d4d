"""The head-kind registry (one file per kind, one line each in `BUILTIN`) and the multi-task loss.

A head kind (`base.HeadKind`) builds the model's pre-training, fine-tuning and unimodal heads; the
`head` key chooses it. `register` adds one at run time (a plugin, a test): docs/extending/head.md.
"""

from __future__ import annotations

from kebr_data.errors import ConfigError

from .base import ROLES, HeadKind, NoSettings
from .loss import LOSSES, TASKS, task_labels, weighted_loss
from .mlp import MLPHead, head, mlp

#: the toolkit's own head kinds (the first is the default)
BUILTIN: tuple[type[HeadKind], ...] = (MLPHead,)

HEADS: dict[str, type[HeadKind]] = {cls.name: cls for cls in BUILTIN}


def register(cls: type[HeadKind]) -> type[HeadKind]:
    """Add a head kind (usable as a decorator); its name must be new."""
    if not (isinstance(cls, type) and issubclass(cls, HeadKind)) or not cls.name:
        raise ConfigError(f"{cls!r} is not a named kebr_model.heads.HeadKind subclass")
    if HEADS.get(cls.name, cls) is not cls:
        raise ConfigError(f"head kind {cls.name} is defined twice, by {HEADS[cls.name].__module__} and "
                          f"{cls.__module__}: rename one (its `name`)")
    HEADS[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    """The registered head kinds' names, built-ins first."""
    return tuple(HEADS)


def get(name: str) -> type[HeadKind]:
    """The head kind registered as `name`."""
    if name not in HEADS:
        raise ValueError(f"unknown head kind {name!r}; choose one of {', '.join(HEADS)}")
    return HEADS[name]


__all__ = ["BUILTIN", "HEADS", "LOSSES", "ROLES", "TASKS", "HeadKind", "NoSettings", "get", "head", "mlp", "names",
           "register", "task_labels", "weighted_loss"]
