"""Folder layout: any tree of media files; clip_id = path relative to the root, without extension.

A video and an audio file with the same relative stem (`a/b.mp4`, `a/b.wav`) form one clip.
"""

from __future__ import annotations

from pathlib import Path

from .base import ScanResult, pair_media, walk_files

NAME = "folder"


def detect(src: Path) -> bool:
    return src.is_dir()


def scan(src: Path) -> ScanResult:
    result = ScanResult()
    files = []
    for path in walk_files(src, result.rejected):
        rel = path.relative_to(src)
        files.append((rel.with_suffix("").as_posix(), path))
    pair_media(result, files, NAME)
    return result
