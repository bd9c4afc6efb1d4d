"""Training batches from a `ShardReader`: streamed a shard at a time, never a whole dataset.

Pre-training samples are the clips with a masked transcript; fine-tuning samples are the labelled
clips of a split (with a transcript, unless the model reads no text). Text is tokenised with the
encoder's tokenizer with the masked word replaced by exactly one mask token; sequences are truncated
(documented defaults), batched by length and padded per batch with masks. The order is a function of
the seed and epoch only. The reader (opened once per run) checks the tables; with the run's `digests`,
each shard's tables are stat-checked again whenever an epoch reads them.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kebr_data.features import ssl_encoder as enc
from kebr_data.schema import clip_text
from kebr_data.storage.verified import Digests

from ..config import RAW_AUDIO
from .parquet import FRAME_STAGES
from .detect import open_reader
from .reader import ShardReader

MODALITIES = tuple(FRAME_STAGES)
MODALITY_LABELS = (("text", "label_t"), ("audio", "label_a"), ("visual", "label_v"))


_extractor = functools.lru_cache(maxsize=2)(enc.load_extractor)


@dataclass(frozen=True)
class RawAudio:
    """An in-graph audio encoder's input from the audio stage's FLAC (`modalities.audio = "audio"`): decoded,
    resampled to the model's rate and normalised by the model's feature extractor through the functions the
    ssl_audio stage uses, the first `max_s` seconds kept; one column of samples per clip, (N, 1)."""

    model: str   # the model folder (its feature extractor)
    kind: str    # its model_type
    rate: int    # its sampling rate
    max_s: float

    def values(self, row: dict | None) -> np.ndarray:
        """(N, 1) float32 input values; (0, 1) for a clip without audio or shorter than one encoder frame."""
        if row is None or row["status"] != "ok" or not row["flac"]:
            return np.zeros((0, 1), np.float32)
        y = enc.clip_samples(row["flac"], self.rate)[: int(self.max_s * self.rate)]
        if len(y) < enc.MIN_SAMPLES:
            return np.zeros((0, 1), np.float32)
        inputs = enc.model_inputs(_extractor(self.model), self.kind, [y], self.rate, False)
        return inputs["input_values"][0].numpy().astype(np.float32).reshape(-1, 1)


@dataclass
class DataConfig:
    max_text_tokens: int = 64       # [CLS] + words + [SEP]; a window around the [MASK] when longer
    max_audio_frames: int = 500     # ≈ 11.6 s at 43 frames/s (first frames kept)
    max_visual_frames: int = 250    # 10 s of 25 fps video (first frames kept)
    batch_size: int = 32
    bucket_batches: int = 50        # samples sorted by length within this many batches, then batches shuffled
    #: non-verbal modality -> the stage table its frames come from (the modalities the model reads)
    modalities: dict[str, str] = field(default_factory=lambda: dict(FRAME_STAGES))
    label: str = "label"            # the fine-tuning target column of the plan
    text: bool = True               # False: the encoder sees an empty text ([CLS] [SEP]; modality set `av`)
    raw_audio: RawAudio | None = None  # how the `audio` stage's FLAC becomes input values (an in-graph encoder)
    pad_to_max: bool = False        # pad every batch to the max_* lengths (the release's fixed shapes), not the longest

    def max_frames(self, modality: str) -> int:
        return self.max_audio_frames if modality == "audio" else self.max_visual_frames

    def padded_lengths(self) -> dict[str, int] | None:
        """With `pad_to_max`, the fixed length of every batch's text and frame tensors, else None (per batch)."""
        if not self.pad_to_max:
            return None
        return {"text": self.max_text_tokens, **{m: self.max_frames(m) for m in self.modalities}}


def _frames(row: dict | None, limit: int, dim: int) -> np.ndarray:
    if row is None or row["status"] != "ok" or row["features"] is None or len(row["features"]) == 0:
        return np.zeros((0, dim), np.float32)
    # a copy: the rows are read-only views of Arrow buffers, which torch.from_numpy warns about
    return np.array(row["features"][:limit], dtype=np.float32).reshape(-1, dim)


