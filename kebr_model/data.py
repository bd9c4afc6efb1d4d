"""Training data from kebr-data shards: streamed a shard at a time, never a whole dataset.

A shard's stage tables (plan, mask, asr, and the stage of each non-verbal modality: any stage with
a `features` frame column, its width read from the shards, or the audio stage's FLAC as the raw
waveform of an in-graph audio encoder, see `RawAudio`) are read through the store, side by
side, and checked row by row against the plan; tables that are not committed and current, and the
absent stage of a modality the run reads, are refused before training starts (`check_folder`).
Pre-training samples are the clips with a masked transcript; fine-tuning samples are the labelled
clips of a split. Text is tokenised with the encoder's tokenizer with the masked word
replaced by exactly one mask token; sequences are truncated (documented defaults), batched by
length and padded per batch with masks. The order is a function of the seed and epoch only.

Each table's sha256 is checked against its marker once per run (`check_folder`, remembered by stat in
the run folder's `verified_tables.json`), and each shard's tables are stat-checked again whenever an
epoch reads them (re-hashed only if they changed), so a table edited in place is never trained on.
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

from kebr_data.errors import PlanError, StaleOutputError
from kebr_data.features import ssl_encoder as enc
from kebr_data.schema import clip_text
from kebr_data.storage.store import PLAN, Store, fix_command
from kebr_data.storage.verified import Digests

from .config import RAW_AUDIO

#: columns read from the text stages; the modality stages give `status` and their `features` frames
TEXT_COLUMNS = {"mask": ["status", "masked_text", "text", "label"], "asr": ["status", "text"]}
STAGE_COLUMNS = {**TEXT_COLUMNS, RAW_AUDIO: ["status", "flac"]}
MODALITIES = ("audio", "visual")
LABELS = ("label", "label_t", "label_a", "label_v")
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
    modalities: dict[str, str] = field(default_factory=lambda: {"audio": "acoustic", "visual": "visual"})
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


def hdf5_export(root: Path) -> bool:
    """True when `root` is a `kebr-data export --format hdf5` folder rather than an output folder."""
    return not (root / "plan").is_dir() and any(root.glob("shard-*.h5"))


def shard_ids(root: Path) -> list[int]:
    if hdf5_export(root):
        return sorted(int(p.stem.split("-")[1]) for p in root.glob("shard-*.h5"))
    store = Store(root)
    if store.plan_or_none() is None:
        raise PlanError(f"{root} is neither a kebr-data output folder nor an HDF5 export: make one with "
                        "`kebr-data extract --src DATASET --out FOLDER`")
    return list(range(store.plan.num_shards))


def modality_widths(root: Path, modalities: dict[str, str]) -> dict[str, int]:
    """Frame width per modality, read from the shards (the stage table's schema, or the HDF5 export's
    arrays); PlanError for a stage with no frames there. The audio stage's raw waveform is one sample per
    row (width 1) and needs the stage committed."""
    widths = {}
    for m, stage in modalities.items():
        if stage == RAW_AUDIO:
            fix = ("is an HDF5 export, which drops the FLAC: give the kebr-data output folder" if hdf5_export(root)
                   else None if Store(root).committed_shards(RAW_AUDIO) else
                   f"has no committed audio/ table: run `kebr-data audio --out {root}`")
            if fix:
                raise PlanError(f"modalities.{m} = {RAW_AUDIO!r} reads the audio stage's FLAC, but {root} {fix}")
            widths[m] = 1
            continue
        width = None
        if hdf5_export(root):
            for path in sorted(root.glob("shard-*.h5")):
                import h5py

                with h5py.File(path, "r") as f:
                    if stage in f and "values" in f[stage]:
                        width = int(f[stage]["values"].shape[1])
                        break
        else:
            width = Store(root).frame_width(stage)
        if width is None:  # never a width made up for frames that are not there (a run without the modality)
            where, fix = ("HDF5 export has no", "export it from an output folder that has the stage") \
                if hdf5_export(root) else ("output folder has no committed", f"run `{fix_command(root, stage)}`")
            raise PlanError(f"modalities.{m} = {stage!r}: the {where} {stage} table with a `features` frame "
                            f"column in {root}; {fix}, or pick another modalities.{m}, or a modalities.use "
                            f"without {m[0]}")
        widths[m] = width
    return widths


def check_folder(root: Path, task: str, allow_stale: bool = False,
                 modalities: dict[str, str] | None = None, digests: Digests | None = None) -> list[str]:
    """The stages training will read; refuses (StaleOutputError naming the fix) tables that are not committed,
    current (sha256 against their markers, through `digests`: a table already hashed with the same stat is
    not hashed again) and aligned with the plan, unless `allow_stale`. The stage of every modality in
    `modalities` (those the model reads) must be there even with `allow_stale` (PlanError): without it the
    model would train on empty frames, a text-only run under the modality's name."""
    if hdf5_export(root):
        if not allow_stale:
            check_hdf5_export(root, digests or Digests())
        return []
    store = Store(root, digests)
    shard_ids(root)
    present = set(store.stages())
    modalities = DataConfig().modalities if modalities is None else modalities
    for m, stage in modalities.items():
        if stage not in present and stage != RAW_AUDIO:  # the raw waveform's own message: `modality_widths`
            raise PlanError(f"modalities.{m} = {stage!r}, but {root} has no committed {stage}/ table: run "
                            f"`{fix_command(root, stage)}`, or pick another modalities.{m} or a modalities.use "
                            f"without {m[0]}")
    wanted = [*TEXT_COLUMNS, *modalities.values()]
    used = [s for s in dict.fromkeys(wanted) if s in present]
    if task == "pretrain" and "mask" not in present:
        raise PlanError(f"{root} has no mask/ tables, which pre-training learns from: run "
                        f"`kebr-data mask --out {root}`")
    if not allow_stale:
        store.require_current([PLAN, *used], verify=True)
        store.digests.save()
    return used


