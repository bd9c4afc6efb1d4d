"""faster-whisper (CTranslate2 Whisper): the default engine, offline with the pip-installed models."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Literal

from ..deps import require
from ..errors import PrerequisiteError
from ..settings import setting
from .base import ClipAudio, LocalModelEngine, Transcript, Word
from .models import ctranslate2_model, weights_identity
from .whisper import WhisperSettings


def threads() -> int:
    """CPU threads for the engine: OMP_NUM_THREADS, 0 = the library's default."""
    return int(os.environ.get("OMP_NUM_THREADS", "0") or 0)


@functools.lru_cache(maxsize=2)
def load(path: str, device: str, compute_type: str) -> Any:
    """A WhisperModel, loaded once per process and configuration."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fw = require("faster_whisper", "asr", "the faster-whisper ASR engine")
    return fw.WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=threads(),
                           local_files_only=True)


@dataclass
class FasterWhisperSettings(WhisperSettings):
    """faster-whisper's own options."""

    compute_type: Literal["int8", "int8_float16", "float16", "float32"] = setting(
        "int8", "faster-whisper: int8 | int8_float16 | float16 | float32")
    vad_filter: bool = setting(False, "faster-whisper's Silero VAD before decoding")
    batch_size: int = setting(8, "faster-whisper batched inference on a GPU", min=1, runtime=True)


class FasterWhisper(LocalModelEngine):
    """CTranslate2 Whisper; batched inference on a GPU."""

    name = "faster-whisper"
    Settings = FasterWhisperSettings
    sample_rate = 16000
    identifies_language = True  # on multilingual models
    distributions = ("faster-whisper", "ctranslate2")

    def check(self, settings: FasterWhisperSettings) -> list[str]:
        try:
            ctranslate2_model(settings.model)
        except PrerequisiteError as exc:
            return [str(exc)]
        try:
            __import__("faster_whisper")
        except ImportError:
            return ["the faster-whisper engine needs the package 'faster_whisper': pip install 'kebr-toolkit[asr]'"]
        return []

    def model_identity(self, settings: FasterWhisperSettings) -> str:
        return weights_identity(ctranslate2_model(settings.model))

    def transcribe(self, clip: ClipAudio, settings: FasterWhisperSettings) -> Transcript:
        path = ctranslate2_model(settings.model)
        model = load(str(path), settings.device, settings.compute_type)
        kwargs = dict(beam_size=settings.beam_size, vad_filter=settings.vad_filter,
                      word_timestamps=settings.word_timestamps, condition_on_previous_text=False,
                      temperature=0.0)  # no sampling fallback: a rerun gives the same transcript
        if not model.model.is_multilingual:
            kwargs["language"] = "en"
        if settings.device == "cuda" and settings.batch_size > 1:
            fw = require("faster_whisper", "asr", "the faster-whisper ASR engine")
            segments, info = fw.BatchedInferencePipeline(model=model).transcribe(
                clip.samples, batch_size=settings.batch_size, **kwargs)
        else:
            segments, info = model.transcribe(clip.samples, **kwargs)
        kept = [s for s in segments if s.no_speech_prob <= settings.no_speech_threshold and s.text.strip()]
        tokens = sum(len(s.tokens) for s in kept)
        words = [Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                 for s in kept for w in (s.words or [])]
        return Transcript(text=" ".join(s.text.strip() for s in kept).strip(), language=info.language,
                          language_prob=float(info.language_probability),
                          avg_logprob=sum(s.avg_logprob * len(s.tokens) for s in kept) / tokens if tokens else None,
                          words=words, multilingual=bool(model.model.is_multilingual), model=path.name)
