"""openai-whisper: the package the papers' era used, on a local .pt checkpoint."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..deps import require
from ..errors import PrerequisiteError
from .base import ClipAudio, LocalModelEngine, Transcript, Word
from .models import torch_checkpoint, weights_identity
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

    def transcribe(self, clip: ClipAudio, settings: WhisperSettings) -> Transcript:
        path = torch_checkpoint(settings.model)
        model = load(str(path), settings.device)
        options = dict(beam_size=settings.beam_size, word_timestamps=settings.word_timestamps,
                       condition_on_previous_text=False, fp16=settings.device == "cuda", verbose=None,
                       temperature=0.0)  # no sampling fallback: a rerun gives the same transcript
        audio = clip.samples.astype(np.float32)
        language_prob = None
        if model.is_multilingual:  # detect here, as transcribe() would, to keep the probability
            whisper = require("whisper", "whisper", "the openai-whisper ASR engine (install it with --no-deps)")
            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), model.dims.n_mels).to(model.device)
            _, probs = model.detect_language(mel)
            options["language"] = max(probs, key=probs.get)
            language_prob = float(probs[options["language"]])
        else:
            options["language"] = "en"
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
