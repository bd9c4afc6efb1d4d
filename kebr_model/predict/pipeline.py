"""`predict --src`: run the stages the model needs on new clips, into OUT/cache, with the settings the run's
training shards were made with (their run.json, recorded in the run), through kebr-data's engine: a
resumable output folder like any extract's, checked against the run before any work."""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from kebr_data import config as config_mod
from kebr_data.config import Config
from kebr_data.errors import PlanError, PlanMismatch, StaleOutputError
from kebr_data.pipeline.engine import Engine, RunOptions, RunReport
from kebr_data.sources import scan
from kebr_data.sources.base import AUDIO_EXTS, VIDEO_EXTS
from kebr_data.storage.atomic import NotRegularFile, atomic_write_bytes, read_control_file
from kebr_data.storage.store import Store

from . import settings_check
from .model_io import RunRecord

CACHE = "cache"          # OUT/cache: the output folder the stages write
INPUTS = "inputs.csv"    # OUT/inputs.csv: the manifest made for media files given one by one


def cache_config(source: dict[str, Any], overrides: tuple[str, ...] = ()) -> Config:
    """The training shards' kebr-data configuration with the layout detected anew (the new clips may come
    in another layout) and `overrides` (`--set section.key=value`) applied."""
    saved = source.get("config")
    if not isinstance(saved, dict):
        raise settings_check.SettingsMismatch(
            f"the run's training shards ({source.get('path')}) have no run.json settings (written directly, or "
            "an HDF5 export): predict --src cannot make features as theirs were; give --shards FOLDER instead")
    base = {**saved, "index": {**saved.get("index", {}), "layout": "auto"}}
    return config_mod.load((), overrides, base=base)


def media_manifest(files: list[Path], out: Path) -> Path:
    """OUT/inputs.csv listing media files given one by one (clip id: the file name without its suffix). An
    OUT/cache made from another list is refused before the list is rewritten: the cache's plan knows the
    manifest by its path only, so it would score the earlier files' clips."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["clip_id", "video_path", "audio_path"])
    for f in files:
        if f.suffix.lower() not in VIDEO_EXTS | AUDIO_EXTS:
            raise PlanError(f"{f} is not a video or audio file ({', '.join(sorted(VIDEO_EXTS | AUDIO_EXTS))}), "
                            "a folder or a .csv/.parquet manifest")
        video = f.suffix.lower() in VIDEO_EXTS
        writer.writerow([f.stem, str(f.absolute()) if video else "", "" if video else str(f.absolute())])
    data = buf.getvalue().encode()
    if (out / CACHE).exists() and _listed(out) != data:
        raise other_predict(out / CACHE)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / INPUTS, data, out)
    return out / INPUTS


def _listed(out: Path) -> bytes | None:
    """OUT/inputs.csv as an earlier predict wrote it; None when absent or not a regular file (never followed)."""
    try:
        return read_control_file(out / INPUTS)
    except (FileNotFoundError, NotRegularFile):
        return None


def media_files(src: list[Path]) -> list[Path] | None:
    """The media files given one by one, or None when `src` is one folder or manifest (read as given)."""
    for path in src:
        if not path.exists():
            raise PlanError(f"--src {path} does not exist")
    if len(src) == 1 and (src[0].is_dir() or src[0].suffix.lower() in (".csv", ".parquet")):
        return None
    folders = [p for p in src if p.is_dir()]
    if folders:
        raise PlanError(f"--src {folders[0]} is a folder: give one folder or manifest, or media files")
    return src


def needed_stages(record: RunRecord, src: Path | None, cfg: Config) -> list[str]:
    """The stages to run: those of the model's modalities, ASR when the model reads text and a clip of `src`
    (None: media files, which have none) has no given transcript, and every stage they read, in pipeline
    order."""
    stages = settings_check.modality_stages(record.cfg.used)
    if record.reads_text and (src is None or
                              any(not c.given_text for c in scan(src, cfg["index"]["layout"])[1].clips)):
        stages.append("asr")
    return settings_check.with_upstream(stages, cfg)


@dataclass
class Prepared:
    """What `--src` will run, checked against the run: the configuration, the stages, the media files given
    one by one (None: a folder or manifest, read as given)."""

    cfg: Config
    stages: list[str]
    src: list[Path]
    files: list[Path] | None


def prepare(record: RunRecord, src: list[Path], overrides: tuple[str, ...] = ()) -> Prepared:
    """Decide and check what `--src` runs; refused (SettingsMismatch, PlanError) before anything is written
    when a setting, tool or prerequisite differs from the training shards' or a source is missing."""
    source = settings_check.source_record(record.data, record.run)
    cfg = cache_config(source, overrides)
    files = media_files(src)
    stages = needed_stages(record, None if files else src[0], cfg)
    settings_check.check_settings(source, cfg, stages)
    return Prepared(cfg, stages, src, files)


def run_stages(prepared: Prepared, out: Path, console: Console | None = None,
               command: str = "kebr-train predict") -> tuple[Path, RunReport]:
    """Make the features in OUT/cache (resuming what an earlier run of the same command did); return the
    folder and the engine's report. A cache made for another run (other clips) or with other settings is
    refused in one line naming it and the way out."""
    where = media_manifest(prepared.files, out) if prepared.files else prepared.src[0]
    cache = out / CACHE
    if not prepared.files:
        _same_clips(cache, where, prepared.cfg["index"]["layout"])
    opts = RunOptions(out=cache, stages=["index", *prepared.stages], config=prepared.cfg, src=where,
                      command=command, saved_config=prepared.cfg)
    try:
        return cache, Engine(opts, console or Console(stderr=True)).run()
    except (StaleOutputError, PlanMismatch):  # theirs name --force and --replan, which predict has not
        raise other_predict(cache) from None


def _same_clips(cache: Path, src: Path, layout: str) -> None:
    """Refuse an OUT/cache whose plan lists other clips than the folder or manifest `src` holds now (clips added,
    removed or renamed since): its frozen plan knows `src` by its path only, so it would score the old clips."""
    store = Store(cache)
    if store.plan_or_none() is None:
        return
    planned = {c for shard in range(store.plan.num_shards) for c in store.plan_ids(shard)}
    if planned != {c.clip_id for c in scan(src, layout)[1].clips}:
        raise other_predict(cache)


def other_predict(cache: Path) -> StaleOutputError:
    """The refusal of an OUT/cache that another predict made (other clips or settings), naming the way out."""
    return StaleOutputError(f"{cache} holds the features of another predict (other clips or settings): use a new "
                            f"--out, or delete {cache} (rm -r {shlex.quote(str(cache))}) and rerun")
