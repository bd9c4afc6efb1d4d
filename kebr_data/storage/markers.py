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

from .atomic import NotRegularFile, atomic_write_json, read_control_file

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

    def write(self, path: Path, within: Path | None = None) -> None:
        """Commit the marker atomically (after the table it describes) inside the output folder `within`."""
        atomic_write_json(path, asdict(self), within)


class CorruptMarker(ValueError):
    """A marker file exists but cannot be parsed; the shard is treated as not done."""


def read_marker(path: Path) -> Marker | None:
    """Return the marker at `path`, None if absent; raise CorruptMarker if unreadable."""
    try:
        raw = read_control_file(path).decode("utf-8")
    except FileNotFoundError:
        return None
    except (NotRegularFile, UnicodeDecodeError) as exc:
        raise CorruptMarker(f"{path}: {exc}") from None
    try:
        data = json.loads(raw)
        if data.get("schema") != MARKER_SCHEMA:
            raise CorruptMarker(f"{path}: unknown marker schema {data.get('schema')!r}")
        marker = Marker(**data)
        _check_types(marker)
        return marker
    except (json.JSONDecodeError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise CorruptMarker(f"{path}: {exc}") from exc


def _check_types(m: Marker) -> None:
    """A marker whose fields have the wrong types is corrupt (never a crash later on)."""
    ints = (m.shard, m.rows, m.ok, m.failed, m.skipped, m.output_bytes)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        raise TypeError("counts must be integers")
    if not all(isinstance(v, str) for v in (m.stage, m.config_hash, m.output_sha256)):
        raise TypeError("stage, config_hash and output_sha256 must be strings")
    if not all(isinstance(d, dict) for d in (m.errors, m.versions, m.upstream, m.stats)):
        raise TypeError("errors, versions, upstream and stats must be objects")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in m.errors.values()):
        raise TypeError("errors must map reasons to counts")
    if not all(isinstance(v, str) for d in (m.versions, m.upstream) for v in d.values()):
        raise TypeError("versions and upstream must map names to strings")
    if not isinstance(m.wall_s, (int, float)):
        raise TypeError("wall_s must be a number")


@dataclass
class PlanMarker:
    """The frozen plan's marker: where the clips came from and the size and sha256 of every plan shard.

    `shards` maps the five-digit shard number to `{"rows", "bytes", "sha256"}`; it is written after
    every plan shard it lists, so its presence commits the plan.
    """

    src: str
    layout: str
    shard_size: int
    clips: int
    num_shards: int
    shards: dict[str, dict[str, Any]]
    requested_layout: str = ""
    identity_hash: str = ""
    plan_hash: str = ""
    rejected: int = 0
    rejected_examples: list[dict[str, str]] = field(default_factory=list)
    wall_s: float = 0.0
    toolkit_version: str = ""
    #: the plan's layout version (storage.layout.PLAN_FORMAT); 0 for plans of older toolkits
    plan_format: int = 0
    #: keys written by other versions of the toolkit, kept as they are
    extra: dict[str, Any] = field(default_factory=dict)

    def shard(self, n: int) -> dict[str, Any]:
        """`{"rows", "bytes", "sha256"}` of plan shard `n`."""
        return self.shards[f"{n:05d}"]

    def shard_rows(self, n: int) -> int:
        return int(self.shard(n)["rows"])

    def shard_sha256(self, n: int) -> str:
        """What a stage that read plan shard `n` records as its `plan` upstream hash."""
        return str(self.shard(n)["sha256"])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data.pop("extra"), **data}

    def write(self, path: Path, within: Path | None = None) -> None:
        """Commit the plan marker atomically inside the output folder `within`."""
        atomic_write_json(path, self.to_json(), within)


def read_plan_marker_file(path: Path) -> PlanMarker | None:
    """The plan marker at `path`, None if absent; raise CorruptMarker if unreadable."""
    try:
        data = json.loads(read_control_file(path).decode("utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:  # NotRegularFile is a ValueError
        raise CorruptMarker(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CorruptMarker(f"{path}: not a JSON object")
    known = {f for f in PlanMarker.__dataclass_fields__ if f != "extra"}
    try:
        marker = PlanMarker(**{k: v for k, v in data.items() if k in known},
                            extra={k: v for k, v in data.items() if k not in known})
        if not isinstance(marker.shards, dict) or not isinstance(marker.num_shards, int) or \
                len(marker.shards) != marker.num_shards:
            raise TypeError("shards does not list num_shards shards")
        for n in range(marker.num_shards):
            info = marker.shard(n)
            if not isinstance(info.get("sha256"), str) or not isinstance(info.get("rows"), int):
                raise TypeError(f"shard {n:05d} has no rows/sha256")
    except (TypeError, KeyError, AttributeError) as exc:
        raise CorruptMarker(f"{path}: {exc}") from exc
    return marker
