"""The Python API: `kebr_model.load_run(path)` loads a fine-tuned run once; its `.predict(...)` runs the
same pipeline as `kebr-train predict --src`, `.predict_shards(...)` that of `--shards`, and
`.predict_batch(...)` scores features already in memory (`.make_batch` builds such a batch)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ..data.parquet import ParquetReader
from . import model_io, pipeline, scoring, settings_check
from .model_io import LoadedModel


def _rejected(reader: ParquetReader) -> list[dict[str, Any]]:
    """Rows for the entries the index stage rejected (not media, unreadable manifest rows), as it lists them."""
    return [{"clip_id": None, "source_path": str(e["entry"]), "status": "rejected", "reason": str(e["reason"])}
            for e in reader.store.plan.rejected_examples]


class Run:
    """A fine-tuned run's best (else latest) checkpoint, built once; see the module's docstring."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    @property
    def widths(self) -> dict[str, int]:
        """The frame width per modality the model reads (`make_batch`'s arrays)."""
        return self.loaded.widths

    @property
    def metric_set(self) -> str:
        """mosi, sims or sims2: the classes each row carries."""
        return scoring.run_metric_set(self.loaded)

    def predict(self, paths: str | Path | Sequence[str | Path], out: str | Path | None = None,
                overrides: Sequence[str] = (), console: Console | None = None) -> list[dict[str, Any]]:
        """Rows (dicts, the columns of predictions.parquet) for a video or audio file, several files, a folder
        in any supported layout or a manifest: the stages the model needs run into OUT/cache (`out`; a
        temporary folder, removed afterwards, when None) with the training shards' settings (`overrides`:
        kebr-data `section.key=value` that do not change a stage's output, e.g. a binary's path)."""
        src = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        prepared = pipeline.prepare(self.loaded.record, src, tuple(overrides))
        if out is None:
            with tempfile.TemporaryDirectory(prefix="kebr-predict-") as tmp:
                return self._predict(prepared, Path(tmp), console)
        return self._predict(prepared, Path(out), console)

    def _predict(self, prepared: pipeline.Prepared, out: Path, console: Console | None) -> list[dict[str, Any]]:
        cache, _ = pipeline.run_stages(prepared, out, console)
        settings_check.check_widths(*model_io.frame_widths(cache, self.loaded.record), cache)
        reader = ParquetReader(cache)  # the cache is an output folder: its shards, stage rows and rejections
        return self._score(reader, prepared.stages) + _rejected(reader)

    def predict_shards(self, shards: str | Path) -> list[dict[str, Any]]:
        """Rows for the clips of an existing output folder whose stages were made with the training shards'
        settings (refused otherwise, SettingsMismatch)."""
        root = Path(shards)
        stages = check_shards(self.loaded.record, root)  # an output folder, not an HDF5 export
        reader = ParquetReader(root)
        present = set(reader.store.stages())
        return self._score(reader, [s for s in ("audio", "asr", *stages) if s in present])

    def _score(self, reader: ParquetReader, stages: list[str]) -> list[dict[str, Any]]:
        return list(scoring.score_clips(self.loaded, scoring.folder_clips(self.loaded, reader, stages)))

    def make_batch(self, texts: Sequence[str], **frames: Sequence[np.ndarray]) -> dict[str, Any]:
        """A batch from features in memory: one transcript per clip and, per modality the model reads
        (`audio`, `visual`), one (frames, width) float32 array per clip (cut to the run's max frames)."""
        cfg = self.loaded.data_cfg
        missing = [m for m in cfg.modalities if m not in frames]
        if missing:
            raise ValueError(f"the model reads {', '.join(missing)}: give {missing[0]}=[one array per clip]")
        samples = []
        for i, text in enumerate(texts):
            arrays = {m: np.asarray(frames[m][i], np.float32)[:cfg.max_frames(m)] for m in cfg.modalities}
            sample = model_io.make_sample(self.loaded, f"clip{i}", text, arrays)
            if sample is None:
                raise ValueError(f"clip {i} has no text, which the model reads")
            samples.append(sample)
        return model_io.batch_of(self.loaded, samples)

    def predict_batch(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows (prediction, classes, unimodal heads, c_a, c_v) for a batch as `make_batch` (or the
        trainer's loader) makes it."""
        outputs = model_io.forward(self.loaded, batch)
        return scoring.output_rows(self.loaded, outputs, self.metric_set)


def check_shards(record: model_io.RunRecord, root: Path) -> list[str]:
    """`root` is an output folder whose stages were made as the run's training shards were (refused
    otherwise); returns the stages of the model's modalities."""
    model_io.require_output_folder(root)
    source = settings_check.source_record(record.data, record.run, settings=False)
    stages = settings_check.modality_stages(record.cfg.used)
    settings_check.check_folder(source, root, stages)
    settings_check.check_widths(*model_io.frame_widths(root, record), root)
    return stages


def load_run(path: str | Path) -> Run:
    """Load a fine-tuned run (its `--out` folder) once, for `.predict`, `.predict_shards` and `.predict_batch`."""
    return Run(model_io.load_model(model_io.read_run(Path(path))))
