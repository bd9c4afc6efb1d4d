"""ASR engines and models side by side on CPU: Whisper tiny.en vs multilingual Whisper base, each in
faster-whisper (int8) and openai-whisper (float32, a checkpoint rebuilt from the same CTranslate2
weights by tests/ct2_to_whisper.py), one thread each, in one run.

Clips: 20 espeak-ng sentences generated here (needs Debian's espeak-ng) in several voices: 14
English sentences with a sentiment word, 2 each in German, French and Spanish. Per contender:
real-time factor (CPU and wall), word error rate on the English clips after Whisper's English text
normaliser (jiwer), language-ID accuracy (exact detected language on multilingual models; the kept
/ skipped decision of the asr stage for all), and label agreement: the mask label from the
transcript vs the mask label from the reference sentence. Timings are interleaved (clip by clip,
every contender) and repeated `--repeat` times; the best repeat is reported.

    python bench/asr.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# (espeak-ng voice, words per minute, language, reference sentence)
CLIPS = [
    ("en-us", 150, "en", "I love this wonderful movie, it made me so happy."),
    ("en-gb", 150, "en", "It was a complete disaster and I hated every minute of it."),
    ("en-us+f3", 140, "en", "The food was terrible and the service was even worse."),
    ("en-gb-x-rp", 150, "en", "What a beautiful morning, I feel great today."),
    ("en-us+m3", 140, "en", "I am so angry that they cancelled the concert."),
    ("en-gb-scotland", 140, "en", "This is the best book I have read in years."),
    ("en-us+f2", 150, "en", "The weather was awful and everyone was miserable."),
    ("en-gb+m2", 150, "en", "She was proud of her brilliant students."),
    ("en-us", 130, "en", "I was afraid the old bridge would collapse."),
    ("en-gb+f4", 140, "en", "Thank you, that was a lovely surprise."),
    ("en-us+m5", 150, "en", "The movie was boring and far too long."),
    ("en-gb-x-rp", 130, "en", "He felt lonely after his friends moved away."),
    ("en-us+f4", 140, "en", "We were thrilled to win the championship."),
    ("en-gb", 160, "en", "The results were disappointing for the whole team."),
    ("de", 130, "de", "Ich habe heute keine Zeit, weil ich nach Hause gehen muss."),
    ("de+f3", 130, "de", "Das Essen in diesem Restaurant war wirklich ausgezeichnet."),
    ("fr", 120, "fr", "Je n'ai pas le temps aujourd'hui parce que je dois rentrer à la maison."),
    ("fr+m3", 120, "fr", "Bonjour, je voudrais un café et un croissant, s'il vous plaît."),
    ("es", 140, "es", "Hoy no tengo tiempo porque tengo que volver a casa temprano."),
    ("es+f3", 140, "es", "Buenos días, me gustaría un café con leche, por favor."),
]


def synthesise(tmp: Path, clips=CLIPS):
    """The clips ((voice, wpm, language, text)) as (16 kHz float32 array, language, text)."""
    import numpy as np
    import soundfile as sf
    import soxr

    out = []
    for i, (voice, wpm, lang, text) in enumerate(clips):
        wav = tmp / f"{i}-{len(clips)}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav), text], check=True)
        y, sr = sf.read(wav, dtype="float32")
        out.append((soxr.resample(y, sr, 16000).astype(np.float32), lang, text))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import jiwer
    import torch
    from whisper.normalizers import EnglishTextNormalizer

    from ct2_to_whisper import convert
    from kebr_data.asr_engines import ClipAudio
    from kebr_data.asr_engines.models import ctranslate2_model
    from kebr_data.config import load
    from kebr_data.masking import load_lexicon
    from kebr_data.masking import mask_transcript
    from kebr_data.stages.asr import AsrStage
    from kebr_data.stages.base import ClipInput, ShardContext

    torch.set_num_threads(1)
    os.sched_setaffinity(0, {0})
    normalise = EnglishTextNormalizer()
    lexicon = load_lexicon("vader", -4.0, 4.0)
    with tempfile.TemporaryDirectory() as tmp:
        clips = synthesise(Path(tmp))
        audio_s = sum(len(y) for y, _, _ in clips) / 16000
        contenders = []
        for model in ("tiny.en", "base"):
            pt = convert(ctranslate2_model(model), Path(tmp) / f"{model}.pt")
            contenders += [(f"{model}, faster-whisper int8", load(overrides=[f"asr.model={model!r}"])["asr"]),
                           (f"{model}, openai-whisper float32",
                            load(overrides=["asr.engine='openai-whisper'", f"asr.model={str(pt)!r}"])["asr"])]
        stages = [AsrStage(cfg) for _, cfg in contenders]
        for stage in stages:
            stage.engine.transcribe(ClipAudio({}, clips[0][0], 16000), stage.engine_settings)  # load, warm up
        cpu = [[float("inf")] * len(clips) for _ in contenders]
        wall = [[float("inf")] * len(clips) for _ in contenders]
        rows: list[list[dict]] = [[{} for _ in clips] for _ in contenders]
        for _ in range(args.repeat):
            for i, (y, _, _) in enumerate(clips):
                from kebr_data.media.flac import encode_flac

                flac = encode_flac((y.clip(-1, 1) * 32767).astype("int16"), 16000)
                upstream = {"audio": {"flac": flac, "sample_rate": 16000, "duration_s": len(y) / 16000}}
                for k, stage in enumerate(stages):
                    c0, w0 = time.process_time(), time.perf_counter()
                    rows[k][i] = stage.process(ClipInput(f"c{i}", {}, upstream), ShardContext(0, {}, Path(tmp)))
                    cpu[k][i] = min(cpu[k][i], time.process_time() - c0)
                    wall[k][i] = min(wall[k][i], time.perf_counter() - w0)
    english = [i for i, (_, lang, _) in enumerate(clips) if lang == "en"]
    results = []
    for k, (name, _) in enumerate(contenders):
        refs = [normalise(clips[i][2]) for i in english]
        hyps = [normalise(rows[k][i]["text"] or "") for i in english]
        kept_right = sum((rows[k][i].get("status", "ok") == "ok") == (lang == "en")
                         for i, (_, lang, _) in enumerate(clips))
        exact = sum(rows[k][i]["language"] == lang for i, (_, lang, _) in enumerate(clips))
        agree = sum(mask_transcript(rows[k][i]["text"], lexicon, f"c{i}").label
                    == mask_transcript(clips[i][2], lexicon, f"c{i}").label for i in english if rows[k][i]["text"])
        results.append((name, sum(cpu[k]) / audio_s, sum(wall[k]) / audio_s, jiwer.wer(refs, hyps), kept_right,
                        exact, agree, rows[k]))
    ref_cpu = results[0][1]
    lines = [f"{len(clips)} espeak-ng clips ({len(english)} English in 10 voices, 2 each German, French, Spanish; "
             f"{audio_s:.0f} s of audio), beam 5, word timestamps, one CPU thread, best of {args.repeat} interleaved "
             "repeats. RTF = processing s / audio s through the asr stage's `process` (decode, resample, engine, "
             "gates). WER on the English clips after Whisper's `EnglishTextNormalizer` (jiwer). Kept/skipped: the "
             "asr stage with `languages = [\"en\"]` keeps exactly the English clips. Language exact: the detected "
             "language equals the spoken one (tiny.en says `en` or `und`). Label agreement: masking the transcript "
             "gives the same label as masking the reference sentence (English clips).", "",
             "| model, engine | RTF CPU | RTF wall | CPU vs tiny.en faster-whisper | WER (en) | kept/skipped right "
             "| language exact | label agreement |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c, w, e, kept, exact, agree, _ in results:
        lines.append(f"| {name} | {c:.3f} | {w:.3f} | {c / ref_cpu:.2f}× | {e:.1%} | {kept}/{len(clips)} | "
                     f"{exact}/{len(clips)} | {agree}/{len(english)} |")
    base_rows = results[2][7]
    lines += ["", "Whisper base, faster-whisper: detected language (probability) per non-English clip: " + ", ".join(
        f"{clips[i][1]} → {base_rows[i]['language']} ({base_rows[i]['language_prob']:.2f})"
        for i in range(len(clips)) if clips[i][1] != "en") + "."]
    text = "\n".join(lines)
    write_section("asr", "ASR: tiny.en vs base, faster-whisper vs openai-whisper", text)


if __name__ == "__main__":
    main()
