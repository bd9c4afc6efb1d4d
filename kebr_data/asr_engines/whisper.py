"""The options the Whisper engines (faster-whisper, openai-whisper) share: one declaration, one `[asr]` key each."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import setting
from .base import LocalModelSettings


@dataclass
class WhisperSettings(LocalModelSettings):
    """Decoding options of a local Whisper model."""

    beam_size: int = setting(5, "beam width", min=1)
    word_timestamps: bool = setting(True, "word start/end times and probabilities")
    no_speech_threshold: float = setting(0.6, "segments Whisper itself calls non-speech above this are dropped",
                                         min=0.0, max=1.0)
