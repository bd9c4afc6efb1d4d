"""Does MCC balance the modalities? A synthetic imbalance experiment, small and fast on CPU.

Each clip has three independent sentiment signals: a text one (its sentence's sentiment word), an
audio one carried plainly by its audio frames (easy) and a visual one buried in one noisy dimension
of its visual frames (hard); label = 0.5·text + 1.25·audio + 1.25·visual. A tiny KEBR (frozen MiniLM,
one TCMF layer) is fine-tuned with and without MCC over 3 seeds; per run we report the test MAE and
Corr, the mean cosines c_a and c_v, Eq. 11's value, and each modality's reliance (MAE growth when it
is shuffled across the batch; `kebr-train analyse`). The table is written whatever it shows.

    python bench/mcc_balance.py [--epochs 6] [--clips 120]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from kebr_data.mmsa_import import with_width  # noqa: E402
from kebr_data.schema import ACOUSTIC, PLAN, VISUAL  # noqa: E402
from kebr_data.storage.commit import commit_plan_marker, commit_rows  # noqa: E402
from kebr_data.storage.layout import OutputDir  # noqa: E402
from kebr_model.evaluation.analyse import analyse_split  # noqa: E402
from kebr_model.config import TrainConfig  # noqa: E402
from kebr_model.training.train import Trainer  # noqa: E402

WORDS = {"wonderful": 1.0, "good": 0.5, "okay": 0.0, "bad": -0.5, "terrible": -1.0}
A_DIM, V_DIM = 8, 16


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    """n clips with train/valid/test splits 3:1:1; audio easy (signal in every dim, noise 0.3),
    visual hard (signal in one of 16 dims, noise 1.5)."""
    rng = np.random.default_rng(seed)
    out = OutputDir(root)
    plan, acoustic, visual = [], [], []
    for i in range(n):
        cid = f"clip{i:05d}"
        word = list(WORDS)[int(rng.integers(len(WORDS)))]  # independent of the split (i % 5)
        s_a, s_v = rng.uniform(-1, 1, 2)
        label = 0.5 * WORDS[word] + 1.25 * s_a + 1.25 * s_v
        ta, tv = int(rng.integers(15, 30)), int(rng.integers(8, 16))
        a = (s_a + 0.3 * rng.standard_normal((ta, A_DIM))).astype(np.float32)
        v = (1.5 * rng.standard_normal((tv, V_DIM))).astype(np.float32)
        v[:, 3] += s_v
        plan.append({"clip_id": cid, "status": "ok", "split": ("train", "train", "train", "valid", "test")[i % 5],
                     "label": float(label), "given_text": f"the movie was {word} today", "source": "synthetic"})
        acoustic.append({"clip_id": cid, "status": "ok", "num_frames": ta, "features": a})
        visual.append({"clip_id": cid, "status": "ok", "num_frames": tv, "features": v})
    shard = commit_rows(out, "plan", 0, plan, PLAN, "synthetic")
    commit_rows(out, "acoustic", 0, acoustic, with_width(ACOUSTIC, A_DIM), "synthetic", shard["sha256"])
    commit_rows(out, "visual", 0, visual, with_width(VISUAL, V_DIM), "synthetic", shard["sha256"])
    commit_plan_marker(out, {"00000": shard}, "synthetic", n)
    return root


def run(folder: Path, out: Path, use_mcc: bool, seed: int, epochs: int) -> dict:
    cfg = TrainConfig.load(task="finetune", train_split="train", valid_split="valid", layers=1, batch_size=8,
                           epochs=epochs, checkpoint_every=0, lr_other=2e-3, dropout=0.0, freeze_encoder=True,
                           use_mcc=use_mcc, seed=seed, select_on="task")
    t0, c0 = time.monotonic(), time.process_time()
    trainer = Trainer(cfg, folder, out)
    trainer.fit()
    test = analyse_split(trainer, "test", seed=seed)  # the last epoch's weights
    return test | {"wall_s": time.monotonic() - t0, "cpu_s": time.process_time() - c0,
                   "Corr": trainer.evaluate("test")["Corr"]}


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[bool, list[dict]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "f", args.clips)
        for seed in seeds:  # interleaved: with and without MCC side by side for each seed
            for use_mcc in (False, True):
                r = run(folder, Path(tmp) / f"run-{use_mcc}-{seed}", use_mcc, seed, args.epochs)
                results[use_mcc].append(r)
                print(f"seed {seed} mcc={use_mcc}: MAE {r['MAE']:.3f} c_a {r['c_a']:.3f} c_v {r['c_v']:.3f} "
                      f"eq11 {r['eq11']:.3f} reliance {r['reliance']} ({r['wall_s']:.0f} s)", flush=True)
    cols = [("test MAE", lambda r: r["MAE"]), ("test Corr", lambda r: r["Corr"]), ("c_a", lambda r: r["c_a"]),
            ("c_v", lambda r: r["c_v"]), ("Eq. 11", lambda r: r["eq11"]),
            ("ΔMAE text shuffled", lambda r: r["reliance"]["text"]),
            ("ΔMAE audio shuffled", lambda r: r["reliance"]["audio"]),
            ("ΔMAE visual shuffled", lambda r: r["reliance"]["visual"]),
            ("wall s / run", lambda r: r["wall_s"]), ("CPU s / run", lambda r: r["cpu_s"])]
    lines = ["| | without MCC | with MCC |", "|---|---:|---:|"]
    for name, get in cols:
        lines.append(f"| {name} | {mean_std([get(r) for r in results[False]])} | "
                     f"{mean_std([get(r) for r in results[True]])} |")
    table = "\n".join(lines)
    body = (f"Synthetic imbalance: label = 0.5·text + 1.25·audio + 1.25·visual, audio easy (signal in all "
            f"{A_DIM} dims, noise 0.3), visual hard (signal in 1 of {V_DIM} dims, noise 1.5); {args.clips} clips "
            f"(3:1:1 train/valid/test), frozen MiniLM, 1 TCMF layer, batch 8, {args.epochs} epochs, lr 2e-3, "
            f"seeds {args.seeds}; mean ± std over seeds on the test split, the last epoch's weights. "
            "ΔMAE = MAE growth when that modality is shuffled across the batch (reliance). CPU, one thread.\n\n"
            + table)
    write_section("mcc-balance", "Trainer: does MCC balance the modalities? (synthetic imbalance)", body)


if __name__ == "__main__":
    main()
