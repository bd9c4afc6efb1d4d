"""Before any work: the features `predict` scores must be made as the run's training shards were.

The run records how its shards were made (`identity.shards_record`: run.json's configuration and pinned
tools, and each stage's config hashes). Features made now (`--src`) or given (`--shards`) must have the same
config hash for every stage the model reads (and the stages those read), the same tool builds, and the same
frame widths; a difference is refused in one line naming the setting and both values (SettingsMismatch,
exit 2)."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

from kebr_data.errors import PrerequisiteError
from kebr_data.media.binaries import Tool
from kebr_data.pipeline import run_record
from kebr_data.stages import make_stage, pipeline_order, stage_class
from kebr_data.storage.layout import OutputDir
from kebr_data.storage.store import Store

from ..config import RAW_AUDIO
from ..errors import TrainSetupError

#: stages whose rows give the transcript (`schema.clip_text`)
TEXT_STAGES = ("mask", "asr")


class SettingsMismatch(TrainSetupError):
    """The features to score were (or would be) made with other settings than the run's training shards."""


def source_record(data: dict[str, Any], run: Path, settings: bool = True) -> dict[str, Any]:
    """The run's record of its training shards. A run trained before the record existed still has the config
    hashes of the stages it read (enough for `--shards`, not `settings`: what `--src` runs the stages with)."""
    source = data.get("source")
    if isinstance(source, dict):
        return source
    if not settings and isinstance(data.get("stages"), dict):
        return {"path": None, "config": None,
                "config_hashes": {s: list(v.get("settings", [])) for s, v in data["stages"].items()}}
    raise SettingsMismatch(f"{run} does not record how its training shards were made (trained before "
                           "`kebr-train predict` existed): fine-tune it again to predict with --src")


def modality_stages(used: dict[str, str]) -> list[str]:
    """The stage tables the model's modalities read (the raw waveform: the audio stage)."""
    return list(dict.fromkeys("audio" if s == RAW_AUDIO else s for s in used.values()))


def with_upstream(stages: list[str], cfg: dict[str, Any]) -> list[str]:
    """`stages` and every stage they read, in pipeline order."""
    todo, found = list(stages), set()
    while todo:
        name = todo.pop()
        if name in found or name == "plan":
            continue
        found.add(name)
        todo += list(make_stage(name, cfg).upstream)
    return [s for s in pipeline_order() if s in found]


def _semantic(stage: str, section: dict[str, Any] | None) -> dict[str, Any]:
    runtime = stage_class(stage).runtime_keys()
    return {k: v for k, v in (section or {}).items() if k not in runtime}


def _differences(stage: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(`stage.key`, the run's value, the value now) for each setting of `stage` that changes its output."""
    old, new = _semantic(stage, before), _semantic(stage, after)
    return [(f"{stage}.{k}", old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _stage_line(stage: str, source: dict[str, Any], now_cfg: dict[str, Any] | None, now_hashes: list[str],
                where: str) -> str:
    """One refusal for a stage whose config hash differs: each differing setting with both values, else the
    two hashes (another stage version)."""
    diffs = _differences(stage, (source.get("config") or {}).get(stage), (now_cfg or {}).get(stage))
    if diffs and source.get("config") and now_cfg:
        return "; ".join(f"{key}: the run's training shards were made with {old!r}, {where} {new!r}"
                         for key, old, new in diffs)
    recorded = ", ".join(source["config_hashes"].get(stage, [])) or "none"
    return (f"{stage}: the run's training shards were made with {stage} config hash {recorded}, {where} "
            f"{', '.join(now_hashes)} (another stage version or settings)")


def check_folder(source: dict[str, Any], root: Path, stages: list[str]) -> None:
    """`--shards`: every stage of `stages` (and the text stages) that both folders hold was made with the
    training shards' config hashes."""
    store = Store(root)
    now_cfg = run_record.saved_config(OutputDir(root))
    recorded = source.get("config_hashes", {})
    lines = []
    for stage in dict.fromkeys([*stages, *TEXT_STAGES]):
        now = sorted(store.config_hashes(stage)) if stage in store.stages() else []
        if stage in recorded and now and now != recorded[stage]:
            lines.append(_stage_line(stage, source, now_cfg, now, f"{root} with"))
    if lines:
        raise SettingsMismatch("; ".join(lines) + ": score features made as the run's were (--src runs the "
                               "stages with the settings the run recorded)")


def check_settings(source: dict[str, Any], cfg: dict[str, Any], stages: list[str]) -> None:
    """`--src`: each stage of `stages` run with `cfg` gives the training shards' config hash, finds its
    prerequisites, and runs the tool builds (ffmpeg, OpenFace) they were made with."""
    recorded = source.get("config_hashes", {})
    lines = []
    for stage in stages:
        current = make_stage(stage, cfg).config_hash()
        if stage in recorded and [current] != recorded[stage]:
            lines.append(_stage_line(stage, source, cfg, [current], "this run would use"))
    lines += tool_lines(source, cfg, stages)
    if lines:
        raise SettingsMismatch("; ".join(lines))


def tool_lines(source: dict[str, Any], cfg: dict[str, Any], stages: list[str]) -> list[str]:
    """A refusal per missing prerequisite, and per tool whose build differs from the one the training
    shards were made with (its pinned sha256)."""
    pins = source.get("tools") or {}
    lines = []
    for name in stages:
        stage = make_stage(name, cfg)
        pinned = {t: Tool(**{f.name: str(p.get(f.name, "")) for f in dataclasses.fields(Tool)})
                  for t, p in (pins.get(name) or {}).items() if isinstance(p, dict)}
        try:
            tools = stage.tools()
        except PrerequisiteError as exc:
            lines += [f"{p.setting}: the run's training shards were made with {p.describe()}, not found here "
                      f"({exc}); install that build and give --set {shlex.quote(p.setting + '=PATH')}"
                      for p in pinned.values()] or [f"{name}: {exc}"]
            continue
        lines += [f"{name}: {problem}" for problem in stage.check()]
        for tool_name, tool in tools.items():
            p = pinned.get(tool_name)
            if p is not None and p.sha256 != tool.sha256:
                lines.append(f"{tool.setting}: the run's training shards were made with {p.describe()}, this "
                             f"run would use {tool.describe()}; give --set "
                             f"{shlex.quote(tool.setting + '=' + p.path)} or the same build")
    return lines


def check_widths(expected: dict[str, int], found: dict[str, int], root: Path) -> None:
    """The frame widths the folder gives the model are the ones it was trained with."""
    wrong = [f"{m} frames of width {found.get(m)} in {root}, the run was trained on width {w}"
             for m, w in sorted(expected.items()) if found.get(m) != w]
    if wrong:
        raise SettingsMismatch("; ".join(wrong) + ": score features made as the run's were")
