"""Packed ASR windows (`asr.pack_s = 30`) against clip by clip (`0`), through the asr stage's `run_shard`, for
Whisper tiny.en and base in faster-whisper (int8, one thread).

Corpus: `bench/asr.py`'s espeak-ng sentences grown to 60 clips: 34 short clips (3-5 s: its 20, with the
German, French and Spanish ones, and the 14 English sentences again in other voices) and 26 long ones (7-10 s:
two English sentences each). Per model and length: CPU-s and wall-s per clip (interleaved packed / unpacked,
`--repeat` repeats, best kept), their ratio, WER on the English clips (Whisper's English normaliser, jiwer),
mask-label agreement with the reference sentence, language exact (the row's language equals the spoken one;
tiny.en says `en` or `und`), and the encoder's share of the packed CPU time (one 30-s encoder pass timed
alone, times the windows). Needs Debian's espeak-ng. `--clips N` takes N of each length, spread evenly, (a quick
look while developing); the section is written only for the full corpus.

    python bench/asr_packing.py [--repeat 2] [--clips N] [--models tiny.en,tiny.en/english,base,base/beam1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr import CLIPS, synthesise  # noqa: E402
from common import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-x-rp", "en-us+m3", "en-gb+f4", "en-us+f2", "en-gb+m2"]
ENGLISH = [c for c in CLIPS if c[2] == "en"]
SHORT = CLIPS + [(VOICES[(i + 3) % len(VOICES)], 160, "en", text) for i, (_, _, _, text) in enumerate(ENGLISH)]
LONG = [(VOICES[i % len(VOICES)], 120, "en", f"{ENGLISH[i % 14][3]} {ENGLISH[(i + 5) % 14][3]}") for i in range(26)]


def pick(clips: list, n: int) -> list:
    """n clips spread evenly over the list (all when n is 0), so a subset keeps some of each language."""
    return clips[::max(1, len(clips) // n)][:n] if n else clips


def shard(clips):
    """A shard context's inputs (plan and audio tables) for (samples, language, text) clips at 16 kHz."""
    import numpy as np
    import pyarrow as pa

    from kebr_data.media.flac import encode_flac
    from kebr_data.schema import AUDIO, PLAN

    plan = [{"clip_id": f"c{i}", "status": "ok", "source": "folder"} for i in range(len(clips))]
    audio = [{"clip_id": f"c{i}", "status": "ok", "sample_rate": 16000, "num_samples": len(y),
              "duration_s": len(y) / 16000, "flac": encode_flac((np.clip(y, -1, 1) * 32767).astype(np.int16), 16000)}
             for i, (y, _, _) in enumerate(clips)]
    return {"plan": pa.Table.from_pylist(plan, schema=PLAN), "audio": pa.Table.from_pylist(audio, schema=AUDIO)}


def encoder_s(model) -> float:
    """CPU-s of one 30-s encoder pass of a faster-whisper model (best of 3)."""
    import numpy as np
    from faster_whisper.transcribe import get_ctranslate2_storage

    features = model.feature_extractor(np.zeros(480000, np.float32))[None, :, :3000]
    best = float("inf")
    for _ in range(3):
        c0 = time.process_time()
        model.model.encode(get_ctranslate2_storage(np.ascontiguousarray(features)))
        best = min(best, time.process_time() - c0)
    return best


