"""Sources: turn a dataset folder or manifest into plan rows.

Auto-detection order: manifest file, mmsa (label.csv + Raw/), voxceleb (idNNNNN speaker
folders), then any folder. `--layout` forces one.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PlanError
from . import folder, manifest, mmsa, voxceleb
from .base import Clip, ScanResult

LAYOUTS = {m.NAME: m for m in (manifest, mmsa, voxceleb, folder)}

__all__ = ["Clip", "ScanResult", "LAYOUTS", "detect_layout", "scan"]


def detect_layout(src: Path) -> str:
    """Name of the first layout whose detector accepts `src`."""
    if not src.exists():
        raise PlanError(f"source {src} does not exist")
    for name, module in LAYOUTS.items():
        if module.detect(src):
            return name
    raise PlanError(f"cannot tell the layout of {src}: give a folder, or a .csv/.parquet manifest")


def scan(src: Path, layout: str = "auto") -> tuple[str, ScanResult]:
    """Index `src` with `layout` (or the detected one); clips come back sorted by clip_id.

    `src` is made absolute first, so every path in the plan is absolute: a plan never depends on
    the working directory of the run that made it or of the runs that read it.
    """
    src = src.absolute()
    if layout == "auto":
        layout = detect_layout(src)
    if layout not in LAYOUTS:
        raise PlanError(f"unknown layout {layout!r}; choose one of auto, {', '.join(LAYOUTS)}")
    module = LAYOUTS[layout]
    if not src.exists():
        raise PlanError(f"source {src} does not exist")
    if not module.detect(src):
        raise PlanError(f"{src} does not look like the {layout} layout (see the README's Sources section)")
    result = module.scan(src)
    result.clips.sort(key=lambda c: c.clip_id)
    return layout, result
