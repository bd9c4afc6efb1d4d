"""What one 1,000-clip shard of the audio stage costs on this machine, next to a bare ffmpeg loop.

The peer is what the released KEBR/SKESL code and MMSA-FET do: one `ffmpeg -i clip.mp4 out.wav`
per clip, leaving a WAV per clip on disk. The stage does the same decode plus FLAC encoding, a
Parquet commit, a done marker and a log. Clips are the demo's 6 good clips, linked 1,000 times.

    python bench/audio_shard.py [--clips 1000]

Prints a table and rewrites the `audio-shard` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_kebr, write_section  # noqa: E402

from kebr_data.media.ffmpeg import find_ffmpeg  # noqa: E402


def make_corpus(dest: Path, n: int) -> list[Path]:
    good = sorted(p for p in (ROOT / "demo/voxceleb/mp4").rglob("*.mp4") if "id00003" not in str(p))
    paths = []
    for i in range(n):
        p = dest / f"g{i // 100:03d}" / f"clip{i:05d}.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(good[i % len(good)])
        paths.append(p)
    return paths


def run_stage(src: Path, out: Path, workers: int, shard_size: int) -> tuple[float, dict[str, int]]:
    return run_kebr(["extract", "--src", str(src), "--out", str(out), "--layout", "folder", "--stages",
                     "index,audio", "--workers", str(workers), "--set", f"index.shard_size={shard_size}"])


def run_peer(paths: list[Path], tmp: Path) -> float:
    ffmpeg = find_ffmpeg()
    t0 = time.perf_counter()
    for i, p in enumerate(paths):
        subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(p), "-ac", "1", "-ar", "22050",
                        str(tmp / f"{i}.wav")], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=1000)
    n = ap.parse_args().clips
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_corpus(tmp / "src", n)
        (tmp / "wav").mkdir()
        peer = run_peer(paths, tmp / "wav")
        one, peak1 = run_stage(tmp / "src", tmp / "out1", 1, n)
        two, peak2 = run_stage(tmp / "src", tmp / "out2", 2, (n + 1) // 2)
        wav_mb = sum(p.stat().st_size for p in (tmp / "wav").iterdir()) / 2**20
        table = pq.read_table(tmp / "out1/audio", columns=["duration_s", "flac"])
        audio_s = pc.sum(table.column("duration_s")).as_py()
        flac_mb = pc.sum(pc.binary_length(table.column("flac"))).as_py() / 2**20
    rows = [
        ("bare ffmpeg → WAV loop (released code, MMSA-FET)", peer, 1.0, "-", f"{wav_mb:.1f} MiB of WAV files"),
        ("kebr-data audio stage, 1 worker, 1 shard", one, peer / one, f"{peak1['worker'] / 2**20:.0f} MiB",
         f"{flac_mb:.1f} MiB of FLAC in the shard table"),
        ("kebr-data audio stage, 2 workers, 2 shards", two, peer / two, f"{peak2['worker'] / 2**20:.0f} MiB",
         ""),
    ]
    lines = [f"{n} clips ({audio_s / 60:.1f} min of audio, demo clips of 2.5-4 s, 22,050 Hz mono), one run, "
             f"{os.cpu_count()} cores. Wall time includes process start, indexing and commits.", "",
             "| what | wall s | clips/s | speed vs peer | peak RSS per worker | output |", "|---|---:|---:|---:|---:|---|"]
    for name, wall, ratio, rss, out in rows:
        lines.append(f"| {name} | {wall:.1f} | {n / wall:.0f} | {ratio:.2f}× | {rss} | {out} |")
    lines += ["", f"Peak RSS of the main process: {peak1['main'] / 2**20:.0f} MiB; of one ffmpeg: "
              f"{peak1['ffmpeg'] / 2**20:.0f} MiB."]
    text = "\n".join(lines)
    write_section("audio-shard", "Audio stage: one 1,000-clip shard", text)


if __name__ == "__main__":
    main()
