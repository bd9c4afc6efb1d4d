"""Clip-id validation: ids name rows, and must never be able to name a path outside the output.

Ids are NFC-normalised first (`normalize_clip_id`), so the NFC and NFD spellings of one name (macOS
file systems write NFD) are one clip. Control, format and line/paragraph separator characters
(Unicode categories Cc, Cf, Zl, Zp, plus unpaired surrogates) are refused: they break log lines
and terminals (U+0085, U+2028) or make a name display as another one (U+202E, zero-width marks).
"""

from __future__ import annotations

import re
import unicodedata

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
MAX_LEN = 512


def normalize_clip_id(clip_id: str) -> str:
    """The canonical (NFC) spelling of a clip id."""
    return unicodedata.normalize("NFC", clip_id)


def clip_id_problem(clip_id: str) -> str | None:
    """Why `clip_id` is unacceptable, or None if it is fine."""
    if not clip_id:
        return "empty clip id"
    if len(clip_id) > MAX_LEN:
        return f"clip id longer than {MAX_LEN} characters"
    bad = next((c for c in clip_id if unicodedata.category(c) in REFUSED_CATEGORIES), None)
    if bad is not None:
        return (f"clip id contains a control character (U+{ord(bad):04X}: control, format and separator "
                "characters are refused)")
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
