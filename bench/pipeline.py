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
from dataclasses import dataclass, field
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

#: one 30-s window of continuous speech on a GPU, per GPU class (**A**: others' published figures, until bench/gpu.py
#: runs on that class): seconds per window, whether the figure is already batched, and its source
@dataclass(frozen=True)
class GpuClass:
    """A GPU class's Whisper speed: published, as seconds per 30-s window of speech, or measured by bench/gpu.py,
    as GPU-s per 7.8-s clip of its turbo-shaped model for (packed, batched)."""

    name: str
    short: str  # its name in the table's columns
    model: str  # the Whisper model the figure is for
    window_s: float
    batched: bool
    source: str
    measured: dict[tuple[bool, bool], float] = field(default_factory=dict)


GPU_CLASSES = (
    GpuClass("RTX 2080 Ti", "2080 Ti", "large-v3-turbo", 19.2 / 26, False,
             "large-v3-turbo, faster-whisper fp16, beam 5, one window at a time: 13 min "
             "of audio (26 windows) in 19.2 s, https://github.com/SYSTRAN/faster-whisper/issues/1030"),
    GpuClass("A100 80GB", "A100", "large-v3", 98 / 600, True,
             "large-v3 (32 decoder layers to turbo's 4: an upper bound for turbo), "
             "transformers fp16, batch 96, flash attention: 300 min (600 windows) in 98 s, "
             "https://github.com/Vaibhavs10/insanely-fast-whisper/issues/44"),
    GpuClass("H100 SXM", "H100", "large-v3-turbo", 30 / 404, True,
             "large-v3-turbo, transformers, batch 32: 404× real time, "
             "https://inferencebench.io/blog/whisper-large-v3-turbo-597x-realtime-asr-benchmark/"),
)
#: faster-whisper's BatchedInferencePipeline on large-v3-turbo, RTX 3090, 1 h of audio: 82.75 s one window at a time,
#: 33.37 s at batch 16 (https://github.com/speaches-ai/speaches/issues/169): the batching lever, and what turns the
#: batched figures above back into one-window-at-a-time ones
GPU_BATCH_SPEEDUP = 82.75 / 33.37
GPU_BATCH_SOURCE = ("large-v3-turbo, faster-whisper batch 16 vs one window at a time, RTX 3090, 1 h of audio "
                    "(82.75 s → 33.37 s), https://github.com/speaches-ai/speaches/issues/169")
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


def recorded(key: str, pattern: str, script: str) -> list[tuple[str, ...]]:
    """Every match of `pattern` in RESULTS.md's section `key`; none is a one-line refusal naming `script`."""
    found = re.findall(pattern, section(key), re.M)
    if not found:
        print(f"bench/RESULTS.md has no {key} figures for the projection: run python {script} first", file=sys.stderr)
        sys.exit(2)
    return found


def recorded_inputs() -> dict[str, float]:
    """The levers' measured inputs, read from the sections that measured them: packing at ~8-s clips on the cores
    (asr-packing) and for the turbo shape (asr-turbo-shape), the frame budget (visual-budget), base vs tiny.en (asr)."""
    got = {}
    for model, ratio in recorded("asr-packing", r"^\| (tiny\.en|base) \| long \([^|]+\| packed 30 s \|"
                                 r"(?: [^|]+ \|){2} ([\d.]+)× \|", "bench/asr_packing.py"):
        got[f"packing {model}"] = float(ratio)
    shape = {model: tuple(map(float, figures)) for model, *figures in recorded(
        "asr-turbo-shape", r"^\| (tiny\.en|base|large-v3-turbo shape, random) \| 7\.8 s [^|]+\|(?: [^|]+ \|){5} "
        r"\*\*([\d.]+)×\*\* \| [^|]+ \| ([\d.]+) \| ([\d.]+) \|$", "bench/asr_turbo_shape.py")}
    gain, one, packed = shape["large-v3-turbo shape, random"]
    got.update({"packing turbo": gain, "turbo one/window": one, "turbo packed/window": packed,
                "structural tiny.en": shape["tiny.en"][0], "structural base": shape["base"][0]})
    ((today, budget),) = recorded("visual-budget", r"the visual stage ([\d,]+) core-h .*?today, ([\d,]+) core-h",
                                  "bench/visual_budget.py")
    got["frame budget"] = float(budget.replace(",", "")) / float(today.replace(",", ""))
    (base,) = recorded("asr", r"^\| base, faster-whisper int8 \|(?: [^|]+ \|){2} ([\d.]+)× \|", "bench/asr.py")
    got["base vs tiny.en"] = float(base)
    return got


