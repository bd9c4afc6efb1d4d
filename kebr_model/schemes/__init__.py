"""The training-scheme registry: one file per scheme, one line each in `BUILTIN`.

A scheme (`base.Scheme`) tells the trainer, per epoch, the phase, each task's loss weight, whether
the MCC trains, what is frozen and whether validation selects the model. `register` adds one at run
time (a plugin, a test): docs/extending/scheme.md.
"""

from __future__ import annotations

from kebr_data.errors import ConfigError

from .base import NoSettings, Scheme
from .joint import Joint
from .single import Single
from .two_step import TwoStep

#: the toolkit's own schemes (the first is the default)
BUILTIN: tuple[type[Scheme], ...] = (Single, Joint, TwoStep)

SCHEMES: dict[str, type[Scheme]] = {cls.name: cls for cls in BUILTIN}


def register(cls: type[Scheme]) -> type[Scheme]:
    """Add a scheme class (usable as a decorator); its name must be new."""
    if not (isinstance(cls, type) and issubclass(cls, Scheme)) or not cls.name:
        raise ConfigError(f"{cls!r} is not a named kebr_model.schemes.Scheme subclass")
    if SCHEMES.get(cls.name, cls) is not cls:
        raise ConfigError(f"scheme {cls.name} is defined twice, by {SCHEMES[cls.name].__module__} and "
                          f"{cls.__module__}: rename one (its `name`)")
    SCHEMES[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    """The registered schemes' names, built-ins first."""
    return tuple(SCHEMES)


def get(name: str) -> type[Scheme]:
    """The scheme class registered as `name`."""
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEMES)}")
    return SCHEMES[name]


__all__ = ["BUILTIN", "SCHEMES", "NoSettings", "Scheme", "get", "names", "register"]
