"""MMSA layout (MOSI, MOSEI, CH-SIMS as distributed for MMSA): `Raw/<video_id>/<clip_id>.mp4` + `label.csv`.

label.csv columns: `video_id, clip_id, text, label[, label_T, label_A, label_V], annotation, mode`.
clip_id becomes `<video_id>$_$<clip_id>` (MMSA's convention), split comes from `mode`, the given
transcript from `text`, the per-modality labels of CH-SIMS / CH-SIMS v2 from `label_T/A/V` (plan
columns `label_t/a/v`). `label` and `mode` may be absent or empty (CH-SIMS v2's unlabelled clips):
such clips have no label and no split, and serve pre-training. A row whose video is missing still
enters the plan, so the audio stage reports it as a failed clip instead of it silently vanishing.
label.csv is UTF-8: a line that is not, a short line, or a label that is not a finite number is a
rejected entry with its reason.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import PlanError
from .base import VIDEO_EXTS, BadValue, Clip, ScanResult, label_value, text_value

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
    with open(label_csv, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise PlanError(f"{label_csv} lacks column(s) {', '.join(missing)}; MMSA's label.csv has "
                            f"{', '.join(REQUIRED)}")
        for line_no, row in enumerate(reader, start=2):
            where = f"{label_csv}:{line_no}"
            if any(v is None for k, v in row.items() if k is not None):  # fewer fields than the header
                fields = sum(v is not None for k, v in row.items() if k is not None)
                result.rejected.append((where, f"the line has {fields} fields, the header {len(reader.fieldnames)}"))
                continue
            try:
                video_id = text_value(row["video_id"], "video_id").strip()
                clip = text_value(row["clip_id"], "clip_id").strip()
                labels = {col: label_value(row.get(name)) for col, name in
                          (("label", "label"), *MODALITY_LABELS.items())}
                text, mode = text_value(row["text"], "text"), (text_value(row.get("mode"), "mode") or "").strip()
            except BadValue as exc:
                result.rejected.append((where, str(exc)))
                continue
            result.add(Clip(clip_id=f"{video_id}$_${clip}", source=NAME,
                            video_path=str(_video_path(src / "Raw", video_id, clip)),
                            speaker_id=video_id, split=mode or None, given_text=text, **labels), where)
    return result