def check_hdf5_export(root: Path, digests: Digests) -> None:
    """Refuse (StaleOutputError) an HDF5 export file whose size and sha256 are not the ones its export marker
    (`_done/shard-NNNNN.json`) recorded: an export file edited, truncated or replaced after it was written."""
    from kebr_data.export.base import done_path, recorded_output

    again = "export it again from its output folder (`kebr-data export --out FOLDER --format hdf5`)"
    for h5 in sorted(root.glob("shard-*.h5")):
        recorded, marker = recorded_output(root, h5.stem), done_path(root, h5.stem)
        if recorded is None:
            raise StaleOutputError(f"{h5} has no export marker recording its sha256 ({marker}): {again}")
        if digests.digest(h5) != recorded:
            raise StaleOutputError(f"{h5} is not the file its export wrote (its size or sha256 differs from "
                                   f"{marker}): {again}")
    digests.save()


def _label(value: Any, clip_id: str, path: Path) -> float | None:
    """A label cell of an HDF5 export as a float; None for a missing one (None or NaN, as HDF5 exports
    store it). An infinite label is refused (PlanError naming the clip), as `kebr-data validate` refuses
    it in the stage tables: the trainer would learn infinity."""
    if value is None or np.isnan(float(value)):
        return None
    if not np.isfinite(float(value)):
        raise PlanError(f"clip {clip_id!r} in {path} has the label {float(value)}, not a finite number: fix the "
                        "source of that clip, check the output folder with `kebr-data validate --out FOLDER` and "
                        "export it again")
    return float(value)


def _hdf5_rows(root: Path, shard: int, stages: list[str]) -> tuple[list, list, list, dict[str, list | None]]:
    """The plan, mask, asr and frame-stage rows of one HDF5 export file, shaped like the stage tables."""
    from kebr_data.export import read_hdf5

    path = root / f"shard-{shard:05d}.h5"
    d = read_hdf5(path)
    n = len(d["clip_id"])
    plan = [{"clip_id": d["clip_id"][i], "split": d["split"][i] or None, "given_text": None,
             **{c: _label(d[c][i], d["clip_id"][i], path) for c in LABELS if c in d}} for i in range(n)]
    mask = [{"status": "ok" if d["masked_text"][i] else "skipped", "masked_text": d["masked_text"][i],
             "text": d["text"][i], "label": float(d["mask_label"][i])} for i in range(n)]
    asr = [{"status": "ok" if d["text"][i] else "skipped", "text": d["text"][i]} for i in range(n)]
    frames = {s: [{"status": "ok", "features": d[s][i]} for i in range(n)] if s in d else None for s in stages}
    return plan, mask, asr, frames


