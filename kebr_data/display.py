"""How user text and measured values appear in messages: escaped, on one line, with enough digits.

File names, manifest cells and exception texts come from outside: printed raw, a U+202E reorders the
rest of the line and a newline forges another one; an exception can be 20 KB on one line. A value
compared with a threshold must not print equal to it ("p=0.99 < 0.99"). Output piped into a log keeps
each line whole (`command_console`): a summary line wrapped at 80 columns is two lines to grep.
"""

from __future__ import annotations

import os
import unicodedata
from typing import TYPE_CHECKING

from .clip_ids import REFUSED_CATEGORIES

if TYPE_CHECKING:
    from rich.console import Console

#: the longest exception text quoted in a one-line message (the full text is in the shard's log)
MAX_QUOTED = 200


def printable(text: str) -> str:
    """`text` with control, format (bidi, zero-width) and line/paragraph separator characters, and unpaired
    surrogates, written as Python escapes (`\\u202e`, `\\n`)."""
    return "".join(c if unicodedata.category(c) not in REFUSED_CATEGORIES else c.encode("unicode_escape").decode()
                   for c in text)


def one_line(text: str, limit: int = MAX_QUOTED) -> str:
    """The first non-empty line of `text`, escaped (`printable`) and cut to `limit` characters."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = printable(first)
    return first if len(first) <= limit else first[:limit - 1] + "…"


def undecodable(data: bytes, limit: int = 40) -> str:
    """The first `limit` bytes of text that is not UTF-8, its bad bytes as `\\xe9` (not Python's `b'...'`)."""
    return printable(data[:limit].decode("utf-8", "backslashreplace"))


def beside(value: float, threshold: float) -> str:
    """`value` with two decimals, or as many more as it takes not to print equal to `threshold`
    (0.9899 against 0.99 prints 0.9899, not 0.99)."""
    for digits in range(2, 17):
        if round(value, digits) != round(threshold, digits):
            return f"{value:.{digits}f}"
    return repr(value)


def command_console(stderr: bool = True) -> Console:
    """The rich console of a command (both CLIs, the engine, the training bar): on a terminal it wraps at
    the terminal's width; piped or redirected to a log, text lines are never wrapped (soft wrap) and tables
    are drawn 120 columns wide unless COLUMNS says otherwise."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console.soft_wrap = True
        if "COLUMNS" not in os.environ:
            console.width = 120
    return console
