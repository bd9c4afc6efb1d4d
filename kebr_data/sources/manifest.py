"""Manifest source: a CSV or Parquet table with at least `clip_id` and `video_path` or `audio_path`.

Optional columns: speaker_id, split, label, label_t, label_a, label_v (per-modality labels),
given_text (or text). Relative paths are resolved against the manifest's folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import PlanError
from .base import Clip, ScanResult

NAME = "manifest"
SUFFIXES = (".csv", ".parquet")


def detect(src: Path) -> bool:
    return src.is_file() and src.suffix.lower() in SUFFIXES


def _read(src: Path) -> list[dict]:
    try:
        if src.suffix.lower() == ".parquet":
            table = pq.read_table(src)
        else:
            table = pacsv.read_csv(src, convert_options=pacsv.ConvertOptions(
                column_types={"clip_id": "string", "speaker_id": "string", "split": "string"}))
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise PlanError(f"cannot read manifest {src}: {exc}") from exc
    return table.to_pylist()


def _path(base: Path, value: object) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    p = Path(str(value))
    return str(p if p.is_absolute() else (base / p))


def _label(value: object) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def scan(src: Path) -> ScanResult:
    rows = _read(src)
    cols = set(rows[0]) if rows else set()
    if rows and ("clip_id" not in cols or not ({"video_path", "audio_path"} & cols)):
        raise PlanError(f"manifest {src} needs columns clip_id and video_path or audio_path; it has "
                        f"{', '.join(sorted(cols))}")
    result = ScanResult()
    seen: set[str] = set()
    for i, row in enumerate(rows):
        clip_id = str(row["clip_id"] or "")
        where = f"{src} row {i + 1}"
        if clip_id in seen:
            result.rejected.append((where, f"duplicate clip {clip_id!r}"))
            continue
        seen.add(clip_id)
        label, per_modality = _label(row.get("label")), {k: _label(row.get(k)) for k in ("label_t", "label_a", "label_v")}
        text = row.get("given_text", row.get("text"))
        clip = Clip(clip_id=clip_id, source=NAME, video_path=_path(src.parent, row.get("video_path")),
                    audio_path=_path(src.parent, row.get("audio_path")),
                    speaker_id=row.get("speaker_id"), split=row.get("split"), label=label,
                    given_text=None if text is None else str(text), **per_modality)
        if clip.video_path is None and clip.audio_path is None:
            result.rejected.append((where, "neither video_path nor audio_path is set"))
            continue
        result.add(clip, where)
    return result
