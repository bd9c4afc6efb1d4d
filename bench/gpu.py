"""GPU throughput, ready to run on one CUDA GPU in under 8 minutes: ASR windows/s and clips/s for Whisper
tiny.en and base (the offline models) and a large-v3-turbo-shaped model with random weights (built from its
transformers `WhisperConfig`, converted here with CTranslate2's converter: nothing is downloaded), at batch
1/8/32, packed (`asr.pack_s = 30`: 4-s clips, 6 a window) and not (one clip a window); `ssl_audio`
(HuBERT-base shape) and `video_encoder` (VideoMAE-base shape) clips/s at their batch sizes; peak GPU memory
of each. Writes the `gpu` section of bench/RESULTS.md. On a machine without a CUDA GPU it refuses in one line
(exit 2) before loading anything.

The random-weights model decodes noise: its windows are capped at the tokens a real window of that much
speech holds (~3 tokens/s), so its rows measure the encoder and a realistic decoder length, not text.

    python bench/gpu.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIP_S, PER_WINDOW, GAP_S = 4.0, 6, 1.0  # packed: six 4-s clips with 1-s gaps fill a 30-s window
TOKENS_PER_S = 3.0


def refuse_without_gpu() -> None:
    """One line and exit 2 when no CUDA GPU is visible (ctranslate2 asks the driver; nothing else is loaded)."""
    import ctranslate2

    if ctranslate2.get_cuda_device_count() == 0:
        print("bench/gpu.py needs a CUDA GPU (none visible): run it on a GPU machine", file=sys.stderr)
        sys.exit(2)


def turbo_shaped(folder: Path, tokenizer: Path) -> Path:
    """A CTranslate2 Whisper with large-v3-turbo's shape (32 encoder layers, 4 decoder layers, d_model 1280,
    128 mel bins) and random weights, converted locally."""
    import ctranslate2
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

    cfg = WhisperConfig(vocab_size=51865, num_mel_bins=128, encoder_layers=32, decoder_layers=4, d_model=1280,
                        encoder_attention_heads=20, decoder_attention_heads=20, encoder_ffn_dim=5120,
                        decoder_ffn_dim=5120, max_source_positions=1500, max_target_positions=448)
    hf = folder / "hf"
    WhisperForConditionalGeneration(cfg).save_pretrained(hf)
    WhisperTokenizerFast(tokenizer_file=str(tokenizer / "tokenizer.json")).save_pretrained(hf)  # base's vocabulary
    out = folder / "turbo-shaped"
    ctranslate2.converters.TransformersConverter(str(hf)).convert(str(out), quantization="float16")
    (out / "tokenizer.json").write_bytes((tokenizer / "tokenizer.json").read_bytes())
    (out / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    return out


def asr_rows(name: str, path: Path, speech, seconds: float, random_weights: bool) -> list[str]:
    """windows/s and clips/s of one model at batch 1/8/32, packed and one clip a window."""
    import numpy as np
    import torch
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(str(path), device="cuda", compute_type="float16")
    pipe = BatchedInferencePipeline(model=model)
    clip = np.resize(speech, int(CLIP_S * 16000)).astype(np.float32)
    gap = np.zeros(int(GAP_S * 16000), np.float32)
    window = np.concatenate([x for _ in range(PER_WINDOW) for x in (clip, gap)][:-1])
    rows = []
    for packed in (False, True):
        unit = window if packed else clip
        per_window = PER_WINDOW if packed else 1
        cap = int(TOKENS_PER_S * unit.size / 16000) + 8 if random_weights else None
        for batch in (1, 8, 32):
            n = batch * 2
            audio = np.concatenate([unit] * n)
            starts = np.arange(n + 1) * unit.size / 16000
            stamps = [{"start": float(a), "end": float(b)} for a, b in zip(starts[:-1], starts[1:])]
            kwargs = dict(language="en", beam_size=5, word_timestamps=True, clip_timestamps=stamps,
                          without_timestamps=True, max_new_tokens=cap, batch_size=batch)
            list(pipe.transcribe(audio[: unit.size * batch], **{**kwargs, "clip_timestamps": stamps[:batch]})[0])
            torch.cuda.synchronize()
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                list(pipe.transcribe(audio, **kwargs)[0])
                done += n
            dt = time.perf_counter() - t0
            free, total = torch.cuda.mem_get_info()  # CTranslate2 allocates outside torch: the device's view
            rows.append(f"| {name} | {'packed 30 s' if packed else 'one clip a window'} | {batch} | "
                        f"{done / dt:.1f} | {done * per_window / dt:.1f} | {(total - free) / 2**30:.2f} |")
            print(rows[-1], flush=True)
    del pipe, model
    return rows


def encoder_rows(seconds: float) -> list[str]:
    """ssl_audio (HuBERT-base shape, 6-s clips) and video_encoder (VideoMAE-base shape, 16 frames of 224²)
    clips/s at their batch sizes, fp16, random weights, and the peak memory of each."""
    import torch
    from transformers import HubertConfig, HubertModel, VideoMAEConfig, VideoMAEModel

    rows = []
    for name, model, shape, batches in (
            ("ssl_audio (HuBERT-base)", HubertModel(HubertConfig()), (96000,), (1, 8, 32)),
            ("video_encoder (VideoMAE-base)", VideoMAEModel(VideoMAEConfig()), (16, 3, 224, 224), (1, 8, 16))):
        model = model.half().cuda().eval()
        for batch in batches:
            x = torch.randn(batch, *shape, device="cuda", dtype=torch.float16)
            torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                model(x)
                torch.cuda.synchronize()
                done, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    model(x)
                    torch.cuda.synchronize()
                    done += batch
            dt = time.perf_counter() - t0
            rows.append(f"| {name} | {batch} | {done / dt:.1f} | {torch.cuda.max_memory_allocated() / 2**30:.2f} |")
            print(rows[-1], flush=True)
        del model
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per row (the whole run: ~40 rows)")
    args = ap.parse_args()
    refuse_without_gpu()
    import soundfile as sf
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import write_section

    from kebr_data.asr_engines.models import ctranslate2_model

    speech, _ = sf.read(ROOT / "tests/fixtures/speech_en.flac", dtype="float32")
    asr = []
    with tempfile.TemporaryDirectory() as tmp:
        models = [("tiny.en", ctranslate2_model("tiny.en"), False), ("base", ctranslate2_model("base"), False),
                  ("large-v3-turbo shape, random", turbo_shaped(Path(tmp), ctranslate2_model("base")), True)]
        for name, path, random_weights in models:
            asr += asr_rows(name, path, speech, args.seconds, random_weights)
    enc = encoder_rows(args.seconds)
    text = "\n".join([
        f"{torch.cuda.get_device_name(0)}, faster-whisper float16, beam 5, word timestamps, English forced; "
        f"{CLIP_S:g}-s clips, packed {PER_WINDOW} a window with {GAP_S:g}-s gaps; {args.seconds:g} s timed per row "
        "after one warm-up batch. The large-v3-turbo-shaped model has random weights, its decoding capped at "
        f"{TOKENS_PER_S:g} tokens per second of audio.", "",
        "| model | windows | batch | windows/s | clips/s | GPU memory in use (GiB) |",
        "|---|---|---:|---:|---:|---:|", *asr, "",
        "| encoder stage | batch | clips/s | peak GPU memory (GiB) |", "|---|---:|---:|---:|", *enc])
    print(text)
    write_section("gpu", "GPU: batched, packed ASR and the encoder stages", text)


if __name__ == "__main__":
    main()
