"""GPU throughput, ready to run on one CUDA GPU in under 8 minutes: ASR windows/s and clips/s for Whisper
tiny.en and base (the offline models) and a large-v3-turbo-shaped model with random weights (built from its
transformers `WhisperConfig`, converted here with CTranslate2's converter: nothing is downloaded), at batch
1/8/32, packed (`asr.pack_s = 30`: 4-s clips 6 a window; for the turbo shape also 7.8-s clips, VoxCeleb2's mean,
3 a window) and not (one clip a window); `ssl_audio`
(HuBERT-base shape) and `video_encoder` (VideoMAE-base shape) clips/s at their batch sizes; peak GPU memory
of each. Writes the `gpu` section of bench/RESULTS.md (or `--out PATH`). On a machine without a CUDA GPU it
refuses in one line (exit 2) before loading anything.

The random-weights model decodes noise: its windows are capped at the tokens a real window of that much
speech holds (3 tokens per second of speech), so its rows measure the encoder and a realistic decoder length, not
text; the table's tokens-per-clip column shows the cap held.

`--cpu-check` is a check of this script, not a measurement: the same code paths on device `cpu` (int8) with
tiny sizes (tiny.en; the turbo shape shrunk to 2 encoder layers, 1 decoder layer, d_model 256, converted the
same way; one or two windows a row at batch 1 and 2; HuBERT and VideoMAE configs of one small layer), each
row run once, its table written to `--out PATH`, never to RESULTS.md. It takes ~13 CPU-s and is tested, so a
GPU machine's scarce time is not spent on the script's first crash.

    python bench/gpu.py [--seconds 4] [--out PATH]     # on a CUDA GPU: 30 rows, under 8 min
    python bench/gpu.py --cpu-check --out /tmp/gpu-check.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WINDOW_S, GAP_S = 30.0, 1.0  # packed: clips with 1-s gaps fill a 30-s window (six of 4 s, three of 7.8 s)
CLIP_LENGTHS = (4.0, 7.8)  # a short clip and VoxCeleb2's mean
TOKENS_PER_S = 3.0
PROMPT_TOKENS = 4  # <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
#: large-v3-turbo's shape (transformers WhisperConfig fields); TINY_TURBO: the same conversion, shrunk for --cpu-check
TURBO = dict(encoder_layers=32, decoder_layers=4, d_model=1280, encoder_attention_heads=20, decoder_attention_heads=20,
             encoder_ffn_dim=5120, decoder_ffn_dim=5120)
TINY_TURBO = dict(encoder_layers=2, decoder_layers=1, d_model=256, encoder_attention_heads=4, decoder_attention_heads=4,
                  encoder_ffn_dim=1024, decoder_ffn_dim=1024)


@dataclass(frozen=True)
class Device:
    """Where the rows run and at what sizes: the CUDA GPU (the measurement) or the CPU (`--cpu-check`)."""

    kind: str  # "cuda" or "cpu"
    compute_type: str  # faster-whisper's compute type
    asr_batches: tuple[int, ...]
    windows_per_batch: int  # timed windows per row: batch × this
    hubert: dict  # HubertConfig overrides
    videomae: dict  # VideoMAEConfig overrides
    audio_samples: int
    video_batches: tuple[int, ...]
    warm_up: bool  # one untimed batch before each ASR row (the check skips it: the same call, half the time)

    def name(self) -> str:
        """The device's name for the table's header."""
        import torch

        if self.kind == "cpu":
            return "CPU (--cpu-check: a check, not a measurement)"
        return torch.cuda.get_device_name(0)

    def sync(self) -> None:
        """Wait for the device's queued work (nothing to wait for on the CPU)."""
        import torch

        if self.kind == "cuda":
            torch.cuda.synchronize()

    def in_use_gib(self) -> float:
        """Memory in use: the device's view on a GPU (CTranslate2 allocates outside torch), the RSS on the CPU."""
        import psutil
        import torch

        if self.kind == "cpu":
            return psutil.Process().memory_info().rss / 2**30
        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**30

    def reset_peak(self) -> None:
        """Start a new peak-memory count (the GPU's; the CPU's peak RSS cannot be reset)."""
        import torch

        if self.kind == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        """Peak memory: torch's allocations on the GPU, the process's peak RSS on the CPU."""
        import torch

        if self.kind == "cpu":
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return torch.cuda.max_memory_allocated() / 2**30


