"""Score a folder's clips with a loaded run: one row per clip, in plan order, batched as `eval` batches.

A row's status follows the stage rows (`extract`'s bad inputs): a clip whose media a stage failed on
(a decode error) is `failed` with that stage's reason and no prediction; a clip the model cannot read
(no transcript for a model that reads text) is `skipped`; any other clip is scored (`ok`), a missing
modality (no audio track, no face) noted in its reason, as `eval` scores it with no frames there."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from kebr_data.stages import pipeline_order

from ..data.parquet import ParquetReader
from ..evaluation.metrics import sims_classes
from . import model_io
from .model_io import Clip, LoadedModel

#: the class columns of each metric set (MMSA's)
CLASSES = {"mosi": ("class_2", "class_5", "class_7"), "sims": ("class_2", "class_3", "class_5"),
           "sims2": ("class_2", "class_3", "class_5")}


def run_metric_set(loaded: LoadedModel) -> str:
    """The run's metric set: its `metrics` setting, `auto` resolved as it was on the training shards."""
    if loaded.cfg.metrics != "auto":
        return loaded.cfg.metrics
    return loaded.record.data.get("source", {}).get("metric_set") or "mosi"


def classes(metric_set: str, prediction: float) -> dict[str, int]:
    """The prediction's class under `metric_set`: MOSI's 2 classes (1: >= 0, Has0), 5 and 7 (the value clipped
    to +-2 / +-3 and rounded half to even: -2..2, -3..3); CH-SIMS's 2, 3 and 5 bins (index from the lowest)."""
    p = float(prediction)
    if metric_set in ("sims", "sims2"):
        x = np.clip(np.asarray([p]), -1.0, 1.0)
        return {f"class_{k}": int(sims_classes(x, k)[0]) for k in (2, 3, 5)}
    return {"class_2": int(p >= 0), "class_5": int(np.round(np.clip(p, -2.0, 2.0))),
            "class_7": int(np.round(np.clip(p, -3.0, 3.0)))}


def _reason(stage: str, row: dict[str, Any]) -> str:
    detail = f" ({row['message']})" if row.get("message") else ""
    return f"{stage}: {row.get('error') or row['status']}{detail}"


def clip_status(clip: Clip) -> tuple[str, str | None]:
    """(status, reason) of a clip: the first stage row (pipeline order) that is not ok decides."""
    order = {s: i for i, s in enumerate(pipeline_order())}
    bad = [(s, r) for s, r in sorted(clip.rows.items(), key=lambda kv: order.get(kv[0], len(order)))
           if r["status"] != "ok"]
    first = bad[0] if bad else None
    if first is not None and first[1]["status"] == "failed":
        return "failed", _reason(*first)
    if clip.sample is None:
        return "skipped", _reason(*first) if first else "no transcript (the model reads text)"
    return "ok", f"{_reason(*first)}; scored without it" if first else None


def identity(loaded: LoadedModel) -> dict[str, str]:
    """The model a row comes from: the run folder, the checkpoint and its weights' sha256."""
    record = loaded.record
    return {"run": str(record.run.resolve()), "checkpoint": record.checkpoint.name, "checkpoint_sha256": record.sha256}


def output_rows(loaded: LoadedModel, outputs: dict[str, np.ndarray], metric_set: str) -> list[dict[str, Any]]:
    """The per-clip values of one batch's outputs: the prediction and its classes, each unimodal head's
    prediction, and c_a / c_v for the modalities the model reads."""
    modalities = loaded.widths
    rows = []
    for i in range(len(outputs["prediction"])):
        p = float(outputs["prediction"][i])
        row = {"prediction": p, **classes(metric_set, p)}
        row |= {k: float(v[i]) for k, v in outputs.items() if k.startswith("prediction_")}
        row |= {f"c_{m[0]}": float(outputs[f"c_{m[0]}"][i]) for m in ("audio", "visual") if m in modalities}
        rows.append(row)
    return rows


def score_clips(loaded: LoadedModel, clips: Iterable[Clip]) -> Iterator[dict[str, Any]]:
    """One row per clip, in order: its identity, status and reason, transcript, and the model's outputs for
    scored clips (batches of the run's batch_size, in plan order, as `eval` makes them)."""
    metric_set, ident = run_metric_set(loaded), identity(loaded)
    pending: list[tuple[Clip, str, str | None]] = []

    def flush() -> Iterator[dict[str, Any]]:
        scored = [c for c, status, _ in pending if status == "ok"]
        batch = model_io.batch_of(loaded, [c.sample for c in scored]) if scored else None
        values = iter(output_rows(loaded, model_io.forward(loaded, batch), metric_set) if scored else [])
        for clip, status, reason in pending:
            plan = clip.plan
            yield {"clip_id": plan["clip_id"], "source_path": plan.get("video_path") or plan.get("audio_path"),
                   "status": status, "reason": reason, **(next(values) if status == "ok" else {}),
                   "transcript": clip.transcript, **ident}
        pending.clear()

    for clip in clips:
        pending.append((clip, *clip_status(clip)))
        if sum(status == "ok" for _, status, _ in pending) >= loaded.cfg.batch_size:
            yield from flush()
    yield from flush()


def folder_clips(loaded: LoadedModel, reader: ParquetReader, stages: list[str]) -> Iterator[Clip]:
    """Every clip of the reader's output folder, shard after shard (one reader: each marker read once)."""
    for shard in reader.shard_ids():
        yield from model_io.shard_clips(reader, shard, loaded, stages)
