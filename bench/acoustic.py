"""Acoustic stage speed: this toolkit vs plain librosa vs MMSA-FET 0.4.1, side by side in one run.

Corpus: 200 espeak-ng clips of 4-10 s, as 16 kHz AAC in MP4 (VoxCeleb2's format) for MMSA-FET's
MP4 path, and as the 22,050 Hz WAV espeak-ng wrote for its WAV path; the other contenders get the
audio stage's 22,050 Hz decode of the MP4s.
Every in-process timing runs pinned to one core with one BLAS thread.

    python bench/acoustic.py [--clips 200] [--mmsa-python /path/to/mmsa-venv/bin/python]

MMSA-FET lives in its own virtual environment (see README, "Benchmarks"); without it those rows
are left out. Needs Debian's espeak-ng. Rewrites the `acoustic` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_kebr, write_section  # noqa: E402

from kebr_data.features.librosa_33 import Librosa33  # noqa: E402
from kebr_data.media.ffmpeg import find_ffmpeg  # noqa: E402
from kebr_data.media.flac import decode_flac  # noqa: E402

WORDS = ("the a we you they it is was be have good bad love hate great terrible happy sad movie day people "
         "time really very think know just like about would make thing going well year work show story "
         "wonderful awful amazing boring film music friend family world life water money house").split()

MMSA_SCRIPT = r"""
import json, os, sys, time, logging
os.environ["OMP_NUM_THREADS"] = "1"
os.sched_setaffinity(0, {0})
import numpy as np
from MSA_FET import FeatureExtractionTool
from MSA_FET.extractors.audio.librosa import librosaExtractor
cfg = {"audio": {"tool": "librosa", "sample_rate": 22050, "n_fft": 2048, "hop_length": 512,
                 "features": {"zero_crossing_rate": {}, "mfcc": {"n_mfcc": 20, "htk": True}, "chroma_cqt": {}}}}
mp4s, wavs, tmp = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
fet = FeatureExtractionTool(cfg, tmp_dir=tmp, log_dir=tmp, verbose=0)
fet.run_single(mp4s[0])
t0 = time.perf_counter()
for p in mp4s:
    out = fet.run_single(p)["audio"]
t_mp4 = time.perf_counter() - t0
ex = librosaExtractor(cfg["audio"], logging.getLogger("x"))
t0 = time.perf_counter()
for p in wavs:
    ex.extract(p)
t_wav = time.perf_counter() - t0
print(json.dumps({"mp4": t_mp4, "wav": t_wav, "dim": int(out.shape[1])}))
"""


def make_corpus(dest: Path, n: int, ffmpeg: str) -> list[tuple[Path, Path]]:
    """n espeak-ng clips of 4-10 s as (mp4, wav) pairs."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the benchmark corpus: apt-get install espeak-ng")
    rng = random.Random(0)
    pairs = []
    for i in range(n):
        wav, mp4 = dest / f"clip{i:04d}.wav", dest / f"clip{i:04d}.mp4"
        target = rng.uniform(4.0, 10.0)
        words = " ".join(rng.choice(WORDS) for _ in range(int(target * 2.6)))
        subprocess.run(["espeak-ng", "-v", rng.choice(["en-us", "en-gb", "en+f3", "en+m3"]), "-s", "150",
                        "-w", str(wav), words], check=True)
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(wav), "-ar", "16000", "-c:a", "aac", "-b:a", "48k",
                        str(mp4)], check=True)  # 16 kHz AAC in MP4, as VoxCeleb2 ships it
        pairs.append((mp4, wav))
    return pairs


def time_per_clip(fn, ys: list[np.ndarray]) -> float:
    fn(ys[0])
    t0 = time.perf_counter()
    for y in ys:
        fn(y)
    return time.perf_counter() - t0


def direct(y: np.ndarray) -> np.ndarray:
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)
    mfcc = librosa.feature.mfcc(y=y, sr=22050, n_mfcc=20, htk=True, n_fft=2048, hop_length=512)
    chroma = librosa.feature.chroma_cqt(y=y, sr=22050, hop_length=512)
    return np.concatenate([zcr, mfcc, chroma]).T.astype(np.float32)


