"""Overlapped stages vs stage by stage (issue #28 point 3): the node's wall with ASR on its own device beside
the CPU stages (`run.overlap = true`) against today's stage-after-stage run (the sum of the two).

    python bench/overlap.py [--clips 12] [--repeats 2] [--cpu-stages audio,acoustic,faces]

The node in miniature: a local Ray with one CPU and one GPU slot; the asr stage's tasks ask for the GPU slot
only (no GPU here: the slot stands for it, ASR runs faster-whisper tiny.en int8 on a core) and the CPU stages'
tasks for the CPU, so ASR has one worker and the CPU stages the other. Stage by stage, the wall is then the
ASR run's plus the CPU stages' run's; overlapped, a shard's ASR and CPU stages start once its audio is
committed. faces (Haar crops at 10 fps) stands in for the visual stage's per-frame tracking (OpenFace is not
installed here). Corpus: bench/pipeline.py's ~7.4-s clips, 2 per shard. Each run is a fresh folder holding only
the plan; the two modes alternate (which goes first swaps each repeat); wall is the engine's run after Ray is
up, CPU is the whole process tree's (driver, Ray's processes and workers, their ffmpeg children).
Rewrites the `overlap` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_kebr, write_section  # noqa: E402


class TreeCpu:
    """CPU seconds spent by a process tree from now on, sampled every 0.2 s. Short-lived ffmpeg children are
    counted through their parent's reaped-children times, never sampled themselves."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._sample(self.start)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self, into: dict[int, float]) -> None:
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                if "ffmpeg" not in p.name():
                    t = p.cpu_times()
                    into[p.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample(self.last)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample(self.last)
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.last.items())


def child(out: str, overlap: bool, stages: str) -> None:
    """One measured run in this process: Ray with one CPU and one GPU slot, ASR's tasks on the GPU slot."""
    import ray

    from kebr_data.asr_engines.base import AsrEngine
    from kebr_data.cli import main
    from kebr_data.executors.local import THREAD_VARS
    from kebr_data.stages.base import Resources

    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: "1" for k in THREAD_VARS}})
    AsrEngine.resources = lambda self, cfg: Resources(cpus=0.0, gpus=1.0)  # the slot that stands for the GPU
    meter, t0 = TreeCpu(os.getpid()), time.perf_counter()
    try:
        main(["extract", "--out", out, "--stages", stages, "--executor", "ray", "--max-failed", "1",
              "--set", f"run.overlap={str(overlap).lower()}"], standalone_mode=False)
    except SystemExit as exc:  # the command's exit status
        if exc.code:
            raise
    wall, cpu = time.perf_counter() - t0, meter.stop()
    ray.shutdown()
    busy = {"asr": 0.0, "cpu": 0.0}  # each side's summed shard walls: its slot's busy time
    for done in Path(out, "_done").glob("*/shard-*.json"):
        busy["asr" if done.parent.name == "asr" else "cpu"] += json.loads(done.read_text())["wall_s"]
    print(json.dumps({"wall": wall, "cpu": cpu, "asr_busy": busy["asr"], "cpu_busy": busy["cpu"],
                      "together": together(Path(out))}))


def together(out: Path) -> float:
    """The share of the ASR side's busy time during which a CPU stage's shard ran too (from the shard logs'
    start and done times): 0 stage by stage, towards 1 when the stages overlap."""
    spans: dict[str, list[tuple[float, float]]] = {"asr": [], "cpu": []}
    for log in out.glob("_logs/*/shard-*.log"):
        stamps = [time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
                  for line in log.read_text().splitlines() if line[:4].isdigit()]
        spans["asr" if log.parent.name == "asr" else "cpu"].append((stamps[0], stamps[-1]))
    cpu: list[tuple[float, float]] = []  # the CPU side's spans merged, so no moment counts twice
    for a, b in sorted(spans["cpu"]):
        cpu[-1:] = [(cpu[-1][0], max(b, cpu[-1][1]))] if cpu and a <= cpu[-1][1] else [*cpu[-1:], (a, b)]
    asr = sum(b - a for a, b in spans["asr"])
    both = sum(max(0.0, min(b, d) - max(a, c)) for a, b in spans["asr"] for c, d in cpu)
    return both / asr if asr else 0.0


