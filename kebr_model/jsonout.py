"""Strict JSON for everything the trainer writes: non-finite floats (an infinite `best_valid`, a NaN
metric) become `null`, because `Infinity` and `NaN` are not JSON and break other readers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kebr_data.storage.atomic import atomic_write_bytes, read_owned_text


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (recursively through dicts and lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` that never writes Infinity or NaN (it raises instead of emitting invalid JSON)."""
    return json.dumps(finite(obj), allow_nan=False, default=str, **kwargs)


def write_json(path: Path, obj: Any, within: Path | None = None) -> None:
    """Commit `obj` as indented strict JSON to `path`, renamed into place (`atomic_write_bytes`): a symlink
    planted at `path` is replaced, never written through; `within` is the run folder holding it."""
    atomic_write_bytes(path, (dumps(obj, indent=2) + "\n").encode(), within)


def read_owned_json(path: Path) -> Any | None:
    """A JSON file the trainer wrote at a fixed path (a sweep's run result, a point's cost), never read
    through a symlink planted there: None when it is absent or not a regular file (then rewritten,
    replacing what was planted)."""
    text = read_owned_text(path)
    return None if text is None else json.loads(text)