def profile_split(ex: Librosa33, ys: list[np.ndarray]) -> list[tuple[str, float]]:
    prof = cProfile.Profile()
    prof.enable()
    for y in ys:
        ex.released(y)
    prof.disable()
    stats = pstats.Stats(prof).stats
    by_name = {}
    for (file, _, name), (_, _, _, cum, _) in stats.items():
        by_name[(Path(file).name, name)] = by_name.get((Path(file).name, name), 0.0) + cum
    total = by_name[("librosa_33.py", "released")]
    parts = [
        ("CQT: 7 per-octave STFTs + sparse filter products", by_name.get(("constantq.py", "__cqt_response"), 0)),
        ("CQT: soxr halvings between octaves", by_name.get(("audio.py", "resample"), 0)),
        ("shared STFT (2048/512)", by_name.get(("spectrum.py", "stft"), 0)
         - by_name.get(("constantq.py", "__cqt_response"), 0)),
        ("tuning estimate (piptrack rows 150-4000 Hz)", by_name.get(("librosa_33.py", "estimate_tuning"), 0)),
        ("zero-crossing rate", by_name.get(("librosa_33.py", "zero_crossing_rate"), 0)),
    ]
    parts.append(("everything else (mel, dB, DCT, chroma map, normalise, stacking)",
                  total - sum(v for _, v in parts)))
    return [(k, v / total) for k, v in parts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--mmsa-python", default="/tmp/mmsafet/bin/python",
                    help="python of a virtual environment with mmsa-fet==0.4.1 (rows skipped if absent)")
    args = ap.parse_args()
    ffmpeg = find_ffmpeg()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        pairs = make_corpus(tmp / "src", args.clips, ffmpeg)
        # the audio stage gives every contender the same decoded 22,050 Hz samples
        run_kebr(["extract", "--src", str(tmp / "src"), "--out", str(tmp / "out"), "--layout", "folder",
                  "--stages", "index,audio", "--set", "index.shard_size=100", "--set", "audio.max_duration_s=60"])
        table = pq.read_table(tmp / "out" / "audio", columns=["clip_id", "flac"]).to_pylist()
        ys = [decode_flac(r["flac"])[0] for r in table][: args.clips]
        audio_s = sum(len(y) for y in ys) / 22050
        os.sched_setaffinity(0, {0})
        ex = Librosa33()
        t_direct = time_per_clip(direct, ys)
        t_cold = time_per_clip(ex.released, ys)  # first pass: filter banks are built as tunings appear
        t_ours = time_per_clip(ex.released, ys)  # steady state, as in all but the first clips of a shard
        max_diff = max(float(np.abs(ex.released(y) - direct(y)).max()) for y in ys)
        identical = all(np.array_equal(ex.released(y), direct(y)) for y in ys)
        split = profile_split(ex, ys[:50])
        cache_mb, tunings = ex.cache_bytes() / 2**20, len(ex._banks)
        full = Librosa33()
        for i in range(100):
            full._cqt_bank(float(np.linspace(-0.5, 0.5, 101)[i]))
        full_cache_mb = full.cache_bytes() / 2**20
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        mmsa = None
        if Path(args.mmsa_python).exists():
            bindir = tmp / "bin"
            bindir.mkdir()
            (bindir / "ffmpeg").symlink_to(ffmpeg)
            env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
            out = subprocess.run([args.mmsa_python, "-c", MMSA_SCRIPT, json.dumps([str(m) for m, _ in pairs]),
                                  json.dumps([str(w) for _, w in pairs]), str(tmp / "mmsa")],
                                 capture_output=True, text=True, env=env, check=True)
            mmsa = json.loads(out.stdout.strip().splitlines()[-1])
        # the stage through the CLI on 2,000 clips (FLAC decode, features, Parquet commit, process start):
        # 8 shards on 1 and 2 workers, then one 1,000-clip shard for the memory of a worker
        def decoded(name: str, clips: int, shard_size: int) -> Path:
            """An output folder with the audio stage done for `clips` links to the corpus' MP4s."""
            src = tmp / name
            src.mkdir()
            for k in range(clips):
                (src / f"c{k:04d}.mp4").symlink_to(pairs[k % len(pairs)][0])
            run_kebr(["extract", "--src", str(src), "--out", str(tmp / f"{name}-out"), "--layout", "folder",
                      "--stages", "index,audio", "--set", f"index.shard_size={shard_size}",
                      "--set", "audio.max_duration_s=60"])
            return tmp / f"{name}-out"

        bigout = decoded("big", 2000, 250)
        big_audio_s = sum(pq.read_table(bigout / "audio", columns=["duration_s"]).column(0).to_pylist())
        t_stage1, _ = run_kebr(["extract", "--out", str(bigout), "--stages", "acoustic", "--workers", "1"],
                               poll=False)
        t_stage2, _ = run_kebr(["extract", "--out", str(bigout), "--stages", "acoustic", "--workers", "2",
                                "--force"], poll=False)
        one = decoded("one", 1000, 1000)
        t_big, peak = run_kebr(["extract", "--out", str(one), "--stages", "acoustic", "--workers", "1"])

    n = len(ys)
    rows = []
    if mmsa:
        rows += [("MMSA-FET 0.4.1 `run_single` on MP4 (ffmpeg → temp WAV → librosa)", mmsa["mp4"]),
                 ("MMSA-FET 0.4.1 librosa extractor on WAV", mmsa["wav"])]
    rows += [("plain librosa, 3 calls on audio in memory (the floor)", t_direct),
             ("kebr `Librosa33.released`, first pass (filter banks built as tunings appear)", t_cold),
             ("kebr `Librosa33.released`, steady state", t_ours)]
    lines = [f"{n} espeak-ng clips, {audio_s / n:.2f} s mean ({audio_s:.0f} s of audio), one core, one BLAS "
             f"thread, librosa {librosa.__version__}.", "",
             "| contender | clips/s | audio-s/s | vs plain librosa | vs MMSA-FET MP4 path |",
             "|---|---:|---:|---:|---:|"]
    for name, t in rows:
        vs_mmsa = f"{mmsa['mp4'] / t:.1f}×" if mmsa else "-"
        lines.append(f"| {name} | {n / t:.1f} | {audio_s / t:.0f} | {t_direct / t:.2f}× | {vs_mmsa} |")
    lines += ["", f"Output: bit-identical to the plain librosa calls on all {n} clips: **{identical}** "
              f"(max abs difference {max_diff:g}).", "",
              "The stage through the CLI (process start, FLAC decode, features, Parquet commit) on 2,000 clips "
              "(the 200 above, 10 times) in 8 shards, nothing else running:", "",
              "| workers | wall s | clips/s | audio-s/s | scaling |", "|---:|---:|---:|---:|---:|",
              f"| 1 | {t_stage1:.1f} | {2000 / t_stage1:.1f} | {big_audio_s / t_stage1:.0f} | 1.00× |",
              f"| 2 | {t_stage2:.1f} | {2000 / t_stage2:.1f} | {big_audio_s / t_stage2:.0f} | "
              f"{t_stage1 / t_stage2:.2f}× |",
              "", "Where the time goes now (share of `released`, cProfile on 50 clips):", "",
              "| part | share |", "|---|---:|"]
    lines += [f"| {k} | {v:.0%} |" for k, v in split]
    lines += ["", f"Filter-bank cache: {cache_mb:.1f} MiB for the {tunings} tuning values these clips produced; "
              f"{full_cache_mb:.1f} MiB with all 101 values the estimator can return (the bound).",
              f"One 1,000-clip shard ({t_big:.0f} s, 1 worker): peak RSS of the worker "
              f"{peak['worker'] / 2**20:.0f} MiB."]
    text = "\n".join(lines)
    write_section("acoustic", "Acoustic stage: librosa 33-d features", text)


if __name__ == "__main__":
    main()
