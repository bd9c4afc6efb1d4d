"""The ssl_audio stage: frames of a local self-supervised (HuBERT, wav2vec2, data2vec-audio) or
Whisper encoder, from the audio stage's FLAC resampled to the model's rate (soxr_hq via librosa).

The output width D (hidden size, or hidden states × hidden size for `layer = "all"`) is read from
the model's config.json when the stage is built, so the table's schema carries it; the class
declares `ANY_WIDTH`. The model's identity (sha256 of its weight and config files) replaces its
path in the config hash: moving the folder keeps outputs current, another checkpoint does not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ..deps import missing
from ..features import ssl_encoder as enc
from ..features.model_size import size_problem
from ..features.numba_cache import first_use
from ..resources import Resources
from ..schema import ANY_WIDTH, COMMON, frame_field, rows_to_batch, with_metadata
from ..settings import content_hash, setting
from .base import ClipInput, ShardContext, Stage, iter_clips, row


def ssl_schema(width: int) -> pa.Schema:
    return pa.schema(COMMON + [
        pa.field("model", pa.string()),
        pa.field("layer", pa.string()),
        pa.field("frame_rate", pa.float32()),
        pa.field("num_frames", pa.int32()),
        pa.field("num_layers", pa.int32()),
        frame_field("features", width),
    ])


@functools.lru_cache(maxsize=1)
def encoder(model: str, device: str) -> enc.Encoder:
    """One loaded model per worker process (kept across shards)."""
    return enc.Encoder(model, device)


@dataclass
class SslAudioSettings:
    """The ssl_audio stage: frames of a local HuBERT / wav2vec2 / data2vec-audio / Whisper encoder."""

    model: str = setting("", "a local Hugging Face model folder (config.json, preprocessor_config.json, weights); "
                              "never downloaded")
    layer: str = setting("last", "last | all (every hidden state, frames x (layers+1)*D, layer-major) | an index "
                                 "into the hidden states as a string ('0' = transformer input, '-1' = last)",
                         check=lambda v: None if v in ("last", "all") or v.removeprefix("-").isdigit() else
                         f"must be last, all or a hidden-state index such as '-1', got {v!r}")
    pooling: Literal["none", "mean"] = setting("none", "none: frames at the model's rate (~50/s); mean: one row, "
                                                       "the mean over the clip's frames")
    max_chunk_s: float = setting(30.0, "clips longer than this are encoded in overlapping chunks (Whisper: at most "
                                       "30)", min=1.0, max=600.0)
    chunk_overlap_s: float = setting(2.0, "overlap of consecutive chunks; each overlap is cut in its middle",
                                     min=0.1, max=60.0)
    batch_size: int = setting(8, "chunks per forward pass, grouped by length", min=1, runtime=True)
    device: Literal["cpu", "cuda"] = setting("cpu", "cuda runs in float16")
    max_params: float = setting(2e9, "refuse a model whose parameter count, computed from its config.json before "
                                     "it is loaded, exceeds this", min=1.0, runtime=True)

    @staticmethod
    def problems(values: dict[str, Any]) -> list[str]:
        """Checks across keys (run by kebr_data.config whenever the configuration is loaded)."""
        if values["chunk_overlap_s"] * 2 >= values["max_chunk_s"]:
            return [f"ssl_audio.chunk_overlap_s ({values['chunk_overlap_s']:g}) must be less than half of "
                    f"ssl_audio.max_chunk_s ({values['max_chunk_s']:g})"]
        return []


class SslAudioStage(Stage):
    """frames × D float32 per clip (or 1 × D with mean pooling)."""

    name = "ssl_audio"
    version = "1"
    schema = ssl_schema(ANY_WIDTH)
    hdf5_attributes = ("model", "layer")
    upstream = ("plan", "audio")
    Settings = SslAudioSettings
    settings: SslAudioSettings
    extract_default = False
    #: clips decoded and encoded together (their chunks are batched by length)
    batch_rows = 32

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.problem = enc.model_problem(self.settings.model)
        self.info = None if self.problem else enc.model_info(self.settings.model)
        if self.info is not None:
            layers = self.info.hidden_states if self.settings.layer == "all" else 1
            self.schema = ssl_schema(layers * self.info.dim)
        if self.settings.device == "cuda":
            self.resources = Resources(cpus=1.0, gpus=1.0)

    def check(self) -> list[str]:
        if self.problem:
            return [self.problem]
        problems = []
        try:
            enc.parse_layer(self.settings.layer, self.info.hidden_states)
        except ValueError as exc:
            problems.append(f"ssl_audio.layer {self.settings.layer!r}: {exc}")
        absent = [p for p in (missing(m, "encoders", "the ssl_audio stage") for m in ("torch", "transformers")) if p]
        if absent:
            return problems + absent
        import torch

        if self.settings.device == "cuda" and not torch.cuda.is_available():
            problems.append("ssl_audio.device = cuda, but torch sees no CUDA device")
        too_big = size_problem(self.settings.model, self.settings.max_params, "ssl_audio.max_params")
        return problems + ([too_big] if too_big else [])

    def config_hash(self) -> str:
        semantic = {k: v for k, v in self.hashed_settings().items() if k != "model"}
        identity = f"missing:{self.settings.model}" if self.problem else enc.model_identity(self.settings.model)
        return content_hash({"stage": self.name, "version": self.version, "config": semantic, "model": identity})

    def versions(self) -> dict[str, str]:
        import torch
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__,
                "model_sha256": enc.model_identity(self.settings.model)}

    def input_columns(self) -> dict[str, list[str] | None]:
        return {"audio": ["clip_id", "status", "error", "flac"]}

    def run_shard(self, ctx: ShardContext) -> pa.Table:
        """The shard in groups of `batch_rows` clips: decode a group, encode all its chunks in length-sorted
        batches, build its rows (so memory holds one group's frames, not the shard's)."""
        model = encoder(self.settings.model, self.settings.device)
        schema = with_metadata(self.schema, self.name)
        batches, group = [], []
        for clip in iter_clips(ctx, self.upstream):
            group.append(clip)
            if len(group) == self.batch_rows:
                batches.append(rows_to_batch(self._group_rows(group, model, ctx), schema))
                group = []
        if group or not batches:
            batches.append(rows_to_batch(self._group_rows(group, model, ctx), schema))
        return pa.Table.from_batches(batches, schema=schema)

    def _group_rows(self, group: list[ClipInput], model: enc.Encoder, ctx: ShardContext) -> list[dict[str, Any]]:
        layer = enc.parse_layer(self.settings.layer, model.info.hidden_states)
        stride, rate = model.info.stride, model.info.sample_rate
        limit = self.settings.max_chunk_s
        if model.info.kind == "whisper":
            limit = min(limit, enc.WHISPER_MAX_S)
        chunk = int(limit * rate) // stride * stride
        overlap = max(stride, int(self.settings.chunk_overlap_s * rate) // stride * stride)
        rows: dict[str, dict[str, Any]] = {}
        spans: dict[str, tuple[int, list[int]]] = {}
        chunks: list[np.ndarray] = []
        for clip in group:
            bad = next(((u, r) for u, r in clip.upstream.items() if r["status"] != "ok"), None)
            if bad is not None:
                rows[clip.clip_id] = row(clip.clip_id, "skipped", f"upstream_{bad[1]['status']}",
                                         f"{bad[0]}: {bad[1]['error']}")
                continue
            with first_use(self.name):  # librosa's resampler: its kernels may compile into the shared cache
                y = enc.clip_samples(clip.upstream["audio"]["flac"], rate)
            if len(y) < enc.MIN_SAMPLES:
                rows[clip.clip_id] = row(clip.clip_id, "skipped", "too_short", f"{len(y)} samples at {rate} Hz, "
                                         f"fewer than one {enc.MIN_SAMPLES}-sample encoder frame")
                continue
            starts = enc.chunk_starts(len(y), chunk, overlap)
            spans[clip.clip_id] = (len(chunks), starts)
            chunks += [y[s:s + chunk] for s in starts]
        outputs = model.encode(chunks, layer, self.settings.batch_size) if chunks else []
        for clip_id, (first, starts) in spans.items():
            frames = enc.merge(outputs[first:first + len(starts)], starts, overlap, stride)
            frames = frames.reshape(len(frames), -1)
            if self.settings.pooling == "mean":
                frames = frames.mean(axis=0, dtype=np.float64, keepdims=True).astype(np.float32)
            if not np.isfinite(frames).all():
                rows[clip_id] = row(clip_id, "failed", "non_finite", "the encoder output contains NaN or infinity")
                continue
            rows[clip_id] = row(clip_id, model=Path(self.settings.model).name, layer=self.settings.layer,
                                frame_rate=rate / stride, num_frames=len(frames),
                                num_layers=model.info.hidden_states if layer == "all" else 1, features=frames)
        for clip in group:
            ctx.log.info("%s %s", rows[clip.clip_id]["status"], clip.clip_id)
        ctx.progress(len(group))
        return [rows[clip.clip_id] for clip in group]
