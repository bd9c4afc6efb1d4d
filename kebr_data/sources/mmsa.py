"""MMSA layout (MOSI, MOSEI, CH-SIMS as distributed for MMSA): `Raw/<video_id>/<clip_id>.mp4` + `label.csv`.

label.csv columns: `video_id, clip_id, text, label[, label_T, label_A, label_V], annotation, mode`.
clip_id becomes `<video_id>$_$<clip_id>` (MMSA's convention), split comes from `mode`, the given
transcript from `text`, the per-modality labels of CH-SIMS / CH-SIMS v2 from `label_T/A/V` (plan
columns `label_t/a/v`). `label` and `mode` may be absent or empty (CH-SIMS v2's unlabelled clips):
such clips have no label and no split, and serve pre-training. A row whose video is missing still enters the plan, so the audio stage
reports it as a failed clip instead of it silently vanishing.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import PlanError
from .base import VIDEO_EXTS, Clip, ScanResult

NAME = "mmsa"
REQUIRED = ("video_id", "clip_id", "text")
MODALITY_LABELS = {"label_t": "label_T", "label_a": "label_A", "label_v": "label_V"}


def detect(src: Path) -> bool:
    return src.is_dir() and (src / "label.csv").is_file() and (src / "Raw").is_dir()


def _video_path(raw: Path, video_id: str, clip: str) -> Path:
    default = raw / video_id / f"{clip}.mp4"
    if default.exists():
        return default
    for ext in sorted(VIDEO_EXTS):
        p = raw / video_id / f"{clip}{ext}"
        if p.exists():
            return p
    return default


def scan(src: Path) -> ScanResult:
    result = ScanResult()
    label_csv = src / "label.csv"
    with open(label_csv, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise PlanError(f"{label_csv} lacks column(s) {', '.join(missing)}; MMSA's label.csv has "
                            f"{', '.join(REQUIRED)}")
        seen: set[str] = set()
        for line_no, row in enumerate(reader, start=2):
            video_id, clip = row["video_id"].strip(), row["clip_id"].strip()
            clip_id = f"{video_id}$_${clip}"
            where = f"{label_csv}:{line_no}"
            if clip_id in seen:
                result.rejected.append((where, f"duplicate clip {clip_id!r}"))
                continue
            seen.add(clip_id)
            try:
                labels = {col: _number(row.get(name)) for col, name in
                          (("label", "label"), *MODALITY_LABELS.items())}
            except ValueError as exc:
                result.rejected.append((where, str(exc)))
                continue
            result.add(Clip(clip_id=clip_id, source=NAME,
                            video_path=str(_video_path(src / "Raw", video_id, clip)),
                            speaker_id=video_id, split=(row.get("mode") or "").strip() or None,
                            given_text=row["text"], **labels), where)
    return result


def _number(text: str | None) -> float | None:
    """A label cell: None when absent or empty, else a float (ValueError naming the value)."""
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"label {text!r} is not a number") from None
