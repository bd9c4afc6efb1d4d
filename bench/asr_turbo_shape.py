"""The structural gain of packed ASR windows for large-v3-turbo's shape, measured on the CPU: one 30-s encoder
pass (CPU-s), beam-5 decoding per generated token and the word alignment, for a turbo-shaped Whisper (32
encoder layers, 4 decoder layers, d_model 1280, random weights, converted here to int8 by bench/gpu.py's
`turbo_shaped`: nothing is downloaded) beside tiny.en and base; from them the CPU per clip of one clip a window
against `asr.pack_s = 30` at 4-s and 7.8-s clips (6 and 3 clips a window with 1-s gaps).

The decoder is forced to a realistic length: end-of-text suppressed and `max_length` set to the tokens that much
speech holds (bench/gpu.py's 3 tokens per second of speech; CTranslate2 decodes at most half of
`max_length`), so random weights decode exactly as many tokens as a
real window would. The features are the speech fixture tiled to 30 s. faster-whisper int8, one thread; each
repeat measures every model's passes in an order that alternates between repeats, best of `--repeat` kept.
Not counted: the log-mel features (the same per window either way) and per-clip language detection. Writes the
`asr-turbo-shape` section of bench/RESULTS.md. The turbo-shaped model (~1 GB) is built once, in ~3 min, into
`--cache` (default: `default_cache()`, the user's own kebr cache, never a predictable path in the shared temporary
folder, where another user could plant the folder or a link to one of ours) and reused.

    python bench/asr_turbo_shape.py [--repeat 3] [--models tiny.en,base,turbo]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ["OMP_NUM_THREADS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402
from gpu import CLIP_LENGTHS, GAP_S, TOKENS_PER_S, WINDOW_S, clips_a_window, turbo_shaped  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TURBO = "large-v3-turbo shape"


def tokens(speech_s: float) -> int:
    """The tokens a real transcript of `speech_s` seconds of speech holds."""
    return round(TOKENS_PER_S * speech_s)


def default_cache() -> Path:
    """Where the turbo-shaped model is built and kept: bench-turbo-shape/ in the toolkit's per-user cache folder
    (the models' `cache_dir`: $KEBR_CACHE_DIR, else ~/.cache/kebr)."""
    from kebr_data.asr_engines.models import cache_dir

    return cache_dir() / "bench-turbo-shape"


def model_path(name: str, cache: Path) -> Path:
    """tiny.en and base from the installed packages; the turbo shape built once into `cache` (int8)."""
    from kebr_data.asr_engines.models import ctranslate2_model

    if name != "turbo":
        return ctranslate2_model(name)
    out = cache / "turbo-shaped"
    if not (out / "model.bin").exists():
        cache.mkdir(parents=True, exist_ok=True)
        turbo_shaped(cache, ctranslate2_model("base"), quantization="int8")
    return out


def token_counts() -> list[int]:
    """Every decoder length measured: one clip, a packed window of them, and a 30-s window of speech."""
    return sorted({n for c in CLIP_LENGTHS for n in (tokens(c), clips_a_window(c) * tokens(c))} | {tokens(WINDOW_S)})


def measure(model: Any, features: Any, prompt: list[int], eot: int, n_tokens: list[int]) -> dict[str, float]:
    """CPU-s of one 30-s encoder pass (`encode`) and, per decoder length n, beam-5 decoding of n tokens
    (`decode n`) and their word alignment (`align n`)."""
    c0 = time.process_time()
    encoded = model.model.encode(features)
    got = {"encode": time.process_time() - c0}
    for n in n_tokens:
        c0 = time.process_time()
        result = model.model.generate(encoded, [prompt], beam_size=5, max_length=2 * n,  # decodes max_length / 2
                                      suppress_tokens=[-1, eot], suppress_blank=False)
        got[f"decode {n}"] = time.process_time() - c0
        ids = result[0].sequences_ids[0]
        assert len(ids) == n, f"decoded {len(ids)} tokens, not {n}"
        c0 = time.process_time()
        model.model.align(encoded, prompt, [ids], 3000, median_filter_width=7)
        got[f"align {n}"] = time.process_time() - c0
    return got


def rows(name: str, best: dict[str, float]) -> list[str]:
    """Table rows of one model: per clip length, one clip a window vs packed, from its best passes."""

    def window(n: int) -> float:
        return best["encode"] + best[f"decode {n}"] + best[f"align {n}"]

    full = window(tokens(WINDOW_S))
    out = []
    for clip_s in CLIP_LENGTHS:
        k, n = clips_a_window(clip_s), tokens(clip_s)
        one, packed = window(n), window(k * n) / k
        out.append(f"| {name} | {clip_s:g} s ({n} tokens) | {k} | {best['encode']:.2f} | "
                   f"{1000 * best[f'decode {k * n}'] / (k * n):.1f} | {one:.3f} | {packed:.3f} | "
                   f"**{one / packed:.2f}×** "
                   f"| {best['encode'] / one:.0%} | {one / full:.3f} | {packed / full:.3f} |")
    return out


def parser() -> argparse.ArgumentParser:
    """The command line: --repeat, --models and --cache (default `default_cache()`)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default="tiny.en,base,turbo", help="comma-separated: tiny.en, base, turbo")
    ap.add_argument("--cache", type=Path, default=default_cache(),
                    help="folder of the converted turbo-shaped model (built once, reused; default: the user's "
                         "kebr cache)")
    return ap


def main() -> None:
    args = parser().parse_args()
    import numpy as np
    import soundfile as sf
    import torch
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_ctranslate2_storage

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    speech, _ = sf.read(ROOT / "tests/fixtures/speech_en.flac", dtype="float32")
    names = args.models.split(",")
    models = {}
    for name in names:
        model = WhisperModel(str(model_path(name, args.cache)), device="cpu", compute_type="int8", cpu_threads=1)
        tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        mel = model.feature_extractor(np.resize(speech, int(WINDOW_S * 16000)))[None, :, :3000]
        models[name] = (model, get_ctranslate2_storage(np.ascontiguousarray(mel)),
                        [*tok.sot_sequence, tok.no_timestamps], tok.eot)
    n_tokens = token_counts()
    best: dict[str, dict[str, float]] = {name: {} for name in names}
    for r in range(args.repeat):
        for name in (names if r % 2 == 0 else names[::-1]):  # interleaved, order alternating
            model, features, prompt, eot = models[name]
            lengths = n_tokens if r % 2 == 0 else n_tokens[::-1]
            for key, cpu in measure(model, features, prompt, eot, lengths).items():
                best[name][key] = min(best[name].get(key, float("inf")), cpu)
            print(f"repeat {r + 1}: {name} {best[name]}", flush=True)
    lines = []
    for name in names:
        lines += rows(TURBO + ", random" if name == "turbo" else name, best[name])
    text = "\n".join([
        f"CPU-s of a model's passes over one 30-s window, faster-whisper int8, one thread, beam 5, word alignment; "
        f"best of {args.repeat} interleaved repeats. Decoder lengths forced to {TOKENS_PER_S:g} tokens per second "
        f"of speech (end-of-text suppressed, `max_length`); a packed window holds as many clips as fit with "
        f"{GAP_S:g}-s gaps. The {TURBO} has random weights (32 encoder layers, 4 decoder layers, d_model 1280, "
        "converted to int8 locally). Per clip: one clip a window = encoder pass + decoding + alignment of its "
        "tokens; packed = the same for the window's tokens, divided by its clips. Not counted: log-mel features, "
        f"per-clip language detection, redone doubtful clips. Machine load (1-min average) {load_before:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at the end, on 2 cores shared with other work: CPU-s are the "
        "measure.", "",
        "| model | clip | clips a window | encoder pass CPU-s | decoder CPU-ms per token (packed) | one clip a "
        "window CPU-s/clip | packed CPU-s/clip | packing gain | encoder share, one clip a window | one clip "
        "/ 30-s speech window | packed clip / 30-s speech window |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *lines, "",
        "The last two columns put a clip's cost against a 30-s window of continuous speech "
        f"({tokens(WINDOW_S)} tokens), the unit of published GPU throughput figures: bench/pipeline.py's projection "
        "scales those by them."])
    write_section("asr-turbo-shape", "ASR: the packing gain of large-v3-turbo's shape (CPU)", text)


if __name__ == "__main__":
    main()
