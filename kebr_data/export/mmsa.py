"""`--format mmsa`: MMSA's pickle layout (`train/valid/test` -> `id, raw_text, audio, vision,
audio_lengths, vision_lengths, regression_labels[, regression_labels_T/A/V]`), padded or truncated
to `audio_len` and `vision_len` frames, as the released KEBR code expects (400 and 55: aoqzhu/KEBR
data/CMU-MOSI/get_audio_embedding.py:8, get_video_embedding.py:8).

Only clips that are `ok` in every exported stage and have a transcript and a label are written
(the others are counted and reported). The regression label comes from `label`: `plan` (the
dataset's annotation) or `mask` (the mask stage's sentiment-word label, for unlabelled data). A
modality whose stage has no outputs is refused unless `allow_missing` (then it is zero-filled, said
so in the note). An export that would hold no clip is refused (exit 2), naming `--label mask` when
the plan has no label.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError
from ..settings import option
from ..stages import registry
from ..storage.atomic import atomic_write
from ..storage.store import Store, frames_of
from .base import FolderFormat, ShardTables

SPLITS = ("train", "valid", "test")
#: MMSA's modality keys and the stages that feed them
MODALITIES = {"audio": "acoustic", "vision": "visual"}


@dataclass
class MmsaOptions:
    """The options of `--format mmsa`."""

    audio_len: int = option(400, "audio frames kept (padded/truncated)", min=1)
    vision_len: int = option(55, "visual frames kept (padded/truncated)", min=1)
    label: Literal["plan", "mask"] = option("plan", "regression label from the plan (the dataset's annotation) "
                                                    "or from the mask stage")
    allow_missing: bool = option(False, "write zeros for a modality whose stage has no outputs instead of "
                                        "refusing", flag="allow-missing-modality")


class MmsaFormat(FolderFormat):
    """MMSA's pickle layout; options: `MmsaOptions`."""

    Options = MmsaOptions
    options: MmsaOptions

    def describe(self) -> str:
        return "MMSA's pickle layout (train/valid/test)"

    def check(self, store: Store, stages: list[str]) -> None:
        if self.options.label == "mask" and "mask" not in stages:
            raise ConfigError(f"--label mask needs the mask stage: run `kebr-data mask --out {store.root}` first")
        absent = [f"{key} ({stage})" for key, stage in MODALITIES.items() if stage not in stages]
        if absent and not self.options.allow_missing:
            raise ConfigError(f"{store.root} has no outputs for {', '.join(absent)}: MMSA models expect every "
                              "modality. Run that stage, or pass --allow-missing-modality to write zeros for it")

    def _rows(self, tables: ShardTables, skipped: collections.Counter) -> list[dict[str, Any]]:
        text, _, mask_label = tables.texts()
        plan = tables.plan.to_pylist()
        statuses = {s: t.column("status").to_pylist() for s, t in tables.stages.items()}
        frames = {key: frames_of(tables.stages[stage].column("features")) if stage in tables.stages else None
                  for key, stage in MODALITIES.items()}
        lengths = {"audio": self.options.audio_len, "vision": self.options.vision_len}
        rows = []
        for i, p in enumerate(plan):
            bad = next((s for s, st in statuses.items() if st[i] != "ok"), None)
            label = p["label"] if self.options.label == "plan" else mask_label[i]
            if bad is not None:
                skipped[f"not ok in {bad}"] += 1
                continue
            if not text[i]:
                skipped["no transcript"] += 1
                continue
            if label is None or np.isnan(label):
                skipped[f"no {self.options.label} label"] += 1
                continue
            row = {"split": p["split"] if p["split"] in SPLITS else "train", "id": p["clip_id"], "raw_text": text[i],
                   "regression_labels": float(label),
                   **{f"regression_labels_{m.upper()}": np.nan if p.get(f"label_{m}") is None else p[f"label_{m}"]
                      for m in "tav"}}
            for key, f in frames.items():
                dim = f.dim if f is not None else registry()[MODALITIES[key]].frame_columns()["features"]
                a = f.clip(i)[:lengths[key]] if f is not None else np.zeros((0, dim), np.float32)
                padded = np.zeros((lengths[key], dim), np.float32)
                padded[: len(a)] = a
                row[key], row[f"{key}_lengths"] = padded, len(a)
            rows.append(row)
        return rows

    def build(self, shards: list[ShardTables]) -> tuple[dict[str, dict[str, Any]], str]:
        """MMSA's split dicts and the note (clips per split, why others were left out); refuses an export
        that would write no clip, naming `--label mask` for unlabelled data."""
        skipped: collections.Counter = collections.Counter()
        by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        for tables in shards:
            for r in self._rows(tables, skipped):
                by_split[r.pop("split")].append(r)
        data = {}
        for split, rows in by_split.items():
            data[split] = {"id": [r["id"] for r in rows],
                           "raw_text": np.array([r["raw_text"] for r in rows], dtype=object),
                           "regression_labels": np.array([r["regression_labels"] for r in rows], np.float32)}
            for m in "TAV":  # CH-SIMS's per-modality labels (NaN where the plan has none), as MMSA names them
                key = f"regression_labels_{m}"
                if any(not np.isnan(r[key]) for by in by_split.values() for r in by):
                    data[split][key] = np.array([r[key] for r in rows], np.float32)
            for key, stage in MODALITIES.items():
                dim = registry()[stage].frame_columns()["features"]
                length = self.options.audio_len if key == "audio" else self.options.vision_len
                data[split][key] = np.stack([r[key] for r in rows]) if rows else np.zeros((0, length, dim), np.float32)
                data[split][f"{key}_lengths"] = [r[f"{key}_lengths"] for r in rows]
        counts = ", ".join(f"{split} {len(data[split]['id'])}" for split in SPLITS)
        left = ", ".join(f"{n} {why}" for why, n in skipped.most_common()) or "none"
        present = {stage for tables in shards for stage in tables.stages}
        zeros = [key for key, stage in MODALITIES.items() if stage not in present]
        note = f"; {', '.join(zeros)} zero-filled (no outputs)" if zeros else ""
        written = sum(len(v["id"]) for v in data.values())
        if not written:
            raise ConfigError(f"no clip written: every clip was left out ({left}); {self._no_clip_hint()}")
        return data, f"{written} clip(s) written ({counts}); left out: {left}{note}"

    def _no_clip_hint(self) -> str:
        if self.options.label == "plan":
            return ("unlabelled data needs --label mask (the mask stage's sentiment-word labels, after "
                    "`kebr-data mask`)")
        return "check `kebr-data status` for the stages' failed clips and the mask stage's labels"

    def write(self, dest: Path, content: dict[str, dict[str, Any]]) -> None:
        """Write `mmsa.pkl` (pickle protocol 4, renamed into place)."""
        atomic_write(dest / "mmsa.pkl", lambda fh: pickle.dump(content, fh, protocol=4), dest)
