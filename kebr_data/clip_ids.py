"""Clip-id validation: ids name rows, and must never be able to name a path outside the output."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LEN = 512


def clip_id_problem(clip_id: str) -> str | None:
    """Why `clip_id` is unacceptable, or None if it is fine."""
    if not clip_id:
        return "empty clip id"
    if len(clip_id) > MAX_LEN:
        return f"clip id longer than {MAX_LEN} characters"
    if _CONTROL.search(clip_id):
        return "clip id contains a control character"
    if "\\" in clip_id:
        return "clip id contains a backslash"
    if clip_id.startswith("/") or re.match(r"^[A-Za-z]:", clip_id):
        return "clip id is an absolute path"
    if any(part in ("..", ".") for part in clip_id.split("/")):
        return "clip id contains a '.' or '..' path segment"
    if "//" in clip_id or clip_id.endswith("/"):
        return "clip id contains an empty path segment"
    return None


def check_clip_id(clip_id: str) -> str:
    """Return `clip_id` unchanged or raise ValueError with the reason."""
    problem = clip_id_problem(clip_id)
    if problem:
        raise ValueError(f"{problem}: {clip_id!r}")
    return clip_id
