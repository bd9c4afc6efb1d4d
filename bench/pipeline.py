"""Pipeline throughput: clips per core-hour per stage on 8-s talking-head clips with the local
executor at 1 and 2 workers, and what that means for VoxCeleb2's ~1.1 M clips on one node of
64 cores and one GPU (ASR on the GPU, everything else on the cores), with the optional encoder and
baseline stages added from bench/encoders.py's measurements (CPU) and FLOP counts (GPU, projected).

    python bench/pipeline.py [--clips 48] [--openface /path/to/FeatureExtraction]
    python bench/pipeline.py --projection      # only the levers' projection, from RESULTS.md's numbers

Corpus: demo clips joined into ~8 s clips (espeak-ng speech over the moving face), as VoxCeleb2
utterances average 7.8 s. Each stage is timed through the CLI on its own (process start included);
the visual stage too when OpenFace is installed (KEBR_OPENFACE_BIN), else its CPU per clip is the
one `bench/visual.py` measured with the real binary (VISUAL_CPU_S_PER_CLIP).
Rewrites the `pipeline` section of bench/RESULTS.md, then the `projection` section: VoxCeleb2 on one node
with issue #28's four levers (packed ASR windows, GPU batching, overlapped stages, the visual frame budget) on
and off, every input marked measured or assumed (`levers_projection`).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import RESULTS, run_kebr, write_section  # noqa: E402
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

#: issue #28's levers: the inputs this machine cannot measure, each with its source. The packing ratio is the
#: issue's quick CPU measurement (Whisper base, four 8-s clips in two windows: 1.27-1.50x fewer CPU-s per clip),
#: the low end used, until bench/asr_packing.py (wip-28asr) commits its 8-s ratio; on the GPU it is assumed
#: to hold (the decoder's work does not shrink with packing there either).
PACKING_8S = (1.27, 1.50)
#: faster-whisper's README (v1.1.0): large-v2 fp16 beam 5 on 13 min of audio, RTX 3070 Ti: 63 s one window at a
#: time, 17 s with batch_size=8; assumed for large-v3-turbo on packed windows (bench/gpu.py measures it)
GPU_BATCH_SPEEDUP = 63 / 17
#: visual.max_frames = 55 (the released recipe's vision length) vs every frame: 262 / 842 core-h, bench/
#: visual_budget.py (wip-27friction): the ffmpeg cut measured, OpenFace taken proportional to the frames tracked
FRAME_BUDGET_VISUAL = 262 / 842
#: Whisper base vs tiny.en, faster-whisper int8, CPU-s per clip (bench/RESULTS.md, asr: measured)
ASR_BASE_VS_TINY = 2.97
NODE_CORES = 64
TARGET_H = 24.0


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


def section(key: str) -> str:
    """The text of RESULTS.md's section `key` ("" when absent)."""
    m = re.search(rf"<!-- {re.escape(key)} -->(.*?)<!-- /{re.escape(key)} -->", RESULTS.read_text(), re.S)
    return m.group(1) if m else ""


def recorded_per_core_hour() -> tuple[dict[str, float], float]:
    """The pipeline section's measured clips per core-hour by stage, and its clips' mean length."""
    text = section("pipeline")
    rows = {m.group(1): float(m.group(2).replace(",", ""))
            for m in re.finditer(r"^\| (\w+) \|(?: [^|]+ \|){4} ([\d,]+) \|$", text, re.M)}
    mean = re.search(r"clips of ([\d.]+) s mean", text)
    return rows, float(mean.group(1)) if mean else VOXCELEB2_MEAN_S


def recorded_overlap() -> str:
    """What bench/overlap.py measured, as one phrase ("" before it ran)."""
    text = section("overlap")
    got, ideal = re.search(r"\*\*([\d.]+)× shorter\*\*", text), re.search(r"\(sum / max\) ([\d.]+)×", text)
    return (f"{got.group(1)}× shorter wall of an ideal {ideal.group(1)}× on two loaded shared cores, where the two "
            "slots slow each other" if got and ideal else "")


