"""Done markers: the JSON file whose presence commits a (stage, shard).

No marker means the shard is recomputed from scratch. The marker records what the shard holds
(counts, error histogram), how it was made (config hash, versions, upstream markers consumed)
and the size and sha256 of the table it commits, so staleness and corruption can be detected.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json

MARKER_SCHEMA = 1


@dataclass
class Marker:
    """What one committed (stage, shard) contains and how it was made."""

    stage: str
    shard: int
    rows: int
    ok: int
    failed: int
    skipped: int
    errors: dict[str, int]
    wall_s: float
    config_hash: str
    stage_version: str
    versions: dict[str, str]
    upstream: dict[str, str]
    output_bytes: int
    output_sha256: str
    finished_at: str
    host: str = ""
    pid: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    schema: int = MARKER_SCHEMA

    def write(self, path: Path) -> None:
        """Commit the marker atomically (after the table it describes)."""
        atomic_write_json(path, asdict(self))


class CorruptMarker(ValueError):
    """A marker file exists but cannot be parsed; the shard is treated as not done."""


def read_marker(path: Path) -> Marker | None:
    """Return the marker at `path`, None if absent; raise CorruptMarker if unreadable."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        if data.get("schema") != MARKER_SCHEMA:
            raise CorruptMarker(f"{path}: unknown marker schema {data.get('schema')!r}")
        marker = Marker(**data)
        _check_types(marker)
        return marker
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise CorruptMarker(f"{path}: {exc}") from exc


_JSON_TYPES = {"str": (str,), "int": (int,), "float": (int, float)}


def _check_types(marker: Marker) -> None:
    """Raise TypeError when a field has the wrong JSON type (a hand-edited or foreign marker), so it is
    treated as corrupt instead of crashing every later run; dicts must hold numbers or strings."""
    for f in fields(marker):
        value, kind = getattr(marker, f.name), str(f.type)
        if kind == "dict[str, Any]":
            ok = isinstance(value, dict)
        elif kind.startswith("dict"):
            leaf = (str,) if kind == "dict[str, str]" else (int, float, dict)
            ok = isinstance(value, dict) and all(isinstance(v, leaf) and not isinstance(v, bool)
                                                 for v in value.values())
        else:
            ok = isinstance(value, _JSON_TYPES[kind]) and not isinstance(value, bool)
        if not ok:
            raise TypeError(f"field {f.name} is {value!r}, not {kind}")