def encode_text(tokenizer: Any, text: str, masked: bool, max_tokens: int) -> tuple[list[int], int] | None:
    """Token ids (with special tokens) and the mask position (-1 when unmasked); None if the masked
    text does not hold exactly one mask token."""
    if masked:
        text = text.replace("[MASK]", tokenizer.mask_token)
    ids = tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
    pos = -1
    if masked:
        where = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
        if len(where) != 1:
            return None
        pos = where[0]
    if len(ids) > max_tokens:
        body = ids[1:-1]
        keep = max_tokens - 2
        start = 0 if pos < 0 else min(max(0, pos - 1 - keep // 2), len(body) - keep)
        ids = ids[:1] + body[start:start + keep] + ids[-1:]
        pos = pos - start if pos >= 0 else -1
    return ids, pos


def clip_frames(cfg: DataConfig, frame_rows: dict[str, list[dict] | None], i: int,
                widths: dict[str, int]) -> dict[str, np.ndarray]:
    """Clip `i`'s input per modality the model reads: its frames (cut to the max), or an in-graph audio
    encoder's input values from the audio stage's FLAC; none (0 frames) where its stage has no row."""
    frames = {}
    for m, stage in cfg.modalities.items():
        rows = frame_rows.get(stage)
        row = rows[i] if rows else None
        frames[m] = cfg.raw_audio.values(row) if stage == RAW_AUDIO and cfg.raw_audio else \
            _frames(row, cfg.max_frames(m), widths[m])
    return frames


def text_sample(tokenizer: Any, cfg: DataConfig, clip_id: str, text: str | None, frames: dict[str, np.ndarray],
                label: float = 0.0) -> dict[str, Any] | None:
    """A fine-tuning sample (unmasked text, the frames of `clip_frames` or made in memory), as eval and
    predict score it; None when the model reads text and the clip has none (a model that reads none, `av`,
    sees [CLS] [SEP])."""
    if cfg.text and not text:
        return None
    encoded = encode_text(tokenizer, (text or "") if cfg.text else "", False, cfg.max_text_tokens)
    if encoded is None:  # only a masked text can fail to encode
        return None
    return {"clip_id": clip_id, "input_ids": encoded[0], "mask_pos": encoded[1], "label": float(label), **frames}


def shard_samples(reader: ShardReader, shard: int, task: str, tokenizer: Any, cfg: DataConfig,
                  split: str | None = None, widths: dict[str, int] | None = None,
                  digests: Digests | None = None) -> Iterator[dict]:
    """The usable samples of one shard, in plan order; with `digests` (the run's verified tables) its
    tables are checked against their markers first."""
    widths = widths if widths is not None else reader.widths(cfg.modalities)
    rows = reader.shard_rows(shard, list(cfg.modalities.values()), digests)
    plan, mask, asr, frame_rows = rows.plan, rows.mask, rows.asr, rows.frames
    for i, p in enumerate(plan):
        if split is not None and p["split"] != split:
            continue
        if task == "pretrain":
            if mask is None or mask[i]["status"] != "ok":
                continue
            encoded = encode_text(tokenizer, mask[i]["masked_text"], True, cfg.max_text_tokens)
            if encoded is not None:
                yield {"clip_id": p["clip_id"], "input_ids": encoded[0], "mask_pos": encoded[1],
                       "label": float(mask[i]["label"]), **clip_frames(cfg, frame_rows, i, widths)}
            continue
        label = p.get(cfg.label)
        if label is None:
            continue
        text = clip_text(p["given_text"], mask[i] if mask else None, asr[i] if asr else None)
        sample = text_sample(tokenizer, cfg, p["clip_id"], text, clip_frames(cfg, frame_rows, i, widths), label)
        if sample is not None:  # the unimodal heads' targets: a per-modality label, else the main one
            yield sample | {f"label_{m}": float(label if p.get(col) is None else p[col]) for m, col in MODALITY_LABELS}


def _pad_frames(arrays: list[np.ndarray], dim: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    longest = length or max(1, max(a.shape[0] for a in arrays))
    x = torch.zeros(len(arrays), longest, dim)
    m = torch.zeros(len(arrays), longest, dtype=torch.bool)
    for i, a in enumerate(arrays):
        if a.shape[0]:
            x[i, : a.shape[0]] = torch.from_numpy(a)
            m[i, : a.shape[0]] = True
    return x, m


def collate(samples: list[dict], pad_id: int, lengths: dict[str, int] | None = None) -> dict[str, Any]:
    """Dynamic padding: every tensor as long as the batch's longest sequence (or `lengths[name]` for
    "text" and each modality: fixed shapes), with boolean masks; each modality `m` of the samples
    becomes `batch[m]` and `batch[m + "_mask"]`."""
    lengths = lengths or {}
    longest = lengths.get("text") or max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), longest), pad_id, dtype=torch.long)
    att = torch.zeros(len(samples), longest, dtype=torch.long)
    for i, s in enumerate(samples):
        ids[i, : len(s["input_ids"])] = torch.tensor(s["input_ids"])
        att[i, : len(s["input_ids"])] = 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": att}
    for m in (m for m in MODALITIES if m in samples[0]):
        batch[m], batch[f"{m}_mask"] = _pad_frames([s[m] for s in samples], samples[0][m].shape[1], lengths.get(m))
    for key in (f"label_{m}" for m, _ in MODALITY_LABELS if f"label_{m}" in samples[0]):
        batch[key] = torch.tensor([s[key] for s in samples], dtype=torch.float32)
    return batch | {"mask_pos": torch.tensor([max(s["mask_pos"], 0) for s in samples]),
                    "label": torch.tensor([s["label"] for s in samples], dtype=torch.float32),
                    "clip_id": [s["clip_id"] for s in samples]}


