"""What every source produces: plan rows (`Clip`, declared with the plan's schema in `kebr_data.schema`) plus
the entries it had to reject, with reasons."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..clip_ids import clip_id_problem, normalize_clip_id
from ..display import undecodable
from ..schema import Clip

VIDEO_EXTS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".flv", ".wmv", ".m4v", ".mpg", ".mpeg"})
AUDIO_EXTS = frozenset({".wav", ".m4a", ".aac", ".flac", ".mp3", ".ogg", ".opus"})


@dataclass
class ScanResult:
    """Clips found by a source and the entries rejected (path or id, reason)."""

    clips: list[Clip] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set, repr=False)

    def add(self, clip: Clip, where: str) -> None:
        """Keep `clip` (its id NFC-normalised, its media fingerprinted) or reject it with the reason."""
        clip.clip_id = normalize_clip_id(clip.clip_id)
        problem = clip_id_problem(clip.clip_id)
        if problem:
            self.rejected.append((where, problem))
        elif clip.clip_id in self._ids:
            self.rejected.append((where, f"duplicate clip {clip.clip_id!r} (the first one is kept)"))
        else:
            self._ids.add(clip.clip_id)
            clip.fingerprint()
            self.clips.append(clip)


FLOAT32_MAX = 3.4028234663852886e38


class BadValue(ValueError):
    """A manifest or label-file cell that cannot enter the plan; its message is the row's reason."""


def text_value(value: object, column: str) -> str | None:
    """A text cell as `str`: bytes must be UTF-8 (the declared encoding of manifests and label.csv),
    numbers become their decimal spelling, and undecodable text is refused rather than kept as
    `b'...'` or with replacement characters."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadValue(f"{column} is not valid UTF-8 ({undecodable(value)})") from None
    text = str(value)
    if any("\ud800" <= c <= "\udfff" for c in text):
        raise BadValue(f"{column} is not valid UTF-8 ({undecodable(text.encode('utf-8', 'surrogateescape'))})")
    return text


def label_value(value: object) -> float | None:
    """A label cell as a finite float32-representable number, None when empty (unlabelled).

    NaN is refused like infinity: an unlabelled clip has an empty cell, and a NaN label would make
    every loss NaN."""
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    try:
        x = float(value.decode() if isinstance(value, bytes) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError, UnicodeDecodeError):
        raise BadValue(f"label {value!r} is not a number") from None
    if not math.isfinite(x):
        raise BadValue(f"label {value!r} is not finite")
    if abs(x) > FLOAT32_MAX:
        raise BadValue(f"label {value!r} is outside float32's range")
    return x


def media_kind(name: str) -> str | None:
    """'video', 'audio' or None from a file name's extension."""
    ext = os.path.splitext(name)[1].lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in AUDIO_EXTS:
        return "audio"
    return None


def walk_files(root: Path, rejected: list[tuple[str, str]]) -> Iterator[Path]:
    """Every non-directory entry below `root`, sorted, without following directory symlinks.

    Unreadable folders are reported in `rejected` rather than aborting the scan; broken or
    looping file symlinks are yielded so that their clip gets a clear failed row downstream.
    """
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            rejected.append((str(d), f"cannot list folder: {exc.strerror or exc}"))
            continue
        subdirs = []
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(Path(e.path))
            else:
                yield Path(e.path)
        stack.extend(reversed(subdirs))


def pair_media(result: ScanResult, files: list[tuple[str, Path]], source: str,
               fields: dict[str, dict] | None = None) -> None:
    """Merge (clip_id, path) entries into clips: one video and/or one audio file per clip_id.

    `fields` maps clip_id -> further Clip fields (speaker_id, split...).
    """
    clips: dict[str, Clip] = {}
    for raw_id, path in files:
        clip_id = normalize_clip_id(raw_id)
        kind = media_kind(path.name)
        if kind is None:
            continue
        clip = clips.setdefault(clip_id, Clip(clip_id=clip_id, source=source, **(fields or {}).get(raw_id, {})))
        attr = "video_path" if kind == "video" else "audio_path"
        if getattr(clip, attr) is not None:
            result.rejected.append((str(path), f"duplicate {kind} file for clip {clip_id!r} "
                                               f"(kept {getattr(clip, attr)})"))
            continue
        setattr(clip, attr, str(path))
    for clip_id, clip in clips.items():
        result.add(clip, clip.video_path or clip.audio_path or clip_id)
