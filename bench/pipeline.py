"""Pipeline throughput: clips per core-hour per stage on 8-s talking-head clips with the local
executor at 1 and 2 workers, and what that means for VoxCeleb2's ~1.1 M clips on one node of
64 cores and one GPU (ASR on the GPU, everything else on the cores), with the optional encoder and
baseline stages added from bench/encoders.py's measurements (CPU) and FLOP counts (GPU, projected).

    python bench/pipeline.py [--clips 48] [--openface /path/to/FeatureExtraction]

Corpus: demo clips joined into ~8 s clips (espeak-ng speech over the moving face), as VoxCeleb2
utterances average 7.8 s. Each stage is timed through the CLI on its own (process start included);
the visual stage too when OpenFace is installed (KEBR_OPENFACE_BIN), else its CPU per clip is the
one `bench/visual.py` measured with the real binary (VISUAL_CPU_S_PER_CLIP).
Rewrites the `pipeline` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import run_kebr, write_section  # noqa: E402
from encoders import ASSUMED_TFLOPS  # noqa: E402

VOXCELEB2_CLIPS = 1_128_246  # dev 1,092,009 + test 36,237
VOXCELEB2_MEAN_S = 7.8
#: the visual stage's CPU per 7.8-s clip, measured by bench/visual.py with OpenFace 2.2 (CLNF, one BLAS
#: thread, batches of 16) on this project's dev machine: used when OpenFace is not installed
VISUAL_CPU_S_PER_CLIP = 2.69  # 2.52 CPU-s per 7.3-s clip (bench/RESULTS.md, visual), scaled to 7.8 s
#: faster-whisper on a GPU, not measurable here (no GPU): SYSTRAN/faster-whisper issue #1030, RTX 2080 Ti,
#: fp16, beam 5, 13 min of audio (26 Whisper windows of 30 s): large-v3 52.0 s, large-v3-turbo 19.2 s.
#: A clip shorter than 30 s still costs one window's encoder pass, so a window is charged per clip.
GPU_ASR_S_PER_CLIP = {"large-v3": 52.0 / 26, "large-v3-turbo": 19.2 / 26}
#: the optional encoder and baseline stages: CPU-seconds per second of audio or video on one core, the stage's
#: run_shard as bench/encoders.py measured it (bench/RESULTS.md, encoders: 1 / "toolkit media-s/CPU-s"); not
#: rerun here, where HuBERT-base and VideoMAE-base on the CPU would take hours. ssl_audio and video_encoder are
#: random-initialised models of the real checkpoints' shapes (same computation, no weights).
ENCODER_CPU_S_PER_MEDIA_S = {"ssl_audio (HuBERT-base)": 0.1871, "opensmile (eGeMAPSv02 LLD)": 0.0322,
                             "melspec": 0.0011, "faces (Haar, 10 fps)": 0.221, "video_encoder (VideoMAE-base)": 3.4271}
#: the two model stages on the GPU instead: forward GFLOPs per 7.8-s clip counted by bench/encoders.py
#: (torch.utils.flop_counter), run at its assumed achieved fp16 throughput (ASSUMED_TFLOPS: projection)
ENCODER_GPU_GFLOPS_PER_CLIP = {"ssl_audio (HuBERT-base)": 108.0, "video_encoder (VideoMAE-base)": 1350.0}


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


def timed(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the whole process tree) of `kebr-data ARGS`: CPU is what a busy shared
    machine does not inflate, so the projection is built from it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, _ = run_kebr(args, poll=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def projection(per_core_hour: dict[str, float], mean_s: float) -> list[str]:
    """VoxCeleb2 on one node of 64 cores + 1 GPU: CPU stages on the cores, ASR on the GPU."""
    scale = VOXCELEB2_MEAN_S / mean_s  # the corpus' clips are a little shorter than VoxCeleb2's
    cpu = {k: VOXCELEB2_CLIPS / v * scale for k, v in per_core_hour.items() if k != "asr"}
    lines = ["", f"Projection for VoxCeleb2 ({VOXCELEB2_CLIPS:,} clips of {VOXCELEB2_MEAN_S} s) on one node of 64 "
                 "cores and one GPU, from the CPU per clip (the cores kept busy):", "",
             "| stage | where | core- or GPU-hours | hours on the node |", "|---|---|---:|---:|"]
    for k, v in cpu.items():
        lines.append(f"| {k} | 64 cores | {v:,.0f} core-h | {v / 64:,.1f} h |")
    for model, seconds in GPU_ASR_S_PER_CLIP.items():
        gpu = VOXCELEB2_CLIPS * seconds / 3600
        lines.append(f"| asr, faster-whisper {model} fp16 | 1 GPU | {gpu:,.0f} GPU-h | {gpu:,.1f} h |")
    asr_cpu = VOXCELEB2_CLIPS / per_core_hour["asr"] * scale
    lines.append(f"| (asr, tiny.en int8 on the cores, for scale) | 64 cores | {asr_cpu:,.0f} core-h | "
                 f"{asr_cpu / 64:,.1f} h |")
    cpu_hours = sum(cpu.values()) / 64
    for model, seconds in GPU_ASR_S_PER_CLIP.items():
        total = cpu_hours + VOXCELEB2_CLIPS * seconds / 3600
        lines.append(f"| **all, ASR {model} on the GPU** | node | | **{total:,.0f} h ({total / 24:.1f} days)** |")
    return lines + encoder_projection()


def encoder_projection() -> list[str]:
    """The optional encoder and baseline stages for VoxCeleb2: measured CPU cost on the cores, and the two
    model stages on the GPU (projected from FLOPs)."""
    clip_core_h = {k: VOXCELEB2_CLIPS * v * VOXCELEB2_MEAN_S / 3600 for k, v in ENCODER_CPU_S_PER_MEDIA_S.items()}
    gpu_h = {k: VOXCELEB2_CLIPS * g / (ASSUMED_TFLOPS * 1e3) / 3600 for k, g in ENCODER_GPU_GFLOPS_PER_CLIP.items()}
    lines = ["", "The optional encoder and baseline stages (`--stages ...,ssl_audio,opensmile,melspec,faces,video_encoder`) "
                 "on the same node: CPU rows **measured** (bench/encoders.py, one core, the stage's run_shard, scaled "
                 f"to {VOXCELEB2_MEAN_S} s), GPU rows **projected** (forward FLOPs counted by bench/encoders.py at an "
                 f"assumed {ASSUMED_TFLOPS:.0f} TFLOP/s achieved fp16: an A100 at ~30% of its dense peak; no GPU "
                 "here):", "",
             "| stage | where | CPU-s or GPU-ms per clip | core- or GPU-hours | hours on the node |", "|---|---|---:|---:|---:|"]
    for k, v in clip_core_h.items():
        per_clip = ENCODER_CPU_S_PER_MEDIA_S[k] * VOXCELEB2_MEAN_S
        lines.append(f"| {k} | 64 cores (measured) | {per_clip:.2f} CPU-s | {v:,.0f} core-h | {v / 64:,.1f} h |")
    for k, v in gpu_h.items():
        ms = ENCODER_GPU_GFLOPS_PER_CLIP[k] / ASSUMED_TFLOPS
        lines.append(f"| {k} | 1 GPU (projected) | {ms:.1f} GPU-ms | {v:,.1f} GPU-h | {v:,.1f} h |")
    cores = sum(v for k, v in clip_core_h.items() if k not in gpu_h) / 64
    lines.append(f"| **the five, model stages on the GPU** | node | | | **{cores + sum(gpu_h.values()):,.1f} h** (cores "
                 f"{cores:,.1f} h, then GPU {sum(gpu_h.values()):,.1f} h) |")
    lines += ["", "On the GPU the model stages still decode and resample (FLAC → 16 kHz; JPEG → 224 px) on the cores, "
              "not counted above: a small share of their CPU rows (melspec, which decodes the same FLAC, costs "
              f"{ENCODER_CPU_S_PER_MEDIA_S['melspec'] * VOXCELEB2_MEAN_S:.2f} CPU-s per clip in all). Their GPU rows "
              "assume the device is kept busy at the assumed rate; hubert-base batches equal lengths only (group "
              "norm: in practice one clip per forward) and uses a GPU less well, so read them as optimistic. The "
              "FLOP count and the assumed throughput are the two inputs to check on a real GPU."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--openface", default=os.environ.get("KEBR_OPENFACE_BIN") or shutil.which("FeatureExtraction"))
    args = ap.parse_args()
    n = args.clips
    stages = ("audio", "asr", "acoustic") + (("visual",) if args.openface else ())
    results: dict[tuple[str, int], tuple[float, float]] = {}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "src", n)
        for workers in (1, 2):
            out = tmp / f"out{workers}"
            run_kebr(["extract", "--src", str(tmp / "src"), "--out", str(out), "--layout", "folder", "--stages",
                      "index", "--set", f"index.shard_size={-(-n // 4)}"], poll=False)
            for stage in stages:
                extra = ["--set", f"visual.openface_bin={args.openface!r}"] if stage == "visual" else []
                results[(stage, workers)] = timed(["extract", "--out", str(out), "--stages", stage,
                                                   "--workers", str(workers), *extra])
            results[("mask", workers)] = timed(["mask", "--out", str(out), "--workers", str(workers)])
        import pyarrow.parquet as pq

        mean_s = sum(pq.read_table(tmp / "out1/audio", columns=["duration_s"]).column(0).to_pylist()) / n
    lines = [f"{n} clips of {mean_s:.1f} s mean (demo speech and face joined), 4 shards, local executor; each stage "
             f"timed through the CLI on its own, process start included. Load average {load[0]:.1f} at the start, "
             f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores shared with other work: CPU seconds "
             "carry less of the contention than wall times).", "",
             "| stage | 1 worker: clips/s | 2 workers: clips/s | scaling | CPU-s per clip (2 workers) | "
             "clips per core-hour |", "|---|---:|---:|---:|---:|---:|"]
    per_core_hour = {}
    for stage in (*stages, "mask"):
        one, two = n / results[(stage, 1)][0], n / results[(stage, 2)][0]
        cpu = results[(stage, 2)][1] / n
        per_core_hour[stage] = 3600 / cpu
        lines.append(f"| {stage} | {one:.1f} | {two:.1f} | {two / one:.2f}× | {cpu:.2f} | "
                     f"{per_core_hour[stage]:,.0f} |")
    if "visual" not in stages:
        per_core_hour["visual (bench/visual.py)"] = 3600 / (VISUAL_CPU_S_PER_CLIP * mean_s / VOXCELEB2_MEAN_S)
    lines += projection(per_core_hour, mean_s)
    visual_note = ("the visual row is the real OpenFace 2.2 (CLNF model) through the stage, which batches up to "
                   f"16 clips per invocation within a shard (here {-(-n // 4)} clips per shard, so its models load more "
                   "often than on 1,000-clip shards: an upper bound)" if "visual" in stages else
                   "OpenFace is not installed on this machine, so the visual row is bench/visual.py's measurement of "
                   "the stage with the real OpenFace 2.2 (VISUAL_CPU_S_PER_CLIP, scaled to the clip length)")
    lines += ["", f"Notes: {visual_note}; GPU ASR is not measured here (no GPU on this machine): its rows charge one 30-s "
              "Whisper window per clip at the speed faster-whisper reports for an RTX 2080 Ti (SYSTRAN/faster-whisper "
              "issue #1030; a newer GPU and `asr.batch_size` batching are faster, so these are upper bounds); stages "
              "run one after the other, as `extract` runs them (a second `extract --stages asr` on the GPU can overlap "
              "the CPU stages once `audio` is done); the shared file system keeps up (audio FLAC is ~0.15 MB per "
              "clip, features ~0.06 MB acoustic, ~0.7 MB visual)."]
    text = "\n".join(lines)
    print(text)
    write_section("pipeline", "Pipeline throughput and the VoxCeleb2 projection", text)


if __name__ == "__main__":
    main()
