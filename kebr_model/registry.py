"""One registry type for the trainer's pluggable parts (fusions, head kinds, training schemes), as
`kebr_data.stages` is for the data side's stages.

A registry holds the toolkit's own classes (`builtin`, the first is the default), then those of installed
packages' entry points (group `kebr_model.<kind>s`, `name = "package.module:Class"`), then those added by
`register` at run time (tests, notebooks). A name is never taken twice (a duplicate is refused naming
both), and a plugin that fails to load is reported once on stderr and left out, so the built-ins still run.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from kebr_data.display import one_line, printable
from kebr_data.errors import ConfigError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Named classes of one kind (subclasses of `base`, each with a `name` attribute)."""

    def __init__(self, kind: str, base: type, builtin: tuple[T, ...]) -> None:
        self.kind, self.base, self.group = kind, base, f"kebr_model.{kind}s"
        self.classes: dict[str, T] = {}
        for cls in builtin:
            self.register(cls)
        self._plugins_read = False

    def register(self, cls: T) -> T:
        """Add a class (usable as a decorator); its name must be a new identifier-like word."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)) or not getattr(cls, "name", ""):
            raise ConfigError(f"{cls!r} is not a named {self.base.__module__}.{self.base.__qualname__} subclass")
        if not cls.name.replace("-", "_").isidentifier():
            raise ConfigError(f"{self.kind} name {cls.name!r} is not an identifier")
        if self.classes.get(cls.name, cls) is not cls:
            raise ConfigError(f"{self.kind} {cls.name} is defined twice, by {self.classes[cls.name].__module__} and "
                              f"{cls.__module__}: rename one (its `name`)")
        self.classes[cls.name] = cls
        return cls

    def _read_plugins(self) -> None:
        """Register the entry points of group `kebr_model.<kind>s` once; a broken one is reported and left out."""
        if self._plugins_read:
            return
        self._plugins_read = True
        for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
            try:
                self.register(ep.load())
            except Exception as exc:  # noqa: BLE001 (a plugin's import can raise anything; the built-ins must run)
                sys.stderr.write(f"warning: the {self.group} plugin {printable(f'{ep.name} = {ep.value}')} cannot be "
                                 f"loaded ({type(exc).__name__}: {one_line(str(exc))}); going on without it\n")

    def all(self) -> dict[str, T]:
        """Every registered class by name: built-ins first, then plugins, then run-time registrations."""
        self._read_plugins()
        return self.classes

    def names(self) -> tuple[str, ...]:
        return tuple(self.all())

    def get(self, name: str) -> T:
        """The class registered as `name`."""
        if name not in self.all():
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.classes)}")
        return self.classes[name]