def measure(out: Path, overlap: bool, stages: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", str(out), "--overlap", str(int(overlap)), "--stages",
                           stages], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cpu-stages", default="audio,acoustic,faces")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--overlap", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stages", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, bool(args.overlap), args.stages)
        return
    from pipeline import make_corpus

    cpu_stages = args.cpu_stages.split(",")
    stages = ",".join([cpu_stages[0], "asr", *cpu_stages[1:]])
    load = os.getloadavg()
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "src", args.clips)
        run_kebr(["extract", "--src", str(tmp / "src"), "--out", str(tmp / "plan"), "--layout", "folder", "--stages",
                  "index", "--set", "index.shard_size=2"], poll=False)
        for r in range(args.repeats):
            for overlap in ((False, True) if r % 2 == 0 else (True, False)):
                out = tmp / f"run{r}-{int(overlap)}"
                shutil.copytree(tmp / "plan", out)
                runs[overlap].append(measure(out, overlap, stages))
                print(f"repeat {r} overlap={overlap}: {runs[overlap][-1]}", flush=True)
                if r:  # the first repeat's folders are compared; later ones are removed as they end
                    shutil.rmtree(out)
        same = sorted(p.relative_to(tmp / "run0-0") for p in (tmp / "run0-0").rglob("shard-*.parquet"))
        identical = all((tmp / "run0-0" / p).read_bytes() == (tmp / "run0-1" / p).read_bytes() for p in same)
    end_load = os.getloadavg()
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu")} for mode, rs in runs.items()}
    lines = [f"{args.clips} clips of ~7.4 s in {-(-args.clips // 2)} shards; stages {stages}; a local Ray with one "
             "CPU slot (the CPU stages) and one GPU slot (asr: tiny.en int8 on a core, standing in for the GPU); "
             f"median of {args.repeats} interleaved repeats. Load average {load[0]:.1f} at the start, "
             f"{end_load[0]:.1f} at the end ({os.cpu_count()} cores shared by 8 engineers: the two slots compete "
             "with other work, so read the ratios, not the seconds). Outputs of the two modes byte-identical: "
             f"{'yes' if identical else 'NO'} ({len(same)} tables).", "",
             "| mode | wall s | CPU s (process tree) | ASR time with a CPU shard running | each run: wall / CPU |",
             "|---|---:|---:|---:|---|"]
    for mode, label in ((False, "stage by stage (today): ASR's wall + the CPU stages' wall"),
                        (True, "overlapped (`run.overlap = true`)")):
        each = ", ".join(f"{r['wall']:.0f} / {r['cpu']:.0f}" for r in runs[mode])
        share = statistics.median(r["together"] for r in runs[mode])
        lines.append(f"| {label} | {med[mode]['wall']:.1f} | {med[mode]['cpu']:.1f} | {share:.0%} | {each} |")
    ratio = med[False]["wall"] / med[True]["wall"]
    asr, cpu = (statistics.median(r[k] for r in runs[False]) for k in ("asr_busy", "cpu_busy"))
    o_asr, o_cpu = (statistics.median(r[k] for r in runs[True]) for k in ("asr_busy", "cpu_busy"))
    lines += ["", f"Overlapped wall vs stage by stage: **{ratio:.2f}× shorter**; CPU {med[True]['cpu'] / med[False]['cpu']:.2f}× "
              f"stage by stage's (the same work, side by side). The two sides' busy time stage by stage (their "
              f"shards' summed walls, median): ASR {asr:.1f} s, CPU stages {cpu:.1f} s, so the ideal is "
              f"(sum / max) {(asr + cpu) / max(asr, cpu):.2f}×. Overlapped, the same shards took ASR {o_asr:.1f} s and "
              f"CPU stages {o_cpu:.1f} s: here the two slots share two loaded cores and slow each other, which a GPU "
              "beside the cores does not; the rest is the first shard's audio, which nothing overlaps, the last "
              "shard's tail, and Ray's task start-up."]
    text = "\n".join(lines)
    write_section("overlap", "Overlapped stages: ASR beside the CPU stages", text)


if __name__ == "__main__":
    main()
