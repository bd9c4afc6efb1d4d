"""What every source produces: plan rows (`Clip`) plus the entries it had to reject, with reasons."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..clip_ids import clip_id_problem

VIDEO_EXTS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".flv", ".wmv", ".m4v", ".mpg", ".mpeg"})
AUDIO_EXTS = frozenset({".wav", ".m4a", ".aac", ".flac", ".mp3", ".ogg", ".opus"})


@dataclass
class Clip:
    """One plan row before sharding (the `plan` table)."""

    clip_id: str
    source: str
    video_path: str | None = None
    audio_path: str | None = None
    speaker_id: str | None = None
    split: str | None = None
    label: float | None = None
    given_text: str | None = None
    label_t: float | None = None   # per-modality labels (CH-SIMS); None elsewhere
    label_a: float | None = None
    label_v: float | None = None


@dataclass
class ScanResult:
    """Clips found by a source and the entries rejected (path or id, reason)."""

    clips: list[Clip] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def add(self, clip: Clip, where: str) -> None:
        problem = clip_id_problem(clip.clip_id)
        if problem:
            self.rejected.append((where, problem))
        else:
            self.clips.append(clip)


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
    for clip_id, path in files:
        kind = media_kind(path.name)
        if kind is None:
            continue
        clip = clips.setdefault(clip_id, Clip(clip_id=clip_id, source=source, **(fields or {}).get(clip_id, {})))
        attr = "video_path" if kind == "video" else "audio_path"
        if getattr(clip, attr) is not None:
            result.rejected.append((str(path), f"duplicate {kind} file for clip {clip_id!r} "
                                               f"(kept {getattr(clip, attr)})"))
            continue
        setattr(clip, attr, str(path))
    for clip_id, clip in clips.items():
        result.add(clip, clip.video_path or clip.audio_path or clip_id)
