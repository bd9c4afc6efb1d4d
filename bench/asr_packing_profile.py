"""Where packed ASR's CPU goes (`asr.pack_s = 30`, faster-whisper int8, one thread), per clip, on
`bench/asr_packing.py`'s short clips: the CTranslate2 calls (encode, generate, align, detect_language) timed by
wrapping the loaded model in this run only (the product code is not touched), by phase: per-clip language
detection, first-round windows, re-packed windows (the clips after a doubtful one), clips redone alone, and
the same model clip by clip for comparison. Also: generated tokens per window (with and without a foreign
clip: a hallucination loop), and why each redone clip was doubted (low confidence or a segment spanning two
clips) with its true language (an English clip redone is a candidate false redo).

    python bench/asr_packing_profile.py [--models tiny.en,base] [--english] [--beam 5] [--before DIR]

`--before DIR`: the same runs on another source tree first (e.g. `git worktree add DIR <commit>`), its
rows tagged `before:`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ["OMP_NUM_THREADS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr import synthesise  # noqa: E402
from asr_packing import SHORT, shard  # noqa: E402
from common import write_section  # noqa: E402

CALLS = ("encode", "generate", "align", "detect_language")


class Profile:
    """CPU-s and counts per (phase, call), tokens generated, and the windows and redos seen."""

    def __init__(self) -> None:
        self.phase = "unpacked"
        self.cpu: collections.Counter = collections.Counter()
        self.count: collections.Counter = collections.Counter()
        self.tokens: collections.Counter = collections.Counter()
        self.windows: list[dict[str, Any]] = []  # per decoded window: clips, speech s, tokens, phase
        self.joined: list[list[str]] = []  # clip ids of windows joined, waiting for their decode
        self.redos: list[tuple[str, str]] = []  # (clip id, reason)
        self.alone: list[str] = []  # clip ids transcribed alone in packed mode
        self.window_tokens = 0
        self.in_windows: set[str] = set()  # clip ids decoded in a window so far
        self.splitting: list[list[str]] = []  # clip ids of windows decoded, waiting for their split

    @contextlib.contextmanager
    def timed(self, phase: str):
        """Attribute the calls in the block to `phase` and add its CPU to the phase's total (a nested phase's CPU
        counts in the outer total too: `packed` holds all of a packed run)."""
        before, self.phase = self.phase, phase
        c0 = time.process_time()
        try:
            yield
        finally:
            self.cpu[(phase, "total")] += time.process_time() - c0
            self.phase = before


class Timed:
    """A CTranslate2 Whisper model whose calls are timed into a Profile."""

    def __init__(self, inner: Any, prof: Profile) -> None:
        self._inner, self._prof = inner, prof

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in CALLS:
            return attr
        prof = self._prof

        def call(*args: Any, **kwargs: Any) -> Any:
            c0 = time.process_time()
            out = attr(*args, **kwargs)
            key = (prof.phase, name)
            prof.cpu[key] += time.process_time() - c0
            prof.count[key] += 1
            if name == "generate":
                n = sum(len(r.sequences_ids[0]) for r in out)
                prof.tokens[key] += n
                prof.window_tokens += n
            return out
        return call


def instrument(current: list[Profile]) -> None:
    """Wrap the engine's steps (module functions the packed path looks up at call time) to set the phase of
    `current[-1]`, the profile of the run in progress."""
    from kebr_data.asr_engines import faster_whisper as fw
    from kebr_data.asr_engines import packing

    detect, decode, transcribe = fw.detect_language, fw.decode_windows, fw.FasterWhisper.transcribe
    join, split, pack = packing.join, packing.split, fw.FasterWhisper.transcribe_pack

    def detect_w(model, samples):
        with current[-1].timed("detect"):
            return detect(model, samples)

    def decode_w(model, windows, language, settings, batch_size):
        prof = current[-1]
        out = []
        for y in windows:
            ids = prof.joined.pop(0)
            phase = "repacked" if prof.in_windows & set(ids) else "windows"
            prof.in_windows |= set(ids)
            prof.window_tokens = 0
            with prof.timed(phase):
                out += decode(model, [y], language, settings, batch_size)
            prof.windows.append({"clips": ids, "s": y.size / 16000, "tokens": prof.window_tokens, "phase": phase})
            prof.splitting.append(ids)
        return out

    def join_w(clips, gap_s):
        current[-1].joined.append([c.plan["clip_id"] for c in clips])
        return join(clips, gap_s)

    def split_w(segments, spans, language, language_probs, multilingual, model, trust, *args, **kwargs):
        prof = current[-1]
        ids = prof.splitting.pop(0)
        out, bad = split(segments, spans, language, language_probs, multilingual, model, trust, *args, **kwargs)
        if bad is not None:
            conf = out[bad].avg_logprob
            prof.redos.append((ids[bad], "low confidence" if conf is not None and conf < trust else "spanning"))
        return out, bad

    def transcribe_w(self, clip, settings, *args):
        prof = current[-1]
        if prof.phase == "packed":
            prof.count[("redone", "clips")] += 1
            prof.alone.append(clip.plan["clip_id"])
            with prof.timed("redone"):
                return transcribe(self, clip, settings, *args)
        return transcribe(self, clip, settings, *args)

    def pack_w(self, clips, settings, packing_):
        with current[-1].timed("packed"):
            return pack(self, clips, settings, packing_)

    fw.detect_language, fw.decode_windows, packing.join, packing.split = detect_w, decode_w, join_w, split_w
    fw.FasterWhisper.transcribe, fw.FasterWhisper.transcribe_pack = transcribe_w, pack_w


def table(prof: Profile, n: int) -> list[str]:
    """Markdown rows: per phase, each call's count and CPU-s per clip, and the rest (Python, features)."""
    rows = []
    for phase in ("unpacked", "detect", "windows", "repacked", "redone"):
        total = prof.cpu[(phase, "total")]
        if not total:
            continue
        cells = []
        covered = 0.0
        for call in CALLS:
            c, t = prof.count[(phase, call)], prof.cpu[(phase, call)]
            covered += t
            extra = f", {prof.tokens[(phase, call)]} tok" if call == "generate" and c else ""
            cells.append(f"{c} / {t / n:.3f}{extra}" if c else "")
        rows.append(f"| {phase} | {total / n:.3f} | " + " | ".join(cells) + f" | {(total - covered) / n:.3f} |")
    return rows


