"""faster-whisper (CTranslate2 Whisper): the default engine, offline with the pip-installed models."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..deps import require
from ..errors import ClipError, PrerequisiteError
from ..settings import setting
from .base import ClipAudio, LocalModelEngine, Packing, Transcript, Word
from .models import ctranslate2_model, weights_identity
from .packing import Heard, Said, transcribe_packed
from .whisper import WhisperSettings


SAMPLE_RATE = 16000


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
    sample_rate = SAMPLE_RATE
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

    @staticmethod
    def _options(settings: FasterWhisperSettings, model: Any) -> dict[str, Any]:
        """Decoding options shared by the clip and the packed paths."""
        kwargs = dict(beam_size=settings.beam_size, vad_filter=settings.vad_filter,
                      word_timestamps=settings.word_timestamps, condition_on_previous_text=False,
                      temperature=0.0)  # no sampling fallback: a rerun gives the same transcript
        if not model.model.is_multilingual:
            kwargs["language"] = "en"
        return kwargs

    def transcribe(self, clip: ClipAudio, settings: FasterWhisperSettings,
                   detected: tuple[str | None, float | None] | None = None,
                   max_new_tokens: int | None = None) -> Transcript:
        """One clip; from packing, `detected` (a language and its probability) saves a multilingual model's own
        detection (a second encoder pass) and `max_new_tokens` stops a hallucination loop early."""
        path = ctranslate2_model(settings.model)
        model = load(str(path), settings.device, settings.compute_type)
        kwargs = {**self._options(settings, model), "max_new_tokens": max_new_tokens}
        given = detected is not None and detected[0] is not None and bool(model.model.is_multilingual)
        if given:
            kwargs["language"] = detected[0]
        if settings.device == "cuda" and settings.batch_size > 1:
            fw = require("faster_whisper", "asr", "the faster-whisper ASR engine")
            segments, info = fw.BatchedInferencePipeline(model=model).transcribe(
                clip.samples, batch_size=settings.batch_size, **kwargs)
        else:
            segments, info = model.transcribe(clip.samples, **kwargs)
        kept = [s for s in segments if keep(s, settings)]
        tokens = sum(len(s.tokens) for s in kept)
        words = [Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                 for s in kept for w in (s.words or [])]
        prob = detected[1] if given else info.language_probability  # type: ignore[index]
        return Transcript(text=" ".join(s.text.strip() for s in kept).strip(), language=info.language,
                          language_prob=None if prob is None else float(prob),
                          avg_logprob=sum(s.avg_logprob * len(s.tokens) for s in kept) / tokens if tokens else None,
                          words=words, multilingual=bool(model.model.is_multilingual), model=path.name)

    def transcribe_pack(self, clips: list[ClipAudio], settings: FasterWhisperSettings,
                        packing: Packing) -> list[ClipError | Transcript]:
        """Packed windows (`packing`). Multilingual models identify each clip's language on the clip's own
        features (one encoder pass over the clip's frames, not a padded 30 s: ~5% of a window's), English-only
        ones need none; on a GPU with `batch_size` > 1 a language's windows are decoded in batches."""
        path = ctranslate2_model(settings.model)
        model = load(str(path), settings.device, settings.compute_type)
        multilingual = bool(model.model.is_multilingual)
        batched = settings.device == "cuda" and settings.batch_size > 1
        return transcribe_packed(
            clips, packing, detect=lambda clip: detect_language(model, clip.samples) if multilingual
            else ("en", None),
            decode=lambda windows, lang: decode_windows(model, windows, lang, settings,
                                                        settings.batch_size if batched else 1),
            alone=lambda clip, detected, bound: self.transcribe(clip, settings, detected, bound),
            multilingual=multilingual,
            model=path.name, keep_words=settings.word_timestamps, batch=settings.batch_size if batched else 1)


def detect_language(model: Any, samples: np.ndarray) -> tuple[str, float]:
    """A clip's language and its probability, from the clip's own frames (unpadded: a short clip costs a short
    encoder pass)."""
    from faster_whisper.transcribe import get_ctranslate2_storage

    features = model.feature_extractor(samples)
    features = features[:, :features.shape[-1] - features.shape[-1] % 2]  # the encoder halves the frame count
    token, prob = model.model.detect_language(get_ctranslate2_storage(features[None]))[0][0]
    return token[2:-2], float(prob)


def said(segment: Any, shift: float = 0.0) -> Said:
    """A faster-whisper segment as `packing` reads it, its times moved back by `shift` seconds."""
    return Said([Heard(w.word, float(w.start) - shift, float(w.end) - shift, float(w.probability))
                 for w in (segment.words or [])])


def decode_windows(model: Any, windows: list[np.ndarray], language: str, settings: FasterWhisperSettings,
                   batch_size: int) -> list[list[Said]]:
    """The segments of each packed window (times in the window), decoded in `language`: one window per call, or,
    with `batch_size` > 1, all windows laid end to end and decoded `batch_size` at a time by faster-whisper's
    BatchedInferencePipeline (each window one chunk). The pipeline decodes without timestamp tokens (with them,
    faster-whisper 1.2.1 garbles a packed window: "It will complete disaster and I hate a memory"), so a
    window is one segment: its words are handed to `packing` one segment each, placed by their own times."""
    kwargs = dict(beam_size=settings.beam_size, word_timestamps=True, condition_on_previous_text=False,
                  temperature=0.0, language=language)
    if batch_size == 1:
        return [[said(s) for s in model.transcribe(y, vad_filter=settings.vad_filter, **kwargs)[0]
                 if keep(s, settings)] for y in windows]
    fw = require("faster_whisper", "asr", "the faster-whisper ASR engine")
    starts = np.cumsum([0] + [y.size for y in windows]) / SAMPLE_RATE
    segments, _ = fw.BatchedInferencePipeline(model=model).transcribe(
        np.concatenate(windows), batch_size=batch_size, without_timestamps=True,
        clip_timestamps=[{"start": float(a), "end": float(b)} for a, b in zip(starts[:-1], starts[1:])], **kwargs)
    out: list[list[Said]] = [[] for _ in windows]
    for s in segments:
        if keep(s, settings):
            n = int(np.searchsorted(starts, (s.start + s.end) / 2, side="right")) - 1
            out[n] += [Said([w]) for w in said(s, float(starts[n])).words]  # see the docstring
    return out


def keep(segment: Any, settings: FasterWhisperSettings) -> bool:
    """A decoded segment is kept unless Whisper calls it non-speech or it is empty."""
    return segment.no_speech_prob <= settings.no_speech_threshold and bool(segment.text.strip())
