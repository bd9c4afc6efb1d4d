"""The ASR stage: a transcript per clip, with language, confidence and word times.

Engines come from the `kebr_data.asr_engines` registry. Clips in languages outside `asr.languages`
(the papers kept English only) are `skipped`, keeping what was heard: multilingual models decide by
their detected language and its probability (`asr.min_language_prob`); English-only models cannot
identify a language, so a low decoding confidence stands in for it and the row says so. Silent
clips are skipped before decoding.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from ..asr_engines import BUILTIN, AsrEngine, ClipAudio, Packing, Transcript, engines
from ..display import beside
from ..errors import ClipError, ClipSkipped
from ..label_quality import prob_hist
from ..media.flac import decode_flac
from ..schema import ASR, rows_to_batch, with_metadata
from ..settings import composed, content_hash, did_you_mean, one_of, setting
from .base import ClipInput, ClipStage, ShardContext, iter_clips


def rms_dbfs(y: np.ndarray) -> float:
    """Level of a clip in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


@dataclass
class AsrSettings:
    """The ASR stage: a transcript per clip."""

    engine: str = setting("faster-whisper", "the engine (the kebr_data.asr_engines registry: faster-whisper, "
                                            "openai-whisper, google, given = the dataset's transcripts or sidecar "
                                            ".txt, or a plugin's)", check=one_of(engines))
    languages: list[str] = setting(["en"], "keep clips in these languages, skip the others ([] = keep all)")
    min_language_prob: float = setting(0.5, "multilingual models: a detected language below this probability is "
                                            "skipped too", min=0.0, max=1.0)
    min_avg_logprob: float = setting(-100.0, "optional gate on decoding confidence (-100 = off)")
    silence_dbfs: float = setting(-60.0, "clips whose RMS is below this are skipped as silence without decoding")
    en_only_min_avg_logprob: float = setting(-0.7, "English-only models cannot identify a language: below this "
                                                   "confidence the clip is taken as not English (language 'und')")
    pack_s: float = setting(0.0, "pack consecutive clips of a shard into windows of at most this many seconds, one "
                                 "engine call each, words handed back by their times (0 = off; Whisper engines)",
                            min=0.0, max=30.0)
    pack_gap_s: float = setting(1.0, "silence between packed clips (s)", min=0.1, max=5.0)
    pack_min_logprob: float = setting(-0.5, "a packed clip whose mean word log-probability is below this is redone "
                                            "alone and the clips after it go back to the queue (a doubtful clip's "
                                            "text can run on into the next)")


class Held(Exception):
    """A clip held for a packed window (not an error: `run_shard` writes its row when the window is decoded)."""


class _WithEngines:
    """`AsrStage.Settings`: the `[asr]` section, read when it is needed (engines registered by then count): the
    stage's own keys (`AsrSettings`), then every registered engine's options."""

    def __get__(self, stage: object, owner: type) -> type:
        return composed("asr", AsrSettings, tuple((f"engine {name}", type(e).Settings)
                                                  for name, e in engines().items()))