def run(model: str, clips: list, beam: int, current: list[Profile]) -> tuple[Profile, Profile, dict[str, str]]:
    """Profiles of one unpacked and one packed run of the asr stage over the clips."""
    from kebr_data.asr_engines.faster_whisper import load
    from kebr_data.asr_engines.models import ctranslate2_model
    from kebr_data.config import load as load_config
    from kebr_data.stages.asr import AsrStage
    from kebr_data.stages.base import ShardContext

    whisper = load(str(ctranslate2_model(model)), "cpu", "int8")
    inner = whisper.model._inner if isinstance(whisper.model, Timed) else whisper.model
    inputs = shard(clips)
    languages = {f"c{i}": lang for i, (_, lang, _) in enumerate(clips)}
    out = []
    for p in (0.0, 30.0):
        prof = Profile()
        whisper.model = Timed(inner, prof)
        current.append(prof)
        stage = AsrStage(load_config(overrides=[f"asr.model={model!r}", f"asr.pack_s={p}",
                                                f"asr.beam_size={beam}"])["asr"])
        with tempfile.TemporaryDirectory() as tmp:
            with prof.timed("unpacked") if not p else contextlib.nullcontext():
                stage.run_shard(ShardContext(0, inputs, Path(tmp)))
        out.append(prof)
    whisper.model = inner
    return out[0], out[1], languages