GPU = Device("cuda", "float16", (1, 8, 32), 2, {}, {}, 96000, (1, 8, 16), True)
CPU_CHECK = Device("cpu", "int8", (1, 2), 1,
                   dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
                   dict(image_size=32, patch_size=16, num_frames=2, tubelet_size=2, hidden_size=32,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
                   16000, (1, 2), False)


def clips_a_window(clip_s: float) -> int:
    """Clips of `clip_s` that a 30-s window holds with the packing gap between them."""
    return int((WINDOW_S + GAP_S) // (clip_s + GAP_S))


def max_new_tokens(target: int) -> int:
    """faster-whisper's `max_new_tokens` that decodes `target` tokens: CTranslate2's Whisper decodes at most half
    of `max_length`, which faster-whisper sets to prompt + max_new_tokens (max_new_tokens = 20 decodes 12)."""
    return 2 * target - PROMPT_TOKENS


def refuse_without_gpu() -> None:
    """One line and exit 2 when no CUDA GPU is visible to CTranslate2 (it asks the driver; nothing else is loaded
    first) or torch cannot use it (a CPU-only build: the memory figures and encoder rows need CUDA torch)."""
    import ctranslate2

    if ctranslate2.get_cuda_device_count() == 0:
        print("bench/gpu.py needs a CUDA GPU (none visible): run it on a GPU machine", file=sys.stderr)
        sys.exit(2)
    import torch

    if not torch.cuda.is_available():
        print(f"bench/gpu.py needs a CUDA build of torch (torch {torch.__version__} cannot use the GPU): install one "
              "from https://pytorch.org", file=sys.stderr)
        sys.exit(2)


def turbo_shaped(folder: Path, tokenizer: Path, shape: dict[str, int] = TURBO, quantization: str = "float16") -> Path:
    """A CTranslate2 Whisper of `shape` (default large-v3-turbo's: 32 encoder layers, 4 decoder layers, d_model
    1280), 128 mel bins and random weights, converted locally with `quantization`; nothing is downloaded."""
    import ctranslate2
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

    cfg = WhisperConfig(vocab_size=51865, num_mel_bins=128, max_source_positions=1500, max_target_positions=448,
                        **shape)
    hf = folder / "hf"
    torch.manual_seed(0)
    WhisperForConditionalGeneration(cfg).half().save_pretrained(hf)  # fp16 on disk: half the bytes to convert
    WhisperTokenizerFast(tokenizer_file=str(tokenizer / "tokenizer.json")).save_pretrained(hf)  # base's vocabulary
    out = folder / "turbo-shaped"
    ctranslate2.converters.TransformersConverter(str(hf)).convert(str(out), quantization=quantization, force=True)
    shutil.rmtree(hf)
    (out / "tokenizer.json").write_bytes((tokenizer / "tokenizer.json").read_bytes())
    (out / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    return out


def asr_rows(name: str, path: Path, speech: Any, seconds: float, random_weights: bool, device: Device,
             lengths: tuple[float, ...]) -> list[str]:
    """windows/s, clips/s and tokens per clip of one model at each clip length and batch size, packed and one clip
    a window."""
    import numpy as np
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(str(path), device=device.kind, compute_type=device.compute_type)
    pipe = BatchedInferencePipeline(model=model)
    gap = np.zeros(int(GAP_S * 16000), np.float32)
    rows = []
    for clip_s, packed in itertools.product(lengths, (False, True)):
        clip = np.resize(speech, int(clip_s * 16000)).astype(np.float32)
        per_window = clips_a_window(clip_s) if packed else 1
        unit = np.concatenate([x for _ in range(per_window) for x in (clip, gap)][:-1])
        cap = max_new_tokens(round(TOKENS_PER_S * clip_s * per_window)) if random_weights else None
        for batch in device.asr_batches:
            n = batch * device.windows_per_batch
            audio = np.concatenate([unit] * n)
            starts = np.arange(n + 1) * unit.size / 16000
            stamps = [{"start": float(a), "end": float(b)} for a, b in zip(starts[:-1], starts[1:])]
            kwargs = dict(language="en", beam_size=5, word_timestamps=True, clip_timestamps=stamps,
                          without_timestamps=True, max_new_tokens=cap, batch_size=batch)
            if device.warm_up:
                list(pipe.transcribe(audio[: unit.size * batch], **{**kwargs, "clip_timestamps": stamps[:batch]})[0])
            device.sync()
            done, decoded, t0 = 0, 0, time.perf_counter()
            while not done or time.perf_counter() - t0 < seconds:
                decoded += sum(len(s.tokens) for s in pipe.transcribe(audio, **kwargs)[0])
                done += n
            dt = time.perf_counter() - t0
            rows.append(f"| {name} | {clip_s:g} s | {'packed 30 s' if packed else 'one clip a window'} | {batch} | "
                        f"{done / dt:.1f} | {done * per_window / dt:.1f} | {decoded / (done * per_window):.1f} | "
                        f"{device.in_use_gib():.2f} |")
            print(rows[-1], flush=True)
    del pipe, model
    return rows


def encoder_rows(seconds: float, device: Device) -> list[str]:
    """ssl_audio (HuBERT-base shape, 6-s clips) and video_encoder (VideoMAE-base shape, 16 frames of 224²)
    clips/s at their batch sizes, fp16 on the GPU, random weights, and the peak memory of each."""
    import torch
    from transformers import HubertConfig, HubertModel, VideoMAEConfig, VideoMAEModel

    video = VideoMAEConfig(**device.videomae)
    dtype = torch.float16 if device.kind == "cuda" else torch.float32
    rows = []
    for name, model, shape, batches in (
            ("ssl_audio (HuBERT-base)", HubertModel(HubertConfig(**device.hubert)), (device.audio_samples,),
             device.asr_batches),
            ("video_encoder (VideoMAE-base)", VideoMAEModel(video),
             (video.num_frames, 3, video.image_size, video.image_size), device.video_batches)):
        model = model.to(device.kind, dtype).eval()
        for batch in batches:
            x = torch.randn(batch, *shape, device=device.kind, dtype=dtype)
            device.reset_peak()
            with torch.inference_mode():
                model(x)
                device.sync()
                done, t0 = 0, time.perf_counter()
                while not done or time.perf_counter() - t0 < seconds:
                    model(x)
                    device.sync()
                    done += batch
            dt = time.perf_counter() - t0
            rows.append(f"| {name} | {batch} | {done / dt:.1f} | {device.peak_gib():.2f} |")
            print(rows[-1], flush=True)
        del model
        if device.kind == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per row (default 4 on a GPU, the "
                    "whole run 30 rows; with --cpu-check 0: each row once)")
    ap.add_argument("--cpu-check", action="store_true", help="check the script on the CPU at tiny sizes (not a "
                    "measurement); needs --out")
    ap.add_argument("--out", type=Path, help="write the table to this file instead of bench/RESULTS.md")
    args = ap.parse_args()
    if args.cpu_check and args.out is None:
        print("bench/gpu.py --cpu-check writes its table to a file, never RESULTS.md: add --out PATH", file=sys.stderr)
        sys.exit(2)
    if not args.cpu_check:
        refuse_without_gpu()
    device = CPU_CHECK if args.cpu_check else GPU
    seconds = args.seconds if args.seconds is not None else 0.0 if args.cpu_check else 4.0
    import soundfile as sf

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import write_section

    from kebr_data.asr_engines.models import ctranslate2_model

    speech, _ = sf.read(ROOT / "tests/fixtures/speech_en.flac", dtype="float32")
    asr = []
    with tempfile.TemporaryDirectory() as tmp:
        turbo = turbo_shaped(Path(tmp), ctranslate2_model("base"), TINY_TURBO if args.cpu_check else TURBO)
        models = [("tiny.en", ctranslate2_model("tiny.en"), False, CLIP_LENGTHS[:1])]
        if not args.cpu_check:
            models.append(("base", ctranslate2_model("base"), False, CLIP_LENGTHS[:1]))
        models.append(("large-v3-turbo shape, random" + (" (shrunk)" if args.cpu_check else ""), turbo, True,
                       CLIP_LENGTHS))
        for name, path, random_weights, lengths in models:
            asr += asr_rows(name, path, speech, seconds, random_weights, device, lengths)
    enc = encoder_rows(seconds, device)
    text = "\n".join([
        f"{device.name()}, faster-whisper {device.compute_type}, beam 5, word timestamps, English forced; "
        f"packed: as many clips as fit a {WINDOW_S:g}-s window with {GAP_S:g}-s gaps; {seconds:g} s timed per row"
        f"{' after one warm-up batch' if device.warm_up else ''}. The large-v3-turbo-shaped model has random "
        f"weights, its decoding capped at {TOKENS_PER_S:g} tokens per second of speech.", "",
        "| model | clip | windows | batch | windows/s | clips/s | tokens per clip | memory in use (GiB) |",
        "|---|---|---|---:|---:|---:|---:|---:|", *asr, "",
        "| encoder stage | batch | clips/s | peak memory (GiB) |", "|---|---:|---:|---:|", *enc])
    if args.out:
        print(text)
        args.out.write_text(text + "\n")
    else:
        write_section("gpu", "GPU: batched, packed ASR and the encoder stages", text)


if __name__ == "__main__":
    main()
