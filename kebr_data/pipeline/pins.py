"""Pinned tools: an output folder keeps the external programs (ffmpeg, OpenFace) its stages first ran with.

Their paths are runtime settings, outside the config hash, yet another build writes other bytes (two
ffmpeg builds decode one MP4 to different PCM). So the first run of a stage records each of its
`Stage.tools()` in run.json (`tools.<stage>.<tool>`: path, where it was found, version, sha256), and a
later run whose tool has other bytes is refused before any work while the stage has done shards,
naming both and the two ways out: select the pinned one, or recompute the stage with `--force` (which
pins the new one).
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from ..errors import StaleOutputError
from ..media.binaries import Tool
from ..stages.base import Stage
from ..storage.layout import OutputDir
from . import run_record

Pins = dict[str, dict[str, dict[str, Any]]]


def check_tools(out: OutputDir, stages: list[Stage], force: bool) -> Pins:
    """run.json's pinned tools with those of `stages` added (replaced where `force` recomputes the stage, or
    where the stage has no done shards yet: a run that committed nothing binds nothing); raise
    StaleOutputError naming both tools when one differs from its pin and `force` is not given."""
    saved = run_record.read(out).get("tools")
    pins: Pins = {s: dict(t) for s, t in saved.items() if isinstance(t, dict)} if isinstance(saved, dict) else {}
    lines = []
    for stage in stages:
        for name, tool in stage.tools().items():
            was = pins.get(stage.name, {}).get(name)
            if isinstance(was, dict) and was.get("sha256") != tool.sha256 and not force \
                    and out.marker_shards(stage.name):
                lines.append(_refusal(out, stage.name, name, was, tool))
            elif not isinstance(was, dict) or was.get("sha256") != tool.sha256:
                pins.setdefault(stage.name, {})[name] = dataclasses.asdict(tool)
    if lines:
        raise StaleOutputError("\n  ".join(lines))
    return pins


def _refusal(out: OutputDir, stage: str, name: str, was: dict[str, Any], tool: Tool) -> str:
    pinned = Tool(**{f.name: str(was.get(f.name, "")) for f in dataclasses.fields(Tool)})
    keep = shlex.quote(f"{tool.setting}={pinned.path}")
    return (f"{stage}: {out.root} was made with {name} {pinned.describe()}, but this run would use "
            f"{tool.describe()}; one folder never mixes two builds. Use the pinned one with --set {keep}, or "
            f"recompute {stage} (and what depends on it) with the new one: kebr-data extract --out "
            f"{shlex.quote(str(out.root))} --force --stages {stage}")
