"""ASR engines, one file each, chosen by `asr.engine` from this registry.

Adding an engine is one new file (a subclass of `base.AsrEngine`) and one line below.
"""

from __future__ import annotations

from .base import AsrEngine, ClipAudio, Transcript, Word
from .faster_whisper import FasterWhisper
from .given import Given
from .google_speech import GoogleSpeech
from .openai_whisper import OpenAIWhisper

ENGINES: dict[str, AsrEngine] = {
    "faster-whisper": FasterWhisper(),
    "openai-whisper": OpenAIWhisper(),
    "google": GoogleSpeech(),
    "given": Given(),
}

__all__ = ["ENGINES", "AsrEngine", "ClipAudio", "Transcript", "Word"]