def report(lines: list[str], sets: dict, args: argparse.Namespace, load_before: float) -> None:
    """Print the table and, for the full corpus, rewrite the `asr-packing` section of RESULTS.md."""
    text = "\n".join([
        f"{sum(len(c) for c in sets.values())} espeak-ng clips through the asr stage's `run_shard`, faster-whisper "
        f"int8, beam 5 (unless the row says beam 1), word timestamps, one CPU thread; best of {args.repeat} "
        f"interleaved repeats (packed and unpacked alternating). Machine load (1-min average) {load_before:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at this table, on 2 cores shared with other work: wall-s are noisy, "
        "CPU-s are the measure. Packed: `asr.pack_s = 30`, `pack_gap_s = 1`, `pack_min_logprob = -0.5` (a doubtful "
        "clip redone alone, its decoding bounded, the clips after it back in the queue; a run of doubtful clips that "
        "opens a window done alone). Encoder share: planned windows (or clips) × one 30-s encoder pass / CPU-s; "
        "the rest is the decoder, word alignment, language detection (base) and clips done alone "
        "(`bench/asr_packing_profile.py` below breaks it down).", "",
        "| model | clips | mode | CPU-s/clip | wall-s/clip | CPU vs one by one | WER (en) | label agreement | "
        "language exact | encoder share |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|", *lines])
    if args.clips:  # a subset: printed, never written
        print(text, flush=True)
    else:
        write_section("asr-packing", "ASR: packed windows vs one clip per window", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--clips", type=int, default=0, help="first N clips of each length (0 = all)")
    ap.add_argument("--models", default="tiny.en,tiny.en/english,base,base/beam1",
                    help="comma-separated runs: a model, or model/english (its English short clips only: no doubtful "
                         "clips to redo) or model/beam1 (short clips, beam 1)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import jiwer
    import torch
    from whisper.normalizers import EnglishTextNormalizer

    from kebr_data.asr_engines.faster_whisper import load
    from kebr_data.asr_engines.models import ctranslate2_model
    from kebr_data.asr_engines.packing import plan_windows
    from kebr_data.config import load as load_config
    from kebr_data.masking import load_lexicon, mask_transcript
    from kebr_data.stages.asr import AsrStage
    from kebr_data.stages.base import ShardContext

    torch.set_num_threads(1)  # one thread, unpinned: CPU-s are the measure on a shared machine
    normalise = EnglishTextNormalizer()
    lexicon = load_lexicon("vader", -4.0, 4.0)
    load_before = os.getloadavg()[0]
    n = args.clips
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {k: synthesise(Path(tmp), pick(v, n)) for k, v in {"short": SHORT, "long": LONG}.items()}
        for run in args.models.split(","):
            model, _, variant = run.partition("/")  # tiny.en/english: English short clips; base/beam1: beam 1
            beam = 1 if variant == "beam1" else 5
            whisper = load(str(ctranslate2_model(model)), "cpu", "int8")
            enc = encoder_s(whisper)
            stages = {p: AsrStage(load_config(overrides=[f"asr.model={model!r}", f"asr.pack_s={p}",
                                                         f"asr.beam_size={beam}"])["asr"]) for p in (0.0, 30.0)}
            runs = {"short": sets["short"]} if variant else sets
            if variant == "english":
                runs = {"short, English only": [c for c in sets["short"] if c[1] == "en"]}
            for length, clips in runs.items():
                inputs = shard(clips)
                cpu = {p: float("inf") for p in stages}
                wall = dict(cpu)
                rows = {}
                for r in range(args.repeat):
                    for p in ((0.0, 30.0) if r % 2 == 0 else (30.0, 0.0)):  # interleaved, order alternating
                        c0, w0 = time.process_time(), time.perf_counter()
                        rows[p] = stages[p].run_shard(ShardContext(0, inputs, Path(tmp))).to_pylist()
                        cpu[p] = min(cpu[p], time.process_time() - c0)
                        wall[p] = min(wall[p], time.perf_counter() - w0)
                english = [i for i, (_, lang, _) in enumerate(clips) if lang == "en"]
                windows = len(plan_windows([len(y) / 16000 for y, lang, _ in clips if lang == "en" or
                                            model == "base"], 30, 1))
                stats = {}
                for p, rs in rows.items():
                    wer = jiwer.wer([normalise(clips[i][2]) for i in english],
                                    [normalise(rs[i]["text"] or "") or "<empty>" for i in english])
                    agree = sum(mask_transcript(rs[i]["text"] or "", lexicon, "c").label
                                == mask_transcript(clips[i][2], lexicon, "c").label for i in english)
                    exact = sum(rs[i]["language"] == lang for i, (_, lang, _) in enumerate(clips))
                    stats[p] = (wer, agree, exact)
                mean_s = sum(len(y) for y, _, _ in clips) / 16000 / len(clips)
                for p in (0.0, 30.0):
                    wer, agree, exact = stats[p]
                    lines.append(
                        f"| {model}{' beam 1' if beam == 1 else ''} | {length} ({len(clips)} clips, {mean_s:.1f} s "
                        f"mean) | {'packed 30 s' if p else 'one by one'} | {cpu[p] / len(clips):.3f} | "
                        f"{wall[p] / len(clips):.3f} | "
                        f"{cpu[0.0] / cpu[p]:.2f}× | {wer:.1%} | {agree}/{len(english)} | {exact}/{len(clips)} | "
                        + (f"{min(1.0, windows * enc / cpu[p]):.0%} ({windows} windows × {enc:.2f} s)" if p else
                           f"{min(1.0, len(clips) * enc / cpu[p]):.0%}") + " |")
                    print(lines[-1], flush=True)
            report(lines, sets, args, load_before)  # after each model, so a cut-short run keeps what it measured


if __name__ == "__main__":
    main()
