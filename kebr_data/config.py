"""Configuration: typed defaults, then `--config` TOML files, then `--set key=value` overrides.

Each section is a dataclass: `run` and `index` here, and one per stage, declared by the stage
itself (`Stage.Settings`), so a new stage brings its own keys. Every key must exist and keep its
type (choices as `Literal`, ranges in the field's metadata): a typo fails at once with "did you
mean", and a value out of range names the allowed one. `kebr-data defaults` prints every key with
its default and meaning (`kebr-train defaults` the trainer's, whose sections come as `schema_sections`
with `tool="kebr-train"`). The resolved sections are plain dicts (picklable, hashable, saved in run.json);
each stage turns its own into its typed settings object once (`Stage.__init__`). What a key is (`setting`,
`one_of`, the hash) lives in `kebr_data.settings`, below the stages; this module loads files above them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
# re-exported: the trainer's settings and identity import them from here
from .settings import Check, content_hash, did_you_mean, one_of, runtime_keys, setting  # noqa: F401

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Config = dict[str, dict[str, Any]]


def _stage_names() -> tuple[str, ...]:
    from .stages import pipeline_order

    return pipeline_order()


def _executor_names() -> Iterable[str]:
    from .executors import EXECUTORS

    return EXECUTORS


@dataclass
class RunSettings:
    """How `kebr-data` runs (not part of any stage's output)."""

    workers: int = setting(0, "worker processes of the local executor; 0 = one per CPU core", min=0)
    executor: str = setting("local", "where shards run: local (process pool) | ray (one Ray task per stage and "
                                     "shard)", check=one_of(_executor_names))
    overlap: bool = setting(False, "true: a shard's next stage starts as soon as its inputs are committed (a GPU "
                                   "stage beside the CPU stages); false: stage after stage")
    max_failed: float = setting(0.05, "exit 1 when a stage's failed fraction exceeds this", min=0.0, max=1.0)
    stages: list[str] = setting([], "what extract runs without --stages; [] = the default extract stages",
                                check=one_of(_stage_names))


@dataclass
class IndexSettings:
    """How the source is indexed into the frozen plan."""

    layout: str = setting("auto", "auto | one of the source layouts (voxceleb, mmsa, folder, manifest)")
    shard_size: int = setting(1000, "clips per shard; frozen in the plan (change it with --replan)", min=1)


def sections() -> dict[str, type]:
    """Every config section's dataclass: engine sections first, then each executor's options (those that have
    some), then the stages in pipeline order."""
    from .executors import EXECUTORS
    from .stages import registry

    return {"run": RunSettings, "index": IndexSettings,
            **{name: cls.Options for name, cls in EXECUTORS.items() if dataclasses.fields(cls.Options)},
            **{name: cls.Settings for name, cls in registry().items()}}


def defaults(schema: dict[str, type] | None = None) -> Config:
    """The default configuration (of `schema`'s sections when given, else kebr-data's)."""
    return {name: dataclasses.asdict(cls()) for name, cls in (schema or sections()).items()}


def _flat_keys(cfg: Config) -> list[str]:
    return [f"{s}.{k}" for s, sec in cfg.items() for k in sec]


def _bad(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"config key {key} expects {expected}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _coerce(key: str, value: Any, f: dataclasses.Field, hint: Any) -> Any:
    """Check `value` against the field's type, choices, range and check; ints are accepted where floats are."""
    value = _coerce_type(key, value, f, hint)
    problem = f.metadata["check"](value) if f.metadata.get("check") else None
    if problem:
        raise ConfigError(f"config key {key} {problem}")
    return value


def _coerce_type(key: str, value: Any, f: dataclasses.Field, hint: Any) -> Any:
    """`value` checked against the field's type, Literal choices and range."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise _bad(key, " | ".join(map(str, typing.get_args(hint))), value)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _bad(key, "bool (true or false)", value)
        return value
    if hint is float:
        if not _is_number(value) or not math.isfinite(value):
            raise _bad(key, "float (a finite number)", value)
        value = float(value)
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(key, "int", value)
    elif hint is str:
        if not isinstance(value, str):
            raise _bad(key, "str", value)
    elif origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            raise _bad(key, "list", value)
        if item is float:
            if not all(_is_number(v) and math.isfinite(v) for v in value):
                raise _bad(key, "a list of numbers", value)
            return [float(v) for v in value]
        if item is str and not all(isinstance(v, str) for v in value):
            raise _bad(key, "a list of strings", value)
        return value
    elif origin is dict:
        if not isinstance(value, dict):
            raise _bad(key, "a table", value)
        return value
    low, high = f.metadata.get("min"), f.metadata.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"be at least {low:g}" if high is None else f"be at most {high:g}" if low is None else \
            f"lie in [{low:g}, {high:g}]"
        raise ConfigError(f"config key {key} must {span}, got {value!r}")
    return value


class _Schema:
    """Field and type lookups of every section, resolved once per load; `tool` is the command line whose
    `defaults` command lists these keys (named when a key is unknown)."""

    def __init__(self, schema: dict[str, type] | None = None, tool: str = "kebr-data") -> None:
        self.sections = schema or sections()
        self.tool = tool
        self.hints = {name: typing.get_type_hints(cls) for name, cls in self.sections.items()}
        self.fields = {name: {f.name: f for f in dataclasses.fields(cls)} for name, cls in self.sections.items()}

    def set(self, cfg: Config, key: str, value: Any) -> None:
        section, _, name = key.partition(".")
        if not name or section not in self.fields or name not in self.fields[section]:
            raise ConfigError(f"unknown config key {key!r}{did_you_mean(key, _flat_keys(cfg))}; "
                              f"`{self.tool} defaults` lists every key")
        cfg.setdefault(section, {})[name] = _coerce(key, value, self.fields[section][name], self.hints[section][name])

    def check_sections(self, cfg: Config) -> None:
        """Checks across the keys of a section (its dataclass's static `problems(values) -> list[str]`), on every
        section whether or not its stage runs now, so a bad combination is refused before it is saved."""
        for name, cls in self.sections.items():
            problems = cls.problems(cfg[name]) if hasattr(cls, "problems") and name in cfg else []
            if problems:
                raise ConfigError(f"config: {problems[0]}")


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict, with one-line errors for a missing, non-UTF-8 or invalid file."""
    try:
        return tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as "
                          "UTF-8, as TOML requires") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _merge(schema: _Schema, cfg: Config, data: dict[str, Any], where: str) -> None:
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: top-level key {section!r} must be a [section]")
        for name, value in values.items():
            schema.set(cfg, f"{section}.{name}", value)


def merge_file(cfg: Config, path: Path) -> None:
    """Apply a TOML config file onto `cfg` in place."""
    _merge(_Schema(), cfg, read_toml(path), str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `section.key=value`; the value is read as TOML (numbers, booleans, lists) or else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


#: keys renamed since an output folder's run.json may have saved them: old `section.key` -> new
RENAMED = {"run.ray_address": "ray.address"}


def _saved(base: Config, key: str) -> bool:
    section, _, name = key.partition(".")
    return isinstance(base.get(section), dict) and name in base[section]


def load(files: list[Path] | tuple[Path, ...] = (), overrides: list[str] | tuple[str, ...] = (),
         base: Config | None = None, schema_sections: dict[str, type] | None = None,
         tool: str = "kebr-data") -> Config:
    """Resolve the configuration: `base` (default: the defaults), then each file, then each override.

    A `base` saved by an older version gets keys added since filled in with their defaults, and keys
    renamed since (`RENAMED`) moved to their new names.
    `schema_sections` replaces kebr-data's sections (the trainer's `train` and `modalities`, with
    `tool="kebr-train"`, so an unknown key points at `kebr-train defaults`)."""
    schema = _Schema(schema_sections, tool)
    cfg = defaults(schema_sections)
    if base is not None:
        for section, values in base.items():
            if section in cfg and isinstance(values, dict):
                for name, value in values.items():
                    if name in schema.fields[section]:
                        schema.set(cfg, f"{section}.{name}", value)
                    elif f"{section}.{name}" in RENAMED and not _saved(base, RENAMED[f"{section}.{name}"]):
                        schema.set(cfg, RENAMED[f"{section}.{name}"], value)
    for f in files:
        _merge(schema, cfg, read_toml(f), str(f))
    for text in overrides:
        schema.set(cfg, *parse_override(text))
    schema.check_sections(cfg)
    return cfg


def apply(cfg: Config, values: dict[str, Any], schema_sections: dict[str, type] | None = None,
          tool: str = "kebr-data") -> Config:
    """A copy of `cfg` with dotted keys set (used for CLI shortcuts such as --workers); `schema_sections`
    and `tool` as in `load`."""
    out = copy.deepcopy(cfg)
    schema = _Schema(schema_sections, tool)
    for key, value in values.items():
        if value is not None:
            schema.set(out, key, value)
    schema.check_sections(out)
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    """`section.key` of every value that differs between two resolved configurations."""
    return [f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k) != new[s][k]]


def describe_defaults(schema: dict[str, type] | None = None, tool: str = "kebr-data") -> str:
    """Every section and key with its default and help, as commented TOML: `kebr-data defaults`, or with the
    trainer's sections `kebr-train defaults`."""
    lines = [f"# {tool} configuration: every key with its default. Override with --config FILE or",
             "# --set section.key=value."]
    for name, cls in (schema or sections()).items():
        lines += ["", f"[{name}]" + (f"  # {cls.__doc__.strip().splitlines()[0]}" if cls.__doc__ else "")]
        for f in dataclasses.fields(cls):
            value = getattr(cls(), f.name)
            rendered = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
            lines.append(f"{f.name} = {rendered}  # {f.metadata.get('help', '')}")
    return "\n".join(lines) + "\n"
