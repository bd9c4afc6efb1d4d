"""Manifest source: a CSV or Parquet table with at least `clip_id` and `video_path` or `audio_path`.

Optional columns: speaker_id, split, label, label_t, label_a, label_v (per-modality labels),
given_text (or text). Relative paths are resolved against the manifest's folder (never the working
directory). Text is UTF-8; a cell that is not, a label that is not a finite number (NaN included:
leave the cell empty for an unlabelled clip), or a row without media becomes a rejected entry with
its reason.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import PlanError
from .base import BadValue, Clip, ScanResult, label_value, text_value

NAME = "manifest"
SUFFIXES = (".csv", ".parquet")


def detect(src: Path) -> bool:
    return src.is_file() and src.suffix.lower() in SUFFIXES


def _read(src: Path) -> list[dict]:
    try:
        if src.suffix.lower() == ".parquet":
            table = pq.read_table(src)
        else:
            # bytes, never inferred numbers (ids like 007); decoded per row, so a cell that is not UTF-8
            # rejects its row, named, rather than the whole manifest
            table = pacsv.read_csv(src, convert_options=pacsv.ConvertOptions(
                column_types={"clip_id": pa.binary(), "speaker_id": pa.binary(), "split": pa.binary()}))
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise PlanError(f"cannot read manifest {src}: {exc}") from exc
    return table.to_pylist()


def _path(base: Path, value: object, column: str) -> str | None:
    text = text_value(value, column)
    if text is None or text.strip() == "":
        return None
    p = Path(text)
    return str(p if p.is_absolute() else (base / p))


def _clip(row: dict, base: Path) -> Clip:
    text = row.get("given_text", row.get("text"))
    return Clip(clip_id=text_value(row["clip_id"], "clip_id") or "", source=NAME,
                video_path=_path(base, row.get("video_path"), "video_path"),
                audio_path=_path(base, row.get("audio_path"), "audio_path"),
                speaker_id=text_value(row.get("speaker_id"), "speaker_id"),
                split=text_value(row.get("split"), "split"), label=label_value(row.get("label")),
                given_text=text_value(text, "given_text"),
                **{k: label_value(row.get(k)) for k in ("label_t", "label_a", "label_v")})


def scan(src: Path) -> ScanResult:
    rows = _read(src)
    cols = set(rows[0]) if rows else set()
    if rows and ("clip_id" not in cols or not ({"video_path", "audio_path"} & cols)):
        raise PlanError(f"manifest {src} needs columns clip_id and video_path or audio_path; it has "
                        f"{', '.join(sorted(cols))}")
    result = ScanResult()
    base = src.absolute().parent
    for i, row in enumerate(rows):
        where = f"{src} row {i + 1}"
        try:
            clip = _clip(row, base)
        except BadValue as exc:
            result.rejected.append((where, str(exc)))
            continue
        if clip.video_path is None and clip.audio_path is None:
            result.rejected.append((where, "neither video_path nor audio_path is set"))
            continue
        result.add(clip, where)
    return result
