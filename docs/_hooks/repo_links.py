"""MkDocs hook: links from a page to repository files outside docs/ (`../bench/RESULTS.md`, a config in
`pipelines/`) work when the Markdown is read in the repository but have no page in the site. Each such
link is checked (a missing file is a warning, so `mkdocs build --strict` fails on it) and shown in the
site as its text with the repository path."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.repo_links")
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s#]+)(#[^)\s]*)?\)")


def _rewrite(match: re.Match, page_dir: Path, docs: Path, root: Path, page: str) -> str:
    text, target = match.group(1), match.group(2)
    if "://" in target or target.startswith("mailto:"):
        return match.group(0)
    path = (page_dir / target).resolve()
    if path.is_relative_to(docs):
        return match.group(0)
    if not path.is_relative_to(root) or not path.exists():
        log.warning("%s links to %s, which is not a file of the repository", page, target)
        return match.group(0)
    rel = path.relative_to(root).as_posix()
    return text if rel in text else f"{text} (`{rel}`)"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each link to a repository file outside docs/ by its text and path, after checking it exists."""
    docs = Path(config["docs_dir"]).resolve()
    root = Path(config["config_file_path"]).resolve().parent
    page_dir = (docs / page.file.src_path).parent
    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        out.append(line if fenced else LINK.sub(
            lambda m: _rewrite(m, page_dir, docs, root, page.file.src_path), line))
    return "".join(out)
