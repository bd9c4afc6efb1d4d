"""Local Hugging Face audio encoders (HuBERT, wav2vec2, data2vec-audio, Whisper's encoder) run on
chunks of audio, batched by length, and the merge of overlapping chunks into one frame sequence.

Nothing is downloaded: a model loads from a local folder with `local_files_only=True` (never a folder's
own code, never pickled weights: `hf_folder`). Its identity
is the sha256 of its weight and config files, so a changed checkpoint changes the stage's config hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..media.flac import decode_flac
from .hf_folder import LOAD_OPTIONS, TEXT_LOAD_OPTIONS, folder_problem, quiet_loading
from .resample import at_rate

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
DESCRIBING = ("config.json", "preprocessor_config.json")
#: one frame of the wav2vec2-style convolutional front end (its receptive field: 400 samples at 16 kHz)
MIN_SAMPLES = 400
WHISPER_MAX_S = 30.0
#: models whose padded, masked outputs equal their unpadded ones (within float error) when the front end is
#: layer-normalised and the extractor returns attention masks (wav2vec2-large-lv60, hubert-large): only their
#: clips of different lengths share a batch. Group-normalised front ends (wav2vec2-base, hubert-base) and
#: data2vec-audio (a 5-layer positional convolution that spreads padding into real frames) batch equal
#: lengths only; Whisper pads every chunk to 30 s by design.
PADDABLE = ("wav2vec2", "hubert")


@dataclass(frozen=True)
class ModelInfo:
    """What the stage needs to know about a model folder before loading it."""

    kind: str  # "whisper" or the config's model_type (hubert, wav2vec2, data2vec-audio, ...)
    dim: int  # hidden size D
    hidden_states: int  # transformer layers + 1 (index 0 is the transformer's input)
    stride: int  # input samples per output frame
    sample_rate: int


def weight_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def model_problem(model: str, option: str = "ssl_audio.model") -> str | None:
    """Why `model` is not a usable local encoder folder, or None (`option`: the setting that named it)."""
    if not model:
        return f"set {option} to a local Hugging Face model folder (config.json, weights, preprocessor_config.json)"
    path = Path(model)
    if not path.is_dir():
        return f"{option} {model} is not a folder (models are never downloaded at run time)"
    missing = [n for n in DESCRIBING if not (path / n).is_file()]
    if missing or not weight_files(path):
        what = ", ".join(missing + ([] if weight_files(path) else ["weights (*.safetensors)"]))
        return f"{option} {model} lacks {what}"
    problem = folder_problem(path, option)  # code of its own, pickled weights only
    if problem:
        return problem
    try:
        model_info(model)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        return f"{option} {model}: unreadable config ({exc})"
    return None


def model_info(model: str) -> ModelInfo:
    """Width, depth, stride and rate read from config.json and preprocessor_config.json (no torch needed)."""
    path = Path(model)
    hf_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    pre = json.loads((path / "preprocessor_config.json").read_text(encoding="utf-8"))
    rate = int(pre.get("sampling_rate", 16000))
    if hf_config["model_type"] == "whisper":
        return ModelInfo("whisper", int(hf_config["d_model"]), int(hf_config["encoder_layers"]) + 1,
                         2 * int(pre.get("hop_length", 160)), rate)
    return ModelInfo(hf_config["model_type"], int(hf_config["hidden_size"]),
                     int(hf_config["num_hidden_layers"]) + 1, math.prod(int(s) for s in hf_config["conv_stride"]),
                     rate)


@functools.lru_cache(maxsize=8)
def _identity(model: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        h = hashlib.sha256()
        with open(Path(model) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest.update(f"{name}:{h.hexdigest()}\n".encode())
    return digest.hexdigest()


def model_identity(model: str) -> str:
    """sha256 over the sha256 of each weight and config file (cached per process by size and mtime)."""
    path = Path(model)
    files = weight_files(path) + [path / n for n in DESCRIBING]
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _identity(str(path.resolve()), stamp)


def parse_layer(layer: str, hidden_states: int) -> str | int:
    """`last`, `all`, or a hidden-state index (negative counts from the end); ValueError otherwise."""
    if layer in ("last", "all"):
        return layer
    index = int(layer)
    if not -hidden_states <= index < hidden_states:
        raise ValueError(f"layer {index} is outside this model's hidden states (-{hidden_states}..{hidden_states - 1})")
    return index


def clip_samples(flac: bytes, rate: int) -> np.ndarray:
    """A clip's audio-stage FLAC as float32 mono samples at the model's `rate` (soxr_hq resampling)."""
    samples, sr = decode_flac(flac)
    return at_rate(samples, sr, rate)


def load_extractor(model: str) -> Any:
    """The model folder's feature extractor (never downloaded)."""
    from transformers import AutoFeatureExtractor

    return AutoFeatureExtractor.from_pretrained(model, **TEXT_LOAD_OPTIONS)