def levers_projection(per_core_hour: dict[str, float], mean_s: float) -> list[str]:
    """VoxCeleb2 on one node (64 cores, 1 GPU) with the four levers of issue #28 on and off: hours on the node
    and nodes for 24 h with Ray, for tiny.en and base on the cores and large-v3-turbo on the GPU."""
    scale = VOXCELEB2_MEAN_S / mean_s
    core_h = {k: VOXCELEB2_CLIPS / per_core_hour[k] * scale for k in ("audio", "acoustic", "mask")}
    core_h["visual"] = VOXCELEB2_CLIPS * VISUAL_CPU_S_PER_CLIP / 3600
    tiny_h = VOXCELEB2_CLIPS / per_core_hour["asr"] * scale
    asr_core_h = {"tiny.en": tiny_h, "base": tiny_h * ASR_BASE_VS_TINY}
    turbo_gpu_h = VOXCELEB2_CLIPS * GPU_ASR_S_PER_CLIP["large-v3-turbo"] / 3600
    pack = PACKING_8S[0]
    overlap = recorded_overlap()

    def assumed(budget: bool, packed: bool) -> str:
        parts = ["frame budget's OpenFace"] * budget + ["packing"] * packed
        return f"A ({', '.join(parts)})" if parts else "M"

    def cpu_side(budget: bool) -> float:
        return sum(core_h.values()) - (core_h["visual"] * (1 - FRAME_BUDGET_VISUAL) if budget else 0.0)

    lines = ["Inputs (**M** measured on this project's machines, **A** assumed: from others' published numbers, "
             "until bench/gpu.py runs on a GPU):", "",
             "| input | value | source |", "|---|---:|---|",
             f"| audio + acoustic + mask | {sum(core_h[k] for k in ('audio', 'acoustic', 'mask')):,.0f} core-h | **M** "
             "this script's table (pipeline section), scaled to 7.8 s |",
             f"| visual (OpenFace 2.2, every frame) | {core_h['visual']:,.0f} core-h | **M** bench/visual.py, "
             f"{VISUAL_CPU_S_PER_CLIP} CPU-s per 7.8-s clip |",
             f"| frame budget: visual.max_frames = 55 | ×{FRAME_BUDGET_VISUAL:.2f} visual | **M** the ffmpeg cut, **A** "
             "OpenFace proportional to the frames it tracks (bench/visual_budget.py, wip-27friction) |",
             f"| asr tiny.en int8 on the cores | {asr_core_h['tiny.en']:,.0f} core-h | **M** this script's table |",
             f"| asr base int8 on the cores | {asr_core_h['base']:,.0f} core-h | **M** tiny.en × {ASR_BASE_VS_TINY} "
             "(bench/asr.py) |",
             f"| asr large-v3-turbo fp16, one 30-s window per clip | {turbo_gpu_h:,.0f} GPU-h | **A** RTX 2080 Ti, "
             "faster-whisper issue #1030 (19.2 s per 26 windows) |",
             f"| packed windows (asr.pack_s = 30), 8-s clips | ÷{pack:.2f} ASR (to ÷{PACKING_8S[1]:.2f}) | **A** issue "
             "#28's quick CPU figure (base), assumed on the GPU too |",
             f"| GPU batching (asr.batch_size = 8) | ÷{GPU_BATCH_SPEEDUP:.1f} GPU ASR | **A** faster-whisper README "
             "1.1.0, large-v2, RTX 3070 Ti (63 s → 17 s) |",
             f"| overlapped stages (run.overlap = true) | wall = max(cores, GPU) | **M** mechanism: bench/overlap.py "
             f"({overlap or 'not run yet'}); **A** a GPU beside the cores reaches the max, fill and drain negligible over "
             "1,129 shards |", ""]
    lines += ["ASR on the cores (everything on 64 cores; GPU batching and overlap do not apply: one resource, already "
              "kept busy):", "", "| ASR | frame budget | packing | core-h | hours on the node | nodes for 24 h | "
              "figures |", "|---|---|---|---:|---:|---:|---|"]
    for model, budget, packed in itertools.product(asr_core_h, (False, True), (False, True)):
        total = cpu_side(budget) + asr_core_h[model] / (pack if packed else 1.0)
        hours = total / NODE_CORES
        lines.append(f"| {model} | {'on' if budget else 'off'} | {'on' if packed else 'off'} | {total:,.0f} | "
                     f"{hours:,.1f} | {math.ceil(hours / TARGET_H)} | {assumed(budget, packed)} |")
    lines += ["", "large-v3-turbo on the node's GPU, the other stages on its 64 cores (nodes for 24 h: Ray spreads the "
              "shards over N such nodes, each doing 1/N):", "",
              "| levers on | cores h | GPU h | node wall h | nodes for 24 h |", "|---|---:|---:|---:|---:|"]
    names = ("frame budget", "packing", "GPU batching", "overlap")
    combos = [()] + [(n,) for n in names] + [tuple(n for n in names if n != off) for off in names] + [names]
    for on in combos:
        cores = cpu_side("frame budget" in on) / NODE_CORES
        gpu = turbo_gpu_h / (pack if "packing" in on else 1.0) / (GPU_BATCH_SPEEDUP if "GPU batching" in on else 1.0)
        wall = max(cores, gpu) if "overlap" in on else cores + gpu
        label = ("none (today)" if not on else "all four" if len(on) == 4 else
                 ", ".join(on) if len(on) == 1 else f"all but {next(n for n in names if n not in on)}")
        bold = "**" if len(on) == 4 else ""
        lines.append(f"| {label} | {cores:,.1f} | {gpu:,.1f} | {bold}{wall:,.1f}{bold} | "
                     f"{bold}{math.ceil(wall / TARGET_H)}{bold} |")
    low, high = (turbo_gpu_h / p / GPU_BATCH_SPEEDUP for p in PACKING_8S)
    lines += ["", f"Every GPU figure above is **assumed** (no GPU here), and N nodes are assumed to divide the wall by N "
              f"(Ray spreads the 1,129 shards; the shared file system keeps up). With all four levers the node is "
              f"GPU-bound: its cores finish in {cpu_side(True) / NODE_CORES:.1f} h and then wait for the GPU, "
              f"{low:.1f} h at packing's low end, {high:.1f} h at its high end (÷{PACKING_8S[1]:.2f}). One node reaches "
              f"24 h with a GPU {low / TARGET_H:.1f}× ({high / TARGET_H:.1f}×) the RTX 2080 Ti's speed of the window "
              "figure, which an A100- or H100-class card is expected to exceed (not measured); until then it takes "
              f"{math.ceil(low / TARGET_H)} nodes ({math.ceil(high / TARGET_H)} at the high end). Without overlap "
              "the cores' hours add to the GPU's: that is the lever that makes the cores' side free once the GPU "
              "dominates. bench/gpu.py's windows/s (batch 1/8/32, packed and not) replace the three assumed GPU inputs "
              "when it runs on a GPU; `python bench/pipeline.py --projection` then redoes this section."]
    return lines


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
    ap.add_argument("--projection", action="store_true", help="only rewrite the projection section, from the "
                    "numbers RESULTS.md holds (no measurement)")
    args = ap.parse_args()
    if args.projection:
        write_projection()
        return
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
              "run one after the other, as `extract` runs them by default (`run.overlap = true` runs the GPU's ASR "
              "beside the CPU stages: the projection section); the shared file system keeps up (audio FLAC is ~0.15 MB per "
              "clip, features ~0.06 MB acoustic, ~0.7 MB visual)."]
    text = "\n".join(lines)
    print(text)
    write_section("pipeline", "Pipeline throughput and the VoxCeleb2 projection", text)
    write_projection()


def write_projection() -> None:
    """The `projection` section from the pipeline section's measured rates and the levers' inputs."""
    per_core_hour, mean_s = recorded_per_core_hour()
    text = "\n".join(levers_projection(per_core_hour, mean_s))
    print(text)
    write_section("projection", "VoxCeleb2 on one node in a day? The four levers on and off", text, script="pipeline.py")


if __name__ == "__main__":
    main()
