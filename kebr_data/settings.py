"""What a config key is: `setting` (default, help, range, runtime flag, check), `one_of` and `did_you_mean`
for names in a registry, a section's runtime keys and the stable content hash.

The bottom layer of every settings dataclass (stages, ASR engines, the run, the trainer): it imports only
`kebr_data.errors`, so stages and engines declare their settings without importing `kebr_data.config`,
which loads files and overrides above them.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import json
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

Check = Callable[[Any], str | None]


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            runtime: bool = False, check: Check | None = None, hash_default: bool = True) -> Any:
    """A config key: its default, one line of help, an optional range, whether it is runtime-only
    (how a stage runs, not what it writes: left out of the stage's config hash), and an optional check
    of what a type cannot say (a name in a registry: `one_of`; a pair in order) returning the problem
    or None. All run when the key is set, so a bad value is refused before run.json saves it, whether
    or not its stage runs now. `hash_default=False` is for a key added to a stage whose default keeps
    the stage's output as it was: at its default it stays out of the config hash, so folders made before
    the key existed stay current."""
    meta = {"help": help, "min": min, "max": max, "runtime": runtime, "check": check, "hash_default": hash_default}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def did_you_mean(word: str, choices: list[str]) -> str:
    """` (did you mean X?)` for the closest of `choices`, or "" when none is close."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def one_of(names: Callable[[], Iterable[str]]) -> Check:
    """A check that a value (or each item of a list) is one of `names()`, read when the key is set (so
    stages, executors or engines registered by then count), with "did you mean"."""
    def check(value: Any) -> str | None:
        allowed = list(names())
        bad = next((v for v in (value if isinstance(value, list) else [value]) if v not in allowed), None)
        return None if bad is None else f"must be one of {', '.join(allowed)}, got {bad!r}{did_you_mean(bad, allowed)}"
    return check


@dataclass
class NoSettings:
    """A stage or engine without options."""


def typed(cls: type, values: Any) -> Any:
    """`values` as an instance of the settings dataclass `cls`: an instance is kept, a resolved config section
    (a dict, already checked by `kebr_data.config`) is typed once here."""
    return values if dataclasses.is_dataclass(values) else cls(**values)


def _copy(f: dataclasses.Field) -> dataclasses.Field:
    """A fresh copy of a settings field (a Field belongs to the one dataclass that processed it)."""
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
    return dataclasses.field(default=f.default, metadata=f.metadata)


@functools.lru_cache(maxsize=16)
def composed(section: str, base: type, parts: tuple[tuple[str, type], ...]) -> type:
    """A subclass of the settings dataclass `base` with the fields of each part ((owner, dataclass) pairs, e.g.
    the asr stage's engines) added in order, so one config section holds the options of things registered
    into it. A key two owners declare must be one field (shared through a common base class); declared
    differently, it is refused naming both."""
    fields: dict[str, tuple[Any, dataclasses.Field, str]] = {
        f.name: (hint, f, f"the {section} section") for f in dataclasses.fields(base)
        for hint in [typing.get_type_hints(base)[f.name]]}
    for owner, part in parts:
        hints = typing.get_type_hints(part)
        for f in dataclasses.fields(part):
            seen = fields.setdefault(f.name, (hints[f.name], f, owner))
            if (seen[0], seen[1].default) != (hints[f.name], f.default):
                raise ConfigError(f"{section}.{f.name} is declared differently by {seen[2]} and {owner}: rename "
                                  "the plugin's option")
    extra = [(name, hint, _copy(f)) for name, (hint, f, _) in fields.items() if name not in base.__dataclass_fields__]
    return dataclasses.make_dataclass(base.__name__, extra, bases=(base,),
                                      namespace={"__doc__": base.__doc__, "__module__": base.__module__})


def runtime_keys(settings: type) -> tuple[str, ...]:
    """The keys of a section that do not change what a stage writes."""
    return tuple(f.name for f in dataclasses.fields(settings) if f.metadata.get("runtime"))


def content_hash(obj: Any) -> str:
    """Short, stable hash of JSON-serialisable content."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclasses.dataclass
class NoOptions:
    """The options of a plugin that has none."""


def option(default: Any, help: str, *, flag: str | None = None, min: float | None = None,
           max: float | None = None) -> Any:
    """A plugin option: `setting` (default, one line of help, range) whose command-line flag is
    `--<flag>` (default: the field's name with dashes)."""
    f = setting(default, help, min=min, max=max)
    if flag:
        f.metadata = types.MappingProxyType({**f.metadata, "flag": flag})
    return f


def flag_of(f: dataclasses.Field) -> str:
    """The flag of an option field, without its dashes."""
    return f.metadata.get("flag") or f.name.replace("_", "-")
