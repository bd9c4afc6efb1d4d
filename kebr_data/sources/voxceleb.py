"""VoxCeleb1/2 layout: `{mp4,aac,wav}/idNNNNN/<youtube_id>/NNNNN.{mp4,m4a,wav}`.

Accepts the dataset root (`voxceleb2/` holding `mp4/` and `aac/`, optionally under `dev/` or
`test/`) or a modality folder itself (`wav/`). Video and audio of one clip pair by clip_id
`idNNNNN/<youtube_id>/NNNNN`; speaker_id is `idNNNNN`; split is `dev`/`test` when the path says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import ScanResult, media_kind, pair_media, walk_files

NAME = "voxceleb"
SPEAKER_RE = re.compile(r"^id\d+$")
SPLITS = ("dev", "test")


def _speaker_roots(src: Path, depth: int = 3) -> list[Path]:
    """Folders at most `depth` levels below `src` that directly hold `idNNNNN` speaker folders."""
    roots, frontier = [], [src]
    for _ in range(depth + 1):
        nxt = []
        for d in frontier:
            try:
                children = sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())
            except OSError:
                continue
            if any(SPEAKER_RE.match(c.name) for c in children):
                roots.append(d)
            else:
                nxt.extend(children)
        frontier = nxt
    return roots


def detect(src: Path) -> bool:
    """True when `src` holds VoxCeleb-style speaker folders."""
    return src.is_dir() and bool(_speaker_roots(src))


def scan(src: Path) -> ScanResult:
    """Index every clip of a VoxCeleb tree."""
    result = ScanResult()
    files: list[tuple[str, Path]] = []
    fields: dict[str, dict] = {}
    for root in _speaker_roots(src):
        rel_parts = root.relative_to(src).parts
        split = next((p for p in rel_parts if p in SPLITS), None)
        for path in walk_files(root, result.rejected):
            parts = path.relative_to(root).parts
            if media_kind(path.name) is None:
                continue
            if len(parts) != 3 or not SPEAKER_RE.match(parts[0]):
                result.rejected.append((str(path), "not at idNNNNN/<youtube_id>/<clip>.<ext>"))
                continue
            clip_id = f"{parts[0]}/{parts[1]}/{Path(parts[2]).stem}"
            files.append((clip_id, path))
            fields[clip_id] = {"speaker_id": parts[0], "split": split}
    pair_media(result, files, NAME, fields=fields)
    return result