class ShardBatches(torch.utils.data.IterableDataset):
    """Batches from the shards of `data` (a reader, or a folder opened with `open_reader`): shards spread
    over DDP ranks and loader workers."""

    def __init__(self, data: ShardReader | Path, task: str, tokenizer: Any, cfg: DataConfig, seed: int = 0,
                 epoch: int = 0, split: str | None = None, shuffle: bool = True, rank: int = 0, world: int = 1,
                 digests: Digests | None = None) -> None:
        self.reader, self.task, self.tokenizer, self.cfg, self.digests = open_reader(data), task, tokenizer, cfg, digests
        self.seed, self.epoch, self.split, self.shuffle, self.rank, self.world = seed, epoch, split, shuffle, rank, world
        self.widths = self.reader.widths(cfg.modalities)

    def _my_shards(self) -> list[int]:
        shards = self.reader.shard_ids()
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(shards)
        info = torch.utils.data.get_worker_info()
        workers, wid = (info.num_workers, info.id) if info else (1, 0)
        return shards[self.rank * workers + wid::self.world * workers]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for samples in self.sample_batches():
            yield collate(samples, self.tokenizer.pad_token_id, self.cfg.padded_lengths())

    def sample_batches(self) -> Iterator[list[dict]]:
        """Batches as lists of samples, before padding: length-bucketed within a buffer, then shuffled."""
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}")
        buffer: list[dict] = []
        size = self.cfg.batch_size * (self.cfg.bucket_batches if self.shuffle else 1)
        for shard in self._my_shards():
            for sample in shard_samples(self.reader, shard, self.task, self.tokenizer, self.cfg, self.split,
                                        self.widths, self.digests):
                buffer.append(sample)
                if len(buffer) >= size:
                    yield from self._bucket(buffer, rng)
                    buffer = []
        if buffer:
            yield from self._bucket(buffer, rng)

    def _bucket(self, samples: list[dict], rng: random.Random) -> Iterator[list[dict]]:
        if self.shuffle:
            samples = sorted(samples, key=lambda s: (len(s["input_ids"]),
                                                    sum(s[m].shape[0] for m in self.cfg.modalities), s["clip_id"]))
        bs = self.cfg.batch_size
        batches = [samples[i:i + bs] for i in range(0, len(samples), bs)]
        if self.shuffle:
            rng.shuffle(batches)
        yield from batches