def recorded_gpu() -> tuple[GpuClass, ...]:
    """The GPU bench/gpu.py measured (its gpu section), as a class with GPU-s per 7.8-s clip of its turbo-shaped
    model, packed or not at its largest batch and at batch 1; none before it ran on a GPU."""
    text = section("gpu")
    rows = re.findall(r"^\| large-v3-turbo shape, random \| 7\.8 s \| (one clip a window|packed 30 s) \| (\d+) \| "
                      r"[\d.]+ \| ([\d.]+) \|", text, re.M)
    if not rows:
        return ()
    clips_s = {(windows == "packed 30 s", int(batch)): float(rate) for windows, batch, rate in rows}
    top = max(batch for _, batch in clips_s)
    name = re.search(r"_\n\n([^,\n]+),", text).group(1)
    return (GpuClass(name, "measured", "large-v3-turbo shape", 0.0, True,
                     f"**M** gpu section (bench/gpu.py), batch {top} and 1",
                     {(packed, batched): 1 / clips_s[(packed, top if batched else 1)]
                      for packed in (False, True) for batched in (False, True)}),)


def levers_projection(per_core_hour: dict[str, float], mean_s: float) -> list[str]:
    """VoxCeleb2 on one node (64 cores, 1 GPU) with the four levers of issue #28 on and off: hours on the node
    and nodes for 24 h with Ray, for tiny.en and base on the cores and large-v3-turbo on three GPU classes."""
    m = recorded_inputs()
    gpus = GPU_CLASSES + recorded_gpu()
    scale = VOXCELEB2_MEAN_S / mean_s
    core_h = {k: VOXCELEB2_CLIPS / per_core_hour[k] * scale for k in ("audio", "acoustic", "mask")}
    core_h["visual"] = VOXCELEB2_CLIPS * VISUAL_CPU_S_PER_CLIP / 3600
    tiny_h = VOXCELEB2_CLIPS / per_core_hour["asr"] * scale
    asr_core_h = {"tiny.en": tiny_h, "base": tiny_h * m["base vs tiny.en"]}
    overlap = recorded_overlap()

    def cpu_side(budget: bool) -> float:
        return sum(core_h.values()) - (core_h["visual"] * (1 - m["frame budget"]) if budget else 0.0)

    def gpu_h(gpu: GpuClass, packed: bool, batched: bool) -> float:
        """GPU hours of VoxCeleb2's ASR: bench/gpu.py's GPU-s per clip where it ran, else a clip's share of a 30-s
        window of speech (turbo shape, CPU) times the class's published window."""
        if gpu.measured:
            return VOXCELEB2_CLIPS * gpu.measured[(packed, batched)] / 3600
        window = gpu.window_s * (GPU_BATCH_SPEEDUP if gpu.batched else 1.0) / (GPU_BATCH_SPEEDUP if batched else 1.0)
        return VOXCELEB2_CLIPS * window * m["turbo packed/window" if packed else "turbo one/window"] / 3600

    lines = [f"Issue #28's target: VoxCeleb2 ({VOXCELEB2_CLIPS:,} clips, {VOXCELEB2_MEAN_S} s mean) end to end on one "
             f"node of {NODE_CORES} cores and one GPU in ≤ {TARGET_H:g} h, ASR by large-v3-turbo. "
             "Every input marked **M** (measured on this project's machines, the section named) or **A** (assumed: "
             "others' published figures, or a measured ratio carried over to where it was not measured). Rerun "
             "`python bench/pipeline.py --projection` after any of the named sections changes.", "",
             "| input | value | source |", "|---|---:|---|",
             f"| audio + acoustic + mask | {sum(core_h[k] for k in ('audio', 'acoustic', 'mask')):,.0f} core-h | **M** "
             "pipeline section (this script), CPU-s per clip scaled to 7.8 s |",
             f"| visual (OpenFace 2.2, every frame) | {core_h['visual']:,.0f} core-h | **M** visual section "
             f"(bench/visual.py), {VISUAL_CPU_S_PER_CLIP} CPU-s per 7.8-s clip |",
             f"| frame budget: visual.max_frames = 55 | ×{m['frame budget']:.2f} visual | **M** the ffmpeg cut, **A** "
             "OpenFace's time proportional to the frames it tracks (visual-budget section, bench/visual_budget.py) |",
             f"| asr tiny.en int8 on the cores | {asr_core_h['tiny.en']:,.0f} core-h | **M** pipeline section |",
             f"| asr base int8 on the cores | {asr_core_h['base']:,.0f} core-h | **M** tiny.en × {m['base vs tiny.en']} "
             "(asr section, bench/asr.py) |",
             f"| packing on the cores (asr.pack_s = 30), 7.9-s clips | tiny.en ÷{m['packing tiny.en']:.2f}, base "
             f"÷{m['packing base']:.2f} | **M** asr-packing section (bench/asr_packing.py), the stage's run_shard, "
             f"CPU-s per clip (asr-turbo-shape's passes alone give tiny.en ÷{m['structural tiny.en']:.2f}, base "
             f"÷{m['structural base']:.2f}: the method the turbo row uses) |",
             f"| large-v3-turbo: a 7.8-s clip's share of a 30-s window of speech | one clip a window "
             f"{m['turbo one/window']:.3f}, packed (3 a window) {m['turbo packed/window']:.3f}: packing "
             f"÷{m['packing turbo']:.2f} (a clip's GPU-s = the window's GPU-s below × this share) | **M on CPU** "
             "asr-turbo-shape section (bench/asr_turbo_shape.py: turbo's "
             "shape, random weights, int8); **A** the same ratios on a GPU |"]
    for gpu in gpus:
        if gpu.measured:
            lines.append(f"| {gpu.model} fp16 on an {gpu.name}: GPU-s per 7.8-s clip | packed, batched "
                         f"{gpu.measured[(True, True)]:.4f}; one a window, batch 1 {gpu.measured[(False, False)]:.4f} "
                         f"| {gpu.source} |")
            continue
        lines.append(f"| {gpu.model} fp16 on an {gpu.name}: s per 30-s window of speech | {gpu.window_s:.3f} s "
                     f"({'batched' if gpu.batched else 'one at a time'}) | **A** {gpu.source} |")
    lines += [f"| GPU batching (asr.batch_size = 16) | ÷{GPU_BATCH_SPEEDUP:.2f} GPU ASR | **A** {GPU_BATCH_SOURCE}; "
              "also turns the batched figures above into one-window-at-a-time ones |",
              f"| overlapped stages (run.overlap = true) | wall = max(cores, GPU) | **M** mechanism: overlap section "
              f"(bench/overlap.py: {overlap or 'not run yet'}); **A** a GPU beside the cores reaches the max, fill and "
              "drain negligible over 1,129 shards |", ""]
    lines += ["ASR on the cores (everything on 64 cores; GPU batching and overlap do not apply: one resource, already "
              "kept busy):", "", "| ASR | frame budget | packing | core-h | hours on the node | nodes for 24 h | "
              "figures |", "|---|---|---|---:|---:|---:|---|"]
    core_hours = {}
    for model, budget, packed in itertools.product(asr_core_h, (False, True), (False, True)):
        total = cpu_side(budget) + asr_core_h[model] / (m[f"packing {model}"] if packed else 1.0)
        hours = core_hours[(model, budget, packed)] = total / NODE_CORES
        lines.append(f"| {model} | {'on' if budget else 'off'} | {'on' if packed else 'off'} | {total:,.0f} | "
                     f"{hours:,.1f} | {math.ceil(hours / TARGET_H)} | "
                     f"{'M, A: OpenFace ∝ frames' if budget else 'M'} |")
    names = ("frame budget", "packing", "GPU batching", "overlap")
    combos = [()] + [(n,) for n in names] + [tuple(n for n in names if n != off) for off in names] + [names]
    lines += ["", "large-v3-turbo on the node's one GPU, the other stages on its 64 cores; per GPU class the GPU's hours, "
              "the node's wall hours and the nodes for 24 h (Ray spreads the shards over N such nodes, each doing "
              f"1/N). GPU h = clips × the class's s per window (÷{GPU_BATCH_SPEEDUP:.2f} with GPU batching, "
              f"×{GPU_BATCH_SPEEDUP:.2f} without it for the "
              "figures measured batched) × a clip's share of a window (packed or not). Figures: cores **M** (frame "
              "budget: **A** OpenFace ∝ frames), GPU **A** (a class measured by bench/gpu.py: **M**, random weights):", "",
              "| levers on | cores h | "
              + " | ".join(f"{g.short} GPU h | {g.short} node h | {g.short} nodes" for g in gpus) + " |",
              "|---|---:|" + "---:|" * 3 * len(gpus)]
    walls = {}
    for on in combos:
        cores = cpu_side("frame budget" in on) / NODE_CORES
        cells = []
        for gpu in gpus:
            g = gpu_h(gpu, "packing" in on, "GPU batching" in on)
            wall = walls[(gpu.name, on)] = max(cores, g) if "overlap" in on else cores + g
            bold = "**" if len(on) == 4 else ""
            cells.append(f"{g:,.1f} | {bold}{wall:,.1f}{bold} | {bold}{math.ceil(wall / TARGET_H)}{bold}")
        label = ("none (today)" if not on else "all four" if len(on) == 4 else
                 ", ".join(on) if len(on) == 1 else f"all but {next(n for n in names if n not in on)}")
        lines.append(f"| {label} | {cores:,.1f} | " + " | ".join(cells) + " |")
    cores_on = cpu_side(True) / NODE_CORES
    summary = ", ".join(f"{walls[(g.name, names)]:,.1f} h with an {g.name} "
                        f"({math.ceil(walls[(g.name, names)] / TARGET_H)} node"
                        f"{'s' if walls[(g.name, names)] > TARGET_H else ''} for 24 h)" for g in gpus)
    lines += ["", f"Reading it: with all four levers one node takes {summary}. The cores finish in "
              f"{cores_on:.1f} h with the frame budget, so the GPU sets the wall wherever it takes longer. ASR on the "
              f"cores instead, on one node: tiny.en with no lever {core_hours[('tiny.en', False, False)]:.1f} h (all "
              f"**M**), base with packing {core_hours[('base', False, True)]:.1f} h (**M**); with the frame budget and "
              "packing "
              f"{core_hours[('tiny.en', True, True)]:.1f} h and {core_hours[('base', True, True)]:.1f} h. The A100 "
              "figure is large-v3's speed (8× turbo's decoder layers), so turbo's is at most that. N nodes are assumed to divide the "
              "wall by N (Ray spreads the 1,129 shards; the shared file system keeps up).", "",
              "What bench/gpu.py must measure (on the target GPU class) to turn the GPU side from **A** to **M**, "
              "from its large-v3-turbo-shape rows at 7.8-s clips: (1) packed clips/s at batch 32: the GPU-s per "
              "clip, replacing the published window of its class; (2) one clip a window vs packed: the packing gain "
              "on a GPU, replacing the CPU ratio carried over (a GPU runs the encoder's big matrix products "
              "relatively faster than the decoder's small steps, so the gain there is likely smaller than on the "
              "CPU); (3) batch 1 vs 32: the batching lever, replacing the RTX 3090 figure. Its random weights decode "
              "the 3 tokens per second of speech used here (its table's tokens-per-clip column), so its rows are "
              "comparable to real speech in cost. Once its gpu section is in RESULTS.md, `--projection` adds that "
              "GPU as a measured class (columns `measured`) from those rows. "
              "Overlap on a GPU node (bench/overlap.py there) and OpenFace under the frame budget (bench/"
              "visual_budget.py with the binary) are the two CPU-side inputs still **A**."]
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
    write_section("pipeline", "Pipeline throughput and the VoxCeleb2 projection", text)
    write_projection()


def write_projection() -> None:
    """The `projection` section from the pipeline section's measured rates and the levers' inputs."""
    per_core_hour, mean_s = recorded_per_core_hour()
    text = "\n".join(levers_projection(per_core_hour, mean_s))
    write_section("projection", "VoxCeleb2 on one node in a day? The four levers on and off", text, script="pipeline.py")


if __name__ == "__main__":
    main()