def _stage_rows(store: Store, stage: str, shard: int, ids: list[str], frames: bool) -> list[dict] | None:
    """Rows of a committed stage table, checked against the plan's clip ids; frame features come as one
    numpy array per row, sliced from the column's Arrow buffer rather than built from Python floats."""
    if store.marker(stage, shard) is None:
        return None
    rows = store.read_aligned(stage, shard, STAGE_COLUMNS.get(stage, ["status"]), ids).to_pylist()
    if frames:
        column = store.frames(stage, shard)
        for i, row in enumerate(rows):
            row["features"] = column.clip(i)
    return rows


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


def _recheck(store: Store, shard: int, stages: list[str]) -> None:
    """Refuse a shard whose tables changed since `check_folder` verified them (a stat each; a changed
    table is hashed again and must still match its marker)."""
    for stage in [PLAN, *(s for s in stages if store.marker(s, shard) is not None)]:
        if why := store.problem(stage, shard, verify=True):
            raise StaleOutputError(f"{stage} shard {shard:05d} of {store.root} changed during training ({why}); "
                                   f"fix: {fix_command(store.root, stage)}, then rerun with --resume auto")


def shard_samples(root: Path, shard: int, task: str, tokenizer: Any, cfg: DataConfig,
                  split: str | None = None, widths: dict[str, int] | None = None,
                  digests: Digests | None = None) -> Iterator[dict]:
    """The usable samples of one shard, in plan order; with `digests` (the run's verified tables) its
    tables are checked against their markers first."""
    widths = widths if widths is not None else modality_widths(root, cfg.modalities)
    stages = list(cfg.modalities.values())
    if hdf5_export(root):
        plan, mask, asr, frame_rows = _hdf5_rows(root, shard, stages)
    else:
        store = Store(root, digests)
        if digests is not None:
            _recheck(store, shard, ["mask", "asr", *stages])
        plan = store.read(PLAN, shard).to_pylist()
        ids = [p["clip_id"] for p in plan]
        mask, asr = (_stage_rows(store, s, shard, ids, False) for s in ("mask", "asr"))
        frame_rows = {s: _stage_rows(store, s, shard, ids, s != RAW_AUDIO) for s in stages}
    for i, p in enumerate(plan or []):
        if split is not None and p["split"] != split:
            continue
        if task == "pretrain":
            if mask is None or mask[i]["status"] != "ok":
                continue
            encoded = encode_text(tokenizer, mask[i]["masked_text"], True, cfg.max_text_tokens)
            label = mask[i]["label"]
        else:
            label = p.get(cfg.label)
            if label is None:
                continue
            text = clip_text(p["given_text"], mask[i] if mask else None, asr[i] if asr else None)
            if not text:
                continue
            encoded = encode_text(tokenizer, text if cfg.text else "", False, cfg.max_text_tokens)
        if encoded is None:
            continue
        sample = {"clip_id": p["clip_id"], "input_ids": encoded[0], "mask_pos": encoded[1], "label": float(label)}
        if task != "pretrain":  # the unimodal heads' targets: a per-modality label, else the main one
            sample |= {f"label_{m}": float(label if p.get(col) is None else p[col]) for m, col in MODALITY_LABELS}
        for m, stage in cfg.modalities.items():
            rows = frame_rows.get(stage)
            row = rows[i] if rows else None
            if stage == RAW_AUDIO:
                sample[m] = cfg.raw_audio.values(row)
            else:
                sample[m] = _frames(row, cfg.max_frames(m), widths[m])
        yield sample


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
    """Batches from the shards of `root`: shards spread over DDP ranks and loader workers."""

    def __init__(self, root: Path, task: str, tokenizer: Any, cfg: DataConfig, seed: int = 0, epoch: int = 0,
                 split: str | None = None, shuffle: bool = True, rank: int = 0, world: int = 1,
                 digests: Digests | None = None) -> None:
        self.root, self.task, self.tokenizer, self.cfg, self.digests = Path(root), task, tokenizer, cfg, digests
        self.seed, self.epoch, self.split, self.shuffle, self.rank, self.world = seed, epoch, split, shuffle, rank, world
        self.widths = modality_widths(self.root, cfg.modalities)

    def _my_shards(self) -> list[int]:
        shards = shard_ids(self.root)
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
            for sample in shard_samples(self.root, shard, self.task, self.tokenizer, self.cfg, self.split,
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
