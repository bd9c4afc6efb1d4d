"""Pipeline throughput: clips per core-hour per stage on 8-s talking-head clips with the local
executor at 1 and 2 workers, and what that means for VoxCeleb2's ~1.1 M clips.

    python bench/pipeline.py [--clips 48]

Corpus: demo clips joined into ~8 s clips (espeak-ng speech over the moving face), as VoxCeleb2
utterances average 7.8 s. Each stage is timed through the CLI on its own (process start included).
Rewrites the `pipeline` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import run_kebr, write_section  # noqa: E402

VOXCELEB2_CLIPS = 1_128_246  # dev 1,092,009 + test 36,237
OPENFACE_CPU_S_PER_CLIP = 10.0  # assumption, see the notes under the table


def make_corpus(dest: Path, n: int) -> None:
    from helpers import demo_clip
    from kebr_data.media.ffmpeg import find_ffmpeg

    ffmpeg = find_ffmpeg()
    for i in range(n):
        a, b = demo_clip(i % 6), demo_clip((i + 1) % 6)
        out = dest / f"spk{i % 5}" / f"clip{i:03d}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(a), "-i", str(b), "-filter_complex",
                        "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a]", "-map", "[v]", "-map", "[a]",
                        "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(out)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=48)
    n = ap.parse_args().clips
    stages = ("audio", "asr", "acoustic")
    results: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "src", n)
        for workers in (1, 2):
            out = tmp / f"out{workers}"
            run_kebr(["extract", "--src", str(tmp / "src"), "--out", str(out), "--layout", "folder", "--stages",
                      "index", "--set", f"index.shard_size={-(-n // 4)}"], poll=False)
            for stage in stages:
                results[(stage, workers)], _ = run_kebr(["extract", "--out", str(out), "--stages", stage,
                                                         "--workers", str(workers)], poll=False)
            results[("mask", workers)], _ = run_kebr(["mask", "--out", str(out), "--workers", str(workers)],
                                                     poll=False)
        import pyarrow.parquet as pq

        mean_s = sum(pq.read_table(tmp / "out1/audio", columns=["duration_s"]).column(0).to_pylist()) / n
    lines = [f"{n} clips of {mean_s:.1f} s mean (demo speech and face joined), 4 shards, local executor; each stage "
             "timed through the CLI on its own, process start included.", "",
             "| stage | 1 worker: clips/s | 2 workers: clips/s | scaling | clips per core-hour (2 workers) |",
             "|---|---:|---:|---:|---:|"]
    per_core_hour = {}
    for stage in (*stages, "mask"):
        one, two = n / results[(stage, 1)], n / results[(stage, 2)]
        per_core_hour[stage] = two / 2 * 3600
        lines.append(f"| {stage} | {one:.1f} | {two:.1f} | {two / one:.2f}× | {per_core_hour[stage]:,.0f} |")
    per_core_hour["visual (OpenFace, assumed)"] = 3600 / OPENFACE_CPU_S_PER_CLIP
    core_hours = {k: VOXCELEB2_CLIPS / v for k, v in per_core_hour.items()}
    total = sum(core_hours.values())
    lines += ["", f"Projection for VoxCeleb2 ({VOXCELEB2_CLIPS:,} clips), CPU only, linear scaling from the 2-worker "
                  "rate:", "", "| stage | core-hours | one 64-core node | 16 nodes × 64 cores |", "|---|---:|---:|---:|"]
    for k, v in core_hours.items():
        lines.append(f"| {k} | {v:,.0f} | {v / 64:,.1f} h | {v / 1024:,.1f} h |")
    lines.append(f"| **all** | **{total:,.0f}** | **{total / 64:,.0f} h ({total / 64 / 24:.1f} days)** | "
                 f"**{total / 1024:,.1f} h** |")
    lines += ["", "Assumptions: clips as long as VoxCeleb2's (7.8 s mean; these are "
              f"{mean_s:.1f} s); ASR is Whisper tiny.en int8 on CPU (a GPU with a larger model changes that row "
              "entirely: run `asr` with `--executor ray` on GPU nodes); OpenFace is not installed here, so its row "
              f"assumes {OPENFACE_CPU_S_PER_CLIP:.0f} CPU-seconds per clip (FeatureExtraction at about 20 fps on "
              "one core for 25-fps video): measure it with `bench/visual.py` inside the docker image; the shared "
              "file system keeps up (audio FLAC is ~0.15 MB per clip, features ~0.06 MB acoustic, ~0.7 MB visual)."]
    text = "\n".join(lines)
    print(text)
    write_section("pipeline", "Pipeline throughput and the VoxCeleb2 projection", text)


if __name__ == "__main__":
    main()
