"""Done markers: the JSON file whose presence commits a (stage, shard).

No marker means the shard is recomputed from scratch. The marker records what the shard holds
(counts, error histogram), how it was made (config hash, versions, upstream markers consumed)
and the size and sha256 of the table it commits, so staleness and corruption can be detected.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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
        return Marker(**data)
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise CorruptMarker(f"{path}: {exc}") from exc