def padding_is_exact(kind: str, net_config: Any, extractor: Any) -> bool:
    """Whether chunks of different lengths may share a padded, masked batch (see PADDABLE)."""
    return kind == "whisper" or (kind in PADDABLE and getattr(net_config, "feat_extract_norm", "") == "layer"
                                 and bool(getattr(extractor, "return_attention_mask", False)))


def model_inputs(extractor: Any, kind: str, chunks: list[np.ndarray], rate: int,
                 attention_mask: bool) -> dict[str, Any]:
    """The model's inputs for `chunks` as torch tensors: Whisper's log-mel `input_features`, else the
    extractor's normalised `input_values` padded to the longest chunk (with `attention_mask` when asked)."""
    if kind == "whisper":
        return {"input_features": extractor(chunks, sampling_rate=rate, return_tensors="pt")["input_features"]}
    feats = extractor(chunks, sampling_rate=rate, return_tensors="pt", padding=True,
                      return_attention_mask=attention_mask)
    return {"input_values": feats["input_values"]} | ({"attention_mask": feats["attention_mask"]} if attention_mask
                                                      else {})


class Encoder:
    """A loaded model and its feature extractor; `encode` turns chunks of samples into frame arrays."""

    def __init__(self, model: str, device: str) -> None:
        import torch
        from transformers import AutoModel

        self.info = model_info(model)
        self.device = device
        self.dtype = torch.float16 if device == "cuda" else torch.float32
        self.extractor = load_extractor(model)
        with quiet_loading():
            net = AutoModel.from_pretrained(model, **LOAD_OPTIONS)
        if self.info.kind == "whisper":
            net = net.get_encoder()
        self.model = net.to(device=device, dtype=self.dtype).eval()
        self.pads = padding_is_exact(self.info.kind, net.config, self.extractor)

    def num_frames(self, n: int) -> int:
        """Output frames of a chunk of `n` samples."""
        if self.info.kind == "whisper":
            return min(math.ceil(n / self.info.stride), self.model.config.max_source_positions)
        import torch

        return int(self.model._get_feat_extract_output_lengths(torch.tensor(n)))

    def batches(self, lengths: list[int], batch_size: int) -> list[list[int]]:
        """Chunk indices grouped by length (sorted, so padding is small; equal lengths only when padding would
        change the output)."""
        out: list[list[int]] = []
        for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
            if out and len(out[-1]) < batch_size and (self.pads or lengths[out[-1][0]] == lengths[i]):
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def encode(self, chunks: list[np.ndarray], layer: str | int, batch_size: int) -> list[np.ndarray]:
        """Per chunk: frames × D (`last` or an index) or frames × hidden_states × D (`all`), float32."""
        results: list[Any] = [None] * len(chunks)
        for batch in self.batches([len(c) for c in chunks], batch_size):
            for i, frames in zip(batch, self._run([chunks[i] for i in batch], layer), strict=True):
                results[i] = frames
        return results

    def _run(self, chunks: list[np.ndarray], layer: str | int) -> list[np.ndarray]:
        import torch

        inputs = model_inputs(self.extractor, self.info.kind, chunks, self.info.sample_rate, self.pads)
        inputs = {k: v.to(self.device, dtype=self.dtype if v.is_floating_point() else v.dtype)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model(**inputs, output_hidden_states=layer != "last")
            if layer == "last":
                states = out.last_hidden_state
            elif layer == "all":
                states = torch.stack(out.hidden_states, dim=2)
            else:
                states = out.hidden_states[layer]
            states = states.float().cpu().numpy()
        return [np.ascontiguousarray(states[b, :self.num_frames(len(c))]) for b, c in enumerate(chunks)]


def chunk_starts(n: int, chunk: int, overlap: int) -> list[int]:
    """Start samples of the chunks covering `n` samples: `chunk` long, each overlapping the next by `overlap`."""
    starts = [0]
    while starts[-1] + chunk < n:
        starts.append(starts[-1] + chunk - overlap)
    return starts


def merge(frames: list[np.ndarray], starts: list[int], overlap: int, stride: int) -> np.ndarray:
    """One frame sequence from overlapping chunks: each overlap is cut in its middle; frame t comes from the
    chunk that owns sample t·stride (chunk i owns [start_i + overlap/2, start_i+1 + overlap/2)), so every
    frame is one chunk's own output, never an average, and no frame sits within overlap/2 of a chunk edge
    other than the clip's own ends."""
    bounds = [0] + [(s + overlap // 2) // stride for s in starts[1:]]
    parts = []
    for i, (s, f) in enumerate(zip(starts, frames, strict=True)):
        first = s // stride
        end = first + len(f) if i == len(starts) - 1 else min(bounds[i + 1], first + len(f))
        parts.append(f[bounds[i] - first:end - first])
    return np.concatenate(parts)
