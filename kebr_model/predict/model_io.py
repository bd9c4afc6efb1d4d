"""The one adapter between `kebr-train predict` and the trainer: how `eval` finds a run's checkpoint and
builds its model, how the loader turns a clip's stage rows into a sample, and a batch into the model's
outputs. Everything else in `kebr_model.predict` goes through these functions, so a change of the
trainer's internals is followed here alone.

Samples are made as the loader makes them for `eval` (`kebr_model.data`: the same text rule, tokenizer,
truncation, frames and padding), for every clip of the plan, labelled or not."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kebr_data.schema import clip_text

from ..training import checkpoint
from ..config import RAW_AUDIO, TrainConfig
from ..data import DataConfig, clip_frames, collate, is_hdf5_export, open_reader, text_sample
from ..data.parquet import ParquetReader
from ..model import KEBR
from ..errors import TrainSetupError

#: the columns of a stage row that say why a clip was not processed
WHY = ["status", "error", "message"]


@dataclass
class RunRecord:
    """A fine-tuned run's checkpoint and what its state.json records, read before any model is built."""

    run: Path
    checkpoint: Path
    state: dict[str, Any]
    cfg: TrainConfig

    @property
    def data(self) -> dict[str, Any]:
        """The run's data identity (state.json `data`), its `source` included."""
        return self.state.get("data", {})

    @property
    def sha256(self) -> str:
        """model.pt's sha256, as the checkpoint's state.json records it."""
        return self.state.get("files", {}).get("model.pt", "")

    @property
    def reads_text(self) -> bool:
        return "t" in self.cfg.modalities.use


@dataclass
class LoadedModel:
    """A run's checkpoint, built and loaded once: its record, tokenizer, model and how batches are made."""

    record: RunRecord
    tokenizer: Any
    model: KEBR
    data_cfg: DataConfig
    device: torch.device
    autocast: torch.dtype | None

    @property
    def cfg(self) -> TrainConfig:
        return self.record.cfg

    @property
    def widths(self) -> dict[str, int]:
        """The model's frame width per modality (an in-graph audio encoder's own width for `audio`)."""
        return dict(self.model.widths)


def read_run(run: Path) -> RunRecord:
    """A fine-tuned run's checkpoint, its state.json and settings; a pre-training run is refused."""
    ckpt = checkpoint.evaluated(run)
    state = checkpoint.read_state(ckpt)
    cfg = TrainConfig.load((), (), **state["config"])
    if cfg.task != "finetune":
        raise TrainSetupError(f"{run} is a {cfg.task} run: predict scores clips with a fine-tuned run (give the "
                              "--out of `kebr-train finetune`)")
    return RunRecord(run, ckpt, state, cfg)


def load_model(record: RunRecord) -> LoadedModel:
    """Build the run's model as `eval` does and load its checkpoint into it."""
    from ..audio_encoder import load_audio_encoder
    from ..training.train import autocast_dtype, load_encoder, seed_everything

    cfg = record.cfg
    widths = dict(record.data.get("widths", {}))
    if set(widths) != set(cfg.used):
        raise TrainSetupError(f"{record.checkpoint} records no frame widths for {', '.join(sorted(cfg.used))} (a "
                              "run made before the data record): fine-tune it again to predict with it")
    seed_everything(cfg.seed)
    tokenizer, encoder = load_encoder(cfg.encoder, cfg.encoder_dropout)
    audio_encoder, raw = load_audio_encoder(cfg) if cfg.used.get("audio") == RAW_AUDIO else (None, None)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = KEBR(encoder, widths, cfg, audio_encoder).to(device)
    checkpoint.load(record.checkpoint, model, restore_rng=False)
    model.eval()
    data_cfg = DataConfig(cfg.max_text_tokens, cfg.max_audio_frames, cfg.max_visual_frames, cfg.batch_size,
                          modalities=cfg.used, label=cfg.label, text=record.reads_text, raw_audio=raw,
                          pad_to_max=cfg.pad_to_max)
    return LoadedModel(record, tokenizer, model, data_cfg, device, autocast_dtype(cfg.precision, device))


def require_output_folder(root: Path) -> None:
    """`root` is a kebr-data output folder (PlanError naming the fix otherwise; an HDF5 export has no stage
    rows to say why a clip was not scored)."""
    if is_hdf5_export(root):
        raise TrainSetupError(f"{root} is an HDF5 export: predict reads the output folder it was exported from")
    open_reader(root).shard_ids()


def frame_widths(root: Path, record: RunRecord) -> tuple[dict[str, int], dict[str, int]]:
    """(the widths the run's model was built with, those of the stage tables in `root`), for the modalities
    read from a table (an in-graph audio encoder's waveform has no width to compare)."""
    tables = {m: s for m, s in record.cfg.used.items() if s != RAW_AUDIO}
    built = record.data.get("widths", {})
    return {m: built.get(m) for m in tables}, open_reader(root).widths(tables)


@dataclass
class Clip:
    """One plan clip: what the rows say about it, and its sample when the model can score it."""

    plan: dict[str, Any]
    rows: dict[str, dict[str, Any]]   # stage -> its row's status, error, message
    transcript: str | None
    sample: dict[str, Any] | None


def make_sample(loaded: LoadedModel, clip_id: str, text: str | None,
                frames: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """A sample as the loader makes it (`text_sample`, which `shard_samples` uses), without a label; None
    when the model reads text and the clip has none."""
    return text_sample(loaded.tokenizer, loaded.data_cfg, clip_id, text, frames)


def shard_clips(reader: ParquetReader, shard: int, loaded: LoadedModel, stages: list[str]) -> Iterator[Clip]:
    """Every clip of one shard of the reader's output folder in plan order, with its rows in `stages` (those
    present) and its sample (frames cut to the model's limits, the raw waveform through the model's feature
    extractor)."""
    cfg = loaded.data_cfg
    rows = reader.shard_rows(shard, list(dict.fromkeys(cfg.modalities.values())))
    plan, mask, asr, frame_rows = rows.plan, rows.mask, rows.asr, rows.frames
    ids, store = [p["clip_id"] for p in plan], reader.store
    why = {s: store.read_aligned(s, shard, WHY, ids).to_pylist() for s in stages if store.marker(s, shard)}
    widths = loaded.widths  # the folder's, checked before (`frame_widths`)
    for i, p in enumerate(plan):
        text = clip_text(p["given_text"], mask[i] if mask else None, asr[i] if asr else None)
        sample = make_sample(loaded, p["clip_id"], text, clip_frames(cfg, frame_rows, i, widths))
        yield Clip(p, {s: rows[i] for s, rows in why.items()}, text, sample)


def batch_of(loaded: LoadedModel, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples padded into one batch, as the loader pads them."""
    return collate(samples, loaded.tokenizer.pad_token_id, loaded.data_cfg.padded_lengths())


@torch.no_grad()
def forward(loaded: LoadedModel, batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """The model's outputs on one batch, as `eval` computes them: prediction, c_a, c_v and each unimodal
    head's prediction (`prediction_<modality>`), float32 arrays of the batch's length."""
    batch = {k: v.to(loaded.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    ctx = torch.autocast(loaded.device.type, dtype=loaded.autocast) if loaded.autocast else contextlib.nullcontext()
    with ctx:
        out = loaded.model(batch, loaded.cfg.task)
    arrays = {"prediction": out.prediction, "c_a": out.c_a, "c_v": out.c_v,
              **{f"prediction_{m}": p for m, p in out.modal.items()}}
    return {k: v.float().cpu().numpy() for k, v in arrays.items()}