class AsrStage(ClipStage):
    """Transcribe each clip (or read its given transcript) with the engine `asr.engine` names."""

    name = "asr"
    version = "1"
    schema = ASR
    Settings = _WithEngines()  # type: ignore[assignment]
    settings: AsrSettings
    report_plots = (("avg_logprob", "ASR decoding confidence", "average log-probability", 30),)

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        engine = engines().get(self.settings.engine)
        self.upstream = ("plan", "audio") if engine is None or engine.listens else ("plan",)
        if engine is not None:
            self.engine_settings = engine.Settings(**{f.name: getattr(self.settings, f.name)
                                                      for f in dataclasses.fields(engine.Settings)})
            self.resources = engine.resources(self.engine_settings)

    @property
    def engine(self) -> AsrEngine:
        return engines()[self.settings.engine]

    def check(self) -> list[str]:
        known = engines()
        if self.settings.engine not in known:
            return [f"asr.engine must be one of {', '.join(known)}, got {self.settings.engine!r}"
                    f"{did_you_mean(self.settings.engine, list(known))}"]
        return self.engine.check(self.engine_settings)

    def hashed_settings(self) -> dict[str, Any]:
        """The stage's keys and the built-in engines' (as always), with a plugin engine's only when it runs, so
        installing one leaves existing transcripts current."""
        plugin = {f.name for e in engines().values() if type(e) not in BUILTIN and e.name != self.settings.engine
                  for f in dataclasses.fields(e.Settings)}
        builtin = {f.name for cls in BUILTIN for f in dataclasses.fields(cls.Settings)}
        # with packing off its keys stay out, so outputs written before they existed stay current
        off = {"pack_s", "pack_gap_s", "pack_min_logprob"} if not self.settings.pack_s else set()
        return {k: v for k, v in super().hashed_settings().items() if k not in (plugin - builtin) | off}

    def config_hash(self) -> str:
        """Includes the model file's identity, so another model makes old transcripts stale."""
        known = self.settings.engine in engines()  # an unknown engine is reported by check()
        return content_hash({"base": super().config_hash(),
                             "model": self.engine.model_identity(self.engine_settings) if known else ""})

    def versions(self) -> dict[str, str]:
        return self.engine.versions() if self.settings.engine in engines() else {}

    def shard_stats(self, table: pa.Table) -> dict[str, Any]:
        """Detected languages and the histogram of language probabilities (multilingual models only), over the
        clips in which something was heard (not no-speech ones)."""
        heard = [bool(t) for t in table["text"].to_pylist()]  # a no-speech clip's language was not heard
        langs = collections.Counter(v for v, h in zip(table["language"].to_pylist(), heard, strict=True) if v and h)
        probs = [p for p, h in zip(table["language_prob"].to_pylist(), heard, strict=True) if h]
        return {"languages": dict(langs), "language_prob_hist": prob_hist(probs)}

    @staticmethod
    def format_stats(stats: dict[str, Any]) -> str:
        langs = ", ".join(f"{k} {v}" for k, v in sorted(stats.get("languages", {}).items(), key=lambda kv: -kv[1]))
        hist = stats.get("language_prob_hist", {})
        probs = f"; language probability p<0.5: {sum(v for k, v in hist.items() if float(k) < 0.5)}, " \
                f"p>=0.9: {hist.get('0.9', 0)}" if any(hist.values()) else ""
        return f"languages heard: {langs}{probs}" if langs else ""

    def input_columns(self) -> dict[str, list[str] | None]:
        return {"audio": ["clip_id", "status", "error", "flac", "sample_rate", "duration_s"]}

    #: packed clips are sent to the engine this many windows at a time (bounds the audio a shard holds: ~60 MB)
    pack_windows: ClassVar[int] = 32

    def run_shard(self, ctx: ShardContext) -> pa.Table:
        """Clip by clip, or with `asr.pack_s` > 0 the shard's decodable clips in packed windows, `pack_windows`
        windows' worth of clips per engine call (silent, bad and upstream-failed clips are handled alone,
        exactly as unpacked)."""
        if not self.settings.pack_s or not self.engine.listens:
            return super().run_shard(ctx)
        packing = Packing(self.settings.pack_s, self.settings.pack_gap_s, self.settings.pack_min_logprob)
        rows: list[dict[str, Any]] = []
        ready: list[tuple[int, ClipInput, ClipAudio]] = []

        def hold(clip: ClipInput) -> dict[str, Any]:
            ready.append((len(rows), clip, self._audio(clip)))
            raise Held  # its row (and its one log line) comes with its window

        def flush() -> None:
            results = self.engine.transcribe_pack([a for _, _, a in ready], self.engine_settings, packing)
            for (n, clip, _), t in zip(ready, results, strict=True):
                rows[n] = self._clip_row(clip, ctx, lambda _, t=t: self._row(t))
            ctx.progress(len(ready))
            ready.clear()

        for clip in iter_clips(ctx, self.upstream):
            try:
                rows.append(self._clip_row(clip, ctx, hold))
                ctx.progress(1)  # a clip handled alone
            except Held:
                rows.append({})
                if sum(a.duration_s for _, _, a in ready) >= self.pack_windows * packing.pack_s:
                    flush()
        if ready:
            flush()
        schema = with_metadata(self.schema, self.name)
        return pa.Table.from_batches([rows_to_batch(rows[i:i + self.batch_rows], schema)
                                      for i in range(0, max(len(rows), 1), self.batch_rows)], schema=schema)

    def _audio(self, clip: ClipInput) -> ClipAudio:
        """The clip as the engine receives it: decoded, resampled; silence is skipped here, before decoding."""
        engine = self.engine
        if not engine.listens:
            return ClipAudio(plan=clip.plan)
        row = clip.upstream["audio"]
        y, sr = decode_flac(row["flac"])
        if rms_dbfs(y) < self.settings.silence_dbfs:
            raise ClipSkipped("silence", f"the audio level is below {self.settings.silence_dbfs:g} dBFS")
        if engine.sample_rate and sr != engine.sample_rate:
            import soxr

            y, sr = soxr.resample(y, sr, engine.sample_rate, quality="HQ").astype(np.float32), engine.sample_rate
        return ClipAudio(plan=clip.plan, samples=y, sample_rate=sr, flac=row["flac"],
                         duration_s=float(row["duration_s"]))

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        return self._row(self.engine.transcribe(self._audio(clip), self.engine_settings))

    def _row(self, t: Transcript | ClipError) -> dict[str, Any]:
        """The columns of a clip's row from its transcript, through the stage's gates (language, confidence)."""
        if isinstance(t, ClipError):
            raise t
        engine = self.engine
        row = {"text": t.text, "language": t.language, "language_prob": t.language_prob, "avg_logprob": t.avg_logprob,
               "engine": engine.name, "model": t.model, "message": t.note,
               "words": [{"word": w.word, "start": w.start, "end": w.end, "prob": w.prob} for w in t.words]}
        if not t.text:
            return {**row, "status": "skipped", "error": "no_speech",
                    "message": engine.empty_message.format(engine=engine.name)}
        if not engine.listens:
            return row
        if not t.multilingual:
            row["language_prob"] = None  # an English-only model cannot identify a language
            gate = self.settings.en_only_min_avg_logprob
            if t.avg_logprob is not None and t.avg_logprob < gate:
                row["language"] = "und"
        languages = self.settings.languages
        if languages and row["language"] not in languages:
            why = (f"English-only model with low confidence (avg_logprob "
                   f"{beside(t.avg_logprob, self.settings.en_only_min_avg_logprob)} < "
                   f"{self.settings.en_only_min_avg_logprob:g}): likely not English speech"
                   if row["language"] == "und" else
                   f"detected {row['language']}" + (f" (p={t.language_prob:.2f})" if t.language_prob else ""))
            return {**row, "status": "skipped", "error": "language", "message": f"{why}; kept: {', '.join(languages)}"}
        min_prob = self.settings.min_language_prob
        if (languages and engine.identifies_language and t.multilingual and t.language_prob is not None
                and t.language_prob < min_prob):
            return {**row, "status": "skipped", "error": "language",
                    "message": f"detected {row['language']} with p={beside(t.language_prob, min_prob)} < "
                               f"asr.min_language_prob {min_prob:g}: language uncertain"}
        if t.avg_logprob is not None and t.avg_logprob < self.settings.min_avg_logprob:
            return {**row, "status": "skipped", "error": "low_confidence",
                    "message": f"avg_logprob {beside(t.avg_logprob, self.settings.min_avg_logprob)} < "
                               f"asr.min_avg_logprob {self.settings.min_avg_logprob:g}"}
        return row
