"""Configuration: package defaults, then `--config` TOML files, then `--set key=value` overrides.

Every key must exist in `defaults.toml` and keep its type, so a typo fails at once with a
suggestion instead of being silently ignored. The resolved config is saved in `run.json`.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Config = dict[str, dict[str, Any]]


def defaults() -> Config:
    """The package's default configuration."""
    text = resources.files("kebr_data").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)


def _flat_keys(cfg: Config) -> list[str]:
    return [f"{s}.{k}" for s, sec in cfg.items() for k in sec]


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check `value` against the default's type; ints are accepted where floats are expected."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, list):
        if isinstance(value, list):
            if default and all(isinstance(d, float) for d in default):  # [-4, 4] == [-4.0, 4.0]
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                    raise ConfigError(f"config key {key} expects a list of numbers, got {value!r}")
                return [float(v) for v in value]
            return value
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    elif isinstance(value, type(default)):
        return value
    raise ConfigError(f"config key {key} expects {type(default).__name__}, got {value!r}")


def _set(cfg: Config, key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    if not name or section not in cfg or name not in cfg[section]:
        close = difflib.get_close_matches(key, _flat_keys(cfg), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}; see kebr_data/defaults.toml for all keys")
    cfg[section][name] = _coerce(key, value, cfg[section][name])


def merge_file(cfg: Config, path: Path) -> None:
    """Apply a TOML config file onto `cfg` in place."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 (byte {exc.start}): save it as UTF-8, "
                          "as TOML requires") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
        for name, value in values.items():
            _set(cfg, f"{section}.{name}", value)


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


def load(files: list[Path] | tuple[Path, ...] = (), overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Resolve the configuration: defaults, then each file, then each override."""
    cfg = defaults()
    for f in files:
        merge_file(cfg, f)
    for text in overrides:
        _set(cfg, *parse_override(text))
    return cfg


def apply(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of `cfg` with dotted keys set (used for CLI shortcuts such as --workers)."""
    out = copy.deepcopy(cfg)
    for key, value in values.items():
        if value is not None:
            _set(out, key, value)
    return out


def content_hash(obj: Any) -> str:
    """Short, stable hash of JSON-serialisable content."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