def note(label: str, packed: Profile, languages: dict[str, str]) -> str:
    """One line on a packed run: windows, clips alone and why, tokens per speech-second, each window's clips."""
    foreign = [w for w in packed.windows if any(languages[c] != "en" for c in w["clips"])]
    english = [w for w in packed.windows if w not in foreign]

    def rate(ws: list[dict[str, Any]]) -> str:
        return f"{sum(w['tokens'] for w in ws) / max(1e-9, sum(w['s'] for w in ws)):.1f} ({len(ws)})"

    def name(c: str) -> str:
        return c if languages[c] == "en" else f"{c}/{languages[c]}"

    repacked = sum(w["phase"] == "repacked" for w in packed.windows)
    return (f"{label}: {len(packed.windows)} windows decoded ({repacked} re-packed), {len(packed.alone)} clips alone "
            f"({' '.join(map(name, packed.alone)) or 'none'}; doubted in a window: "
            f"{', '.join(f'{name(c)} {r}' for c, r in packed.redos) or 'none'}); tokens per speech-second: windows "
            f"with a foreign clip {rate(foreign)}, English-only windows {rate(english)}; windows: "
            + "; ".join(f"{w['phase'][0]}[{' '.join(map(name, w['clips']))}]={w['tokens']}t" for w in packed.windows))


def profile_rows(models: str, english: bool, beam: int, tag: str) -> tuple[list[str], list[str]]:
    """Table rows and notes for each model's unpacked and packed run on the short clips."""
    import torch

    torch.set_num_threads(1)
    current: list[Profile] = [Profile()]
    instrument(current)
    lines, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        clips = synthesise(Path(tmp), [c for c in SHORT if c[2] == "en"] if english else SHORT)
        for model in models.split(","):
            unpacked, packed, languages = run(model, clips, beam, current)
            n = len(clips)
            label = f"{tag}{model}{'' if beam == 5 else f' beam {beam}'}, {n} short clips"
            for prof, mode, key in ((unpacked, "one by one", "unpacked"), (packed, "packed 30 s", "packed")):
                lines.append(f"| {label} | {mode} | {prof.cpu[(key, 'total')] / n:.3f} | | | | | |")
                lines += [f"| | {r[2:]}" for r in table(prof, n)]
            notes.append(note(label, packed, languages))
            print("\n".join(lines[-8:]), "\n", notes[-1], flush=True)
    return lines, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--english", action="store_true", help="the English clips only")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--before", default="", help="a source tree of the code before (its rows first, tagged)")
    ap.add_argument("--emit", action="store_true", help="print the rows as JSON only (for --before)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    load_before = os.getloadavg()[0]
    lines, notes = [], []
    if args.before:
        cmd = [sys.executable, __file__, "--models", args.models, "--beam", str(args.beam), "--emit"]
        proc = subprocess.run(cmd + (["--english"] if args.english else []), capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONPATH": str(Path(args.before).resolve())})
        before = json.loads(proc.stdout.splitlines()[-1])
        lines, notes = before["lines"], before["notes"]
    after = profile_rows(args.models, args.english, args.beam, "before: " if args.emit else "")
    if args.emit:
        print(json.dumps({"lines": after[0], "notes": after[1]}))
        return
    lines, notes = lines + after[0], notes + after[1]
    text = "\n".join([
        f"Per clip of `bench/asr_packing.py`'s short clips (CPU-s / clip; count / CPU-s per clip of each CTranslate2 "
        f"call, wrapped in this run only), one run each, load {load_before:.1f} to {os.getloadavg()[0]:.1f}. "
        "Phases: `detect` per-clip language identification, `windows` packed windows, `repacked` windows holding "
        "a clip some earlier window held, `redone` clips transcribed alone in packed mode; `rest` is feature "
        "extraction, tokenizer and Python.", "",
        "| run | phase | CPU-s/clip total | encode | generate | align | detect_language | rest |",
        "|---|---|---:|---:|---:|---:|---:|---:|", *lines, "", *[f"- {x}" for x in notes]])
    write_section("asr-packing-profile", "ASR: where packed windows spend their CPU", text,
                  script="asr_packing_profile.py")


if __name__ == "__main__":
    main()
