"""Keep bench/RESULTS.md as named sections, each rewritten by the benchmark that owns it."""

from __future__ import annotations

import re
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is written by the script named in it; rerun the script to refresh it.\n"


def write_section(key: str, title: str, body: str) -> None:
    """Replace (or append) the section `key` of RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = (f"<!-- {key} -->\n## {title}\n\n_`bench/{key.replace('-', '_')}.py`, "
             f"{time.strftime('%Y-%m-%d')}_\n\n{body.strip()}\n<!-- /{key} -->\n")
    pattern = re.compile(rf"<!-- {re.escape(key)} -->.*?<!-- /{re.escape(key)} -->\n", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text)
