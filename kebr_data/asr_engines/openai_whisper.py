"""openai-whisper: the package the papers' era used, on a local .pt checkpoint."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..deps import require
from ..errors import ClipError, PrerequisiteError
from .base import ClipAudio, LocalModelEngine, Packing, Transcript, Word
from .models import torch_checkpoint, weights_identity
from .packing import Heard, Said, transcribe_packed
from .whisper import WhisperSettings


@functools.lru_cache(maxsize=2)
def load(path: str, device: str) -> Any:
    """A whisper model, loaded once per process and configuration."""
    whisper = require("whisper", "whisper", "the openai-whisper ASR engine (install it with --no-deps)")
    return whisper.load_model(path, device=device)


class OpenAIWhisper(LocalModelEngine):
    """openai-whisper's own decoder (language detection on multilingual checkpoints)."""

    name = "openai-whisper"
    Settings = WhisperSettings
    sample_rate = 16000
    identifies_language = True  # on multilingual models
    distributions = ("openai-whisper",)

    def check(self, settings: WhisperSettings) -> list[str]:
        try:
            torch_checkpoint(settings.model)
        except PrerequisiteError as exc:
            return [str(exc)]
        try:
            __import__("whisper")
        except ImportError:
            return ["the openai-whisper engine needs the package 'whisper': pip install 'kebr-toolkit[whisper]' "
                    "and pip install --no-deps openai-whisper"]
        return []

    def model_identity(self, settings: WhisperSettings) -> str:
        return weights_identity(torch_checkpoint(settings.model))

    @staticmethod
    def _language(model: Any, audio: np.ndarray) -> tuple[str, float | None]:
        """A clip's language and probability as transcribe() would detect it (padded 30 s); "en" for English-only
        models."""
        if not model.is_multilingual:
            return "en", None
        whisper = require("whisper", "whisper", "the openai-whisper ASR engine (install it with --no-deps)")
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), model.dims.n_mels).to(model.device)
        _, probs = model.detect_language(mel)
        language = max(probs, key=probs.get)
        return language, float(probs[language])

    @staticmethod
    def _options(settings: WhisperSettings) -> dict[str, Any]:
        return dict(beam_size=settings.beam_size, word_timestamps=settings.word_timestamps,
                    condition_on_previous_text=False, fp16=settings.device == "cuda", verbose=None,
                    temperature=0.0)  # no sampling fallback: a rerun gives the same transcript

    def transcribe_pack(self, clips: list[ClipAudio], settings: WhisperSettings,
                        packing: Packing) -> list[ClipError | Transcript]:
        """Packed windows (`packing`), one window per decode; a multilingual model's language is detected per
        clip as unpacked (openai-whisper's encoder takes only 30-s input, so that costs one encoder pass a
        clip)."""
        path = torch_checkpoint(settings.model)
        model = load(str(path), settings.device)
        options = {**self._options(settings), "word_timestamps": True}

        def decode(windows: list[np.ndarray], language: str) -> list[list[Said]]:
            return [[Said([Heard(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
                           for w in s.get("words", [])])
                     for s in model.transcribe(y, language=language, **options)["segments"]
                     if s["no_speech_prob"] <= settings.no_speech_threshold and s["text"].strip()] for y in windows]

        return transcribe_packed(clips, packing, detect=lambda clip: self._language(model, clip.samples),
                                 decode=decode,
                                 alone=lambda clip, detected, bound: self.transcribe(clip, settings, detected, bound),
                                 multilingual=bool(model.is_multilingual), model=path.name,
                                 keep_words=settings.word_timestamps)

    def transcribe(self, clip: ClipAudio, settings: WhisperSettings,
                   detected: tuple[str | None, float | None] | None = None,
                   max_new_tokens: int | None = None) -> Transcript:
        """One clip; from packing, `detected` (its language and probability: the same detection) is not redone
        and `max_new_tokens` stops a hallucination loop early."""
        path = torch_checkpoint(settings.model)
        model = load(str(path), settings.device)
        options = self._options(settings)
        if max_new_tokens:
            options["sample_len"] = min(max_new_tokens, model.dims.n_text_ctx // 2)  # never more than its default
        audio = clip.samples.astype(np.float32)
        options["language"], language_prob = detected if detected and detected[0] else self._language(model, audio)
        result = model.transcribe(audio, **options)
        kept = [s for s in result["segments"] if s["no_speech_prob"] <= settings.no_speech_threshold
                and s["text"].strip()]
        tokens = sum(len(s["tokens"]) for s in kept)
        words = [Word(w["word"].strip(), float(w["start"]), float(w["end"]), float(w["probability"]))
                 for s in kept for w in s.get("words", [])]
        return Transcript(text=" ".join(s["text"].strip() for s in kept).strip(), language=result.get("language"),
                          language_prob=language_prob,
                          avg_logprob=sum(s["avg_logprob"] * len(s["tokens"]) for s in kept) / tokens if tokens
                          else None, words=words, multilingual=bool(model.is_multilingual), model=path.name)
