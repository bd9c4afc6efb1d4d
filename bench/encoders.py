"""Encoder and baseline stages: the stage's `run_shard` (FLAC decode, resampling, chunking, batching,
Arrow rows) against the bare library call in a plain loop on the same clips, interleaved and
repeated, CPU and wall time, one thread (per core). One section per stage; the audio part is here,
video stages add their own `bench_*` function and entry in STAGES.

Corpus: synthetic voiced clips of 3-8 s stored as 22,050 Hz FLAC (the audio stage's default).
ssl_audio runs a random-initialised model of HuBERT-base's shape (12 layers, 768 wide, group-norm
front end: what facebook/hubert-base-ls960 computes, without its weights, which no wheel ships).

    python bench/encoders.py [--clips 8] [--repeats 3] [--stages ssl_audio,opensmile,melspec]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from kebr_data import config  # noqa: E402
from kebr_data.media.flac import decode_flac, encode_flac  # noqa: E402
from kebr_data.schema import AUDIO, PLAN  # noqa: E402
from kebr_data.stages import make_stage  # noqa: E402
from kebr_data.stages.base import ShardContext  # noqa: E402

SR = 22050


def corpus(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    clips = []
    for i in range(n):
        t = np.arange(int(rng.uniform(3, 8) * SR)) / SR
        f0 = 120 + 40 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t)
        y = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / SR) / k for k in range(1, 6))
        clips.append((0.2 * y + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
    return [decode_flac(encode_flac((y * 32767).astype(np.int16), SR))[0] for y in clips]


def context(clips: list[np.ndarray], tmp: Path) -> Callable[[], ShardContext]:
    plan = pa.Table.from_pylist([{"clip_id": f"c{i}", "status": "ok", "source": "folder"} for i in range(len(clips))],
                                schema=PLAN)
    audio = pa.Table.from_pylist([{"clip_id": f"c{i}", "status": "ok", "sample_rate": SR, "num_samples": len(y),
                                   "duration_s": len(y) / SR, "flac": encode_flac((y * 32767).astype(np.int16), SR)}
                                  for i, y in enumerate(clips)], schema=AUDIO)
    return lambda: ShardContext(0, {"plan": plan, "audio": audio}, tmp)


def hubert_base(dest: Path) -> str:
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.HubertModel(transformers.HubertConfig()).eval().save_pretrained(dest)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=False,
                                          return_attention_mask=False).save_pretrained(dest)
    return str(dest)


def bench_ssl_audio(clips: list[np.ndarray], tmp: Path) -> tuple[dict, Callable[[], None]]:
    import librosa
    import torch
    import transformers

    model = hubert_base(tmp / "hubert-base-shape")
    fe = transformers.AutoFeatureExtractor.from_pretrained(model, local_files_only=True)
    net = transformers.AutoModel.from_pretrained(model, local_files_only=True).eval()

    def bare() -> None:
        for y in clips:
            y16 = librosa.resample(y, orig_sr=SR, target_sr=16000, res_type="soxr_hq")
            with torch.inference_mode():
                net(**fe(y16, sampling_rate=16000, return_tensors="pt")).last_hidden_state.numpy()
    return {"model": model, "batch_size": 1}, bare


def bench_opensmile(clips: list[np.ndarray], tmp: Path) -> tuple[dict, Callable[[], None]]:
    import opensmile

    from kebr_data.stages.opensmile import derive_config

    root = derive_config(tmp / "smile-config", 0.06, 0.02)
    smile = opensmile.Smile(str(root / "egemaps/v02/eGeMAPSv02.conf"), "lld")

    def bare() -> None:
        for y in clips:
            smile.process_signal(y, SR).to_numpy(np.float32)
    return {}, bare


def bench_melspec(clips: list[np.ndarray], tmp: Path) -> tuple[dict, Callable[[], None]]:
    import librosa

    def bare() -> None:
        for y in clips:
            s = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=1323, hop_length=441, n_mels=128)
            librosa.power_to_db(s).T.astype(np.float32)
    return {}, bare


STAGES = {"ssl_audio": bench_ssl_audio, "opensmile": bench_opensmile, "melspec": bench_melspec}


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", default=",".join(STAGES))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    clips = corpus(args.clips)
    seconds = sum(len(y) for y in clips) / SR
    lines = [f"{args.clips} clips, {seconds:.1f} s of audio, one thread, {args.repeats} interleaved repeats "
             "(toolkit, bare, toolkit, bare, ...); best of the repeats. Toolkit = the stage's run_shard on a shard "
             "of FLAC rows (decode, resampling, chunking, Arrow rows); bare = the library call in a plain loop on "
             "the decoded arrays.", "",
             "| stage | toolkit clips/s | toolkit audio-s/s | bare audio-s/s | wall ratio | CPU ratio |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stages.split(","):
            overrides, bare = STAGES[name](clips, Path(tmp))
            cfg = config.load(overrides=[f"{name}.{k}={v!r}" if isinstance(v, str) else f"{name}.{k}={v}"
                                         for k, v in overrides.items()])
            stage = make_stage(name, cfg)
            ctx = context(clips, Path(tmp) / "shard")
            stage.run_shard(ctx())  # warm-up: model load, filter banks, config copy
            bare()
            runs = {"toolkit": [], "bare": []}
            for _ in range(args.repeats):
                runs["toolkit"].append(timed(lambda: stage.run_shard(ctx())))
                runs["bare"].append(timed(bare))
            tw, tc = min(r[0] for r in runs["toolkit"]), min(r[1] for r in runs["toolkit"])
            bw, bc = min(r[0] for r in runs["bare"]), min(r[1] for r in runs["bare"])
            line = (f"| {name} | {args.clips / tw:.2f} | {seconds / tw:.1f} | {seconds / bw:.1f} | {tw / bw:.3f} | "
                    f"{tc / bc:.3f} |")
            print(line, flush=True)
            lines.append(line)
    lines += ["", "Ratios are toolkit / bare (1.00 = no overhead). ssl_audio's bare loop calls the model one clip at a "
              "time as the stage does with a group-norm model (batch_size 1 equivalent: different lengths never "
              "share a batch there)."]
    write_section("encoders", "Encoder and baseline audio stages vs the bare library calls", "\n".join(lines))


if __name__ == "__main__":
    main()
