"""Training-step cost of each fusion on CPU at batch 32, at the released KEBR feature shapes
(text 39 × 768, BERT-base's width; audio 400 × 33; visual 55 × 709), side by side in one run.

A step is fusion + main head forward, L1 loss, backward and an Adam step (the encoders are left
out: they are the same for every fusion). Steps are interleaved (one step of each fusion in turn)
and repeated; the table gives medians of wall and CPU time, ratios to TCMF (KEBR's fusion), the
activation memory autograd keeps for the backward pass (saved tensors, counted once per storage),
the memory of parameters + gradients + Adam state (16 bytes per trainable parameter), parameter
count and forward FLOPs (torch.utils.flop_counter). One thread, as the local executor runs.

    python bench/fusion.py [--repeats 7]

`--recovery`: which fusion recovers the most of a label that each modality carries a known part of.
A synthetic folder where label = t + a + v, independent parts with variances 0.5 (text: the value of
the one sentiment word in the sentence), 0.3 (audio: the frames' mean) and 0.2 (visual: the frames'
mean), so a predictor that reads only text can reach Corr sqrt(0.5) = 0.71 and MAE
sqrt(0.5)·sqrt(2/π) = 0.56, text + audio Corr 0.89 / MAE 0.36, all three Corr 1 / MAE 0. Each fusion
fine-tunes through `kebr-train sweep`'s Python API (fusion × 3 seeds), with a tiny random BERT as the
text encoder, beside references that read text only and text + audio (sf).

    python bench/fusion.py --recovery [--epochs 20] [--clips 400] [--out runs/fusion-recovery]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from kebr_model.fusions import count_flops, count_params, make_fusion  # noqa: E402
from kebr_model.heads import mlp, weighted_loss  # noqa: E402

SHAPES = {"text": (39, 768), "audio": (400, 33), "visual": (55, 709)}
CONTENDERS = [
    ("tcmf", {}, "4 layers, single W_Q (KEBR)"),
    ("tcmf", {"per_modality_query": True}, "4 layers, W_Q^a and W_Q^v (SKESL)"),
    ("sf", {}, "concatenation"),
    ("tfn", {}, "projection to 16 each, 17^3 = 4,913"),
    ("mult", {}, "d 32, 4 heads, 2 layers per block"),
    ("mmml", {}, "text+audio, d 64, 4 heads, 5 layers"),
    ("mmml", {"variant": "transformer_variation"}, "as above + transformer variation"),
]


def batch(n: int) -> tuple[dict, dict, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    h = {m: torch.randn(n, t, d, generator=g) for m, (t, d) in SHAPES.items()}
    mask = {m: torch.ones(n, t, dtype=torch.bool) for m, (t, _) in SHAPES.items()}
    for m, (t, _) in SHAPES.items():  # realistic padding: the last quarter of the batch is 3/4 long
        mask[m][3 * n // 4:, 3 * t // 4:] = False
    return h, mask, torch.randn(n, generator=g)


class Contender:
    def __init__(self, name: str, opts: dict, note: str) -> None:
        torch.manual_seed(0)
        widths = {m: d for m, (_, d) in SHAPES.items()}
        self.label = name + "".join(f" {k}={v}" for k, v in opts.items())
        self.note = note
        self.fusion = make_fusion(name, widths, **opts)
        self.head = mlp(self.fusion.out_dim)  # the main head (Eq. 15)
        self.params = list(self.fusion.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.Adam(self.params, lr=1e-4)
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def predict(self, h: dict, mask: dict) -> torch.Tensor:
        return self.head(self.fusion(h, mask).pooled).squeeze(-1)

    def step(self, h: dict, mask: dict, y: torch.Tensor) -> None:
        loss, _ = weighted_loss({"main": self.predict(h, mask)}, y, {"main": 1.0})
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, h: dict, mask: dict, y: torch.Tensor) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        self.step(h, mask, y)
        self.wall.append(time.perf_counter() - w0)
        self.cpu.append(time.process_time() - c0)

    def saved_bytes(self, h: dict, mask: dict) -> int:
        """Bytes autograd keeps for the backward pass of one forward: each storage once, leaving out
        the inputs and the parameters (they exist anyway)."""
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.predict(h, mask).sum()
        kept = list(h.values()) + list(mask.values()) + self.params
        existing = {x.untyped_storage().data_ptr() for x in kept}
        return sum(v for k, v in seen.items() if k not in existing)

    def n_params(self) -> int:
        return count_params(self.fusion) + count_params(self.head)


def step_costs(args: argparse.Namespace) -> None:
    """The step-time and memory table (section `fusion`)."""
    torch.set_num_threads(1)
    h, mask, y = batch(args.batch)
    load0 = os.getloadavg()[0]
    contenders = [Contender(*c) for c in CONTENDERS]
    for c in contenders:  # warm-up
        c.step(h, mask, y)
    for _ in range(args.repeats):  # interleaved: one step of each in turn
        for c in contenders:
            c.timed(h, mask, y)
    ref_cpu = statistics.median(contenders[0].cpu)
    mib = 1024 * 1024
    rows = ["| fusion | options | wall ms/step | CPU ms/step | CPU vs TCMF | saved activations MiB | "
            "params+grads+Adam MiB | parameters (fusion + head) | forward GFLOPs |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in contenders:
        wall, cpu = statistics.median(c.wall), statistics.median(c.cpu)
        flops = count_flops(c.fusion, (h, mask))
        rows.append(f"| {c.label} | {c.note} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | {cpu / ref_cpu:.2f}× | "
                    f"{c.saved_bytes(h, mask) / mib:.1f} | {16 * c.n_params() / mib:.1f} | {c.n_params():,} | "
                    f"{flops / 1e9:.3f} |")
    table = "\n".join(rows)
    spread = max(max(c.wall) / min(c.wall) for c in contenders)
    body = (f"Batch {args.batch}, shapes text 39 × 768, audio 400 × 33, visual 55 × 709 (the released KEBR "
            f"features; BERT-base width), a quarter of the batch padded to 3/4 length. A step is fusion + "
            f"main head (d → 256 → 1) forward, L1, backward, Adam; encoders left out. One thread, "
            f"{args.repeats} interleaved repeats, medians (largest max/min spread of one contender: "
            f"{spread:.2f}×). FLOPs: forward matrix products only (torch.utils.flop_counter). "
            f"Memory: autograd's saved tensors for one step, and 16 bytes per trainable parameter. "
            f"torch {torch.__version__}, {os.cpu_count()} cores shared with other work (load average "
            f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: compare CPU times, "
            f"wall times carry the contention).\n\n{table}\n")
    write_section("fusion", "Fusions: step time and memory per fusion (CPU, batch 32)", body)



# --- which fusion recovers the most --------------------------------------------------------------

SHARES = {"text": 0.5, "audio": 0.3, "visual": 0.2}  # variance of each part of the label (sum 1)
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]  # value by position
FILLER = ["the", "film", "was", "we", "saw", "it", "today", "and", "then", "a"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WIDTH = 8  # audio and visual frame width
FUSIONS = ["tcmf", "sf", "tfn", "mult", "mmml"]
SEES = {"mmml": "text, audio"}  # MMML fuses text and audio only; the others all three
NORMAL_MAE = math.sqrt(2 / math.pi)  # E|x| for x ~ N(0, 1)


def word_values() -> list[float]:
    """Evenly spaced values of the sentiment words, scaled to variance SHARES["text"] (each word equally likely)."""
    raw = [2 * i / (len(WORDS) - 1) - 1 for i in range(len(WORDS))]
    scale = math.sqrt(SHARES["text"] / statistics.fmean(x * x for x in raw))
    return [x * scale for x in raw]


def make_folder(root: Path, clips: int, seed: int = 0) -> list[dict[str, float]]:
    """A kebr-data folder (plan, acoustic, visual tables) of `clips` labelled clips: label = t + a + v
    (splits train/valid/test 3:1:1). Audio frames are a·(+1, −1, +1, ...) + N(0, 0.5²) noise, visual
    frames v·(+1, −1, ...) + N(0, 0.5²): a pattern of zero mean across the frame's dimensions, as a
    frame-wide offset would be erased by a per-frame LayerNorm (TCMF's LN_m).
    Returns the parts (text, audio, visual) and label of each test clip."""
    import numpy as np

    from kebr_data.mmsa_import import with_width
    from kebr_data.schema import ACOUSTIC, PLAN, VISUAL
    from kebr_data.storage.commit import commit_plan_marker, commit_rows
    from kebr_data.storage.layout import OutputDir

    rng = np.random.default_rng(seed)
    values = word_values()
    pattern = np.resize([1.0, -1.0], WIDTH)  # zero mean across the frame: a per-frame LayerNorm keeps it
    out, size = OutputDir(root), 100
    root.mkdir(parents=True, exist_ok=True)
    shards, test = {}, []
    for k, start in enumerate(range(0, clips, size)):
        plan, audio, visual = [], [], []
        for i in range(start, min(clips, start + size)):
            w = int(rng.integers(len(WORDS)))
            a, v = rng.normal(0, math.sqrt(SHARES["audio"])), rng.normal(0, math.sqrt(SHARES["visual"]))
            words = list(rng.choice(FILLER, size=5))
            words.insert(int(rng.integers(6)), WORDS[w])
            cid = f"clip{i:05d}"
            split = ("train", "train", "train", "valid", "test")[i % 5]
            plan.append({"clip_id": cid, "status": "ok", "split": split, "label": float(values[w] + a + v),
                         "given_text": " ".join(words), "source": "manifest"})
            if split == "test":
                test.append({"text": values[w], "audio": a, "visual": v, "label": float(values[w] + a + v)})
            ta, tv = int(rng.integers(20, 41)), int(rng.integers(10, 21))
            audio.append({"clip_id": cid, "status": "ok", "recipe": "synthetic", "frame_rate": 100.0, "num_frames": ta,
                          "features": (a * pattern + 0.5 * rng.standard_normal((ta, WIDTH))).astype(np.float32)})
            visual.append({"clip_id": cid, "status": "ok", "backend": "synthetic", "fps": 25.0, "num_frames": tv,
                           "features": (v * pattern + 0.5 * rng.standard_normal((tv, WIDTH))).astype(np.float32),
                           "success": np.ones(tv, bool), "confidence": np.ones(tv, np.float32), "face_ratio": 1.0})
        shards[f"{k:05d}"] = commit_rows(out, "plan", k, plan, PLAN, "bench")
        for stage, schema, rows in (("acoustic", ACOUSTIC, audio), ("visual", VISUAL, visual)):
            commit_rows(out, stage, k, rows, with_width(schema, WIDTH), "bench", shards[f"{k:05d}"]["sha256"])
    commit_plan_marker(out, shards, "synthetic", size)
    return test


def make_encoder(folder: Path) -> Path:
    """A tiny random BERT (width 32, 1 layer) whose WordPiece vocabulary holds the folder's words."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = SPECIAL + WORDS + FILLER
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32)).save_pretrained(folder)
    return folder


def sweep_rows(grid: str, shards: Path, out: Path) -> list[dict[str, str]]:
    """Run one grid (TOML text) with `kebr-train sweep`'s Python API; its sweep.csv rows."""
    from kebr_model.sweeps import load_sweep, run_sweep

    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.toml").write_text(grid)
    run_sweep(load_sweep(out / "grid.toml"), shards, out, echo=lambda line: print(line, file=sys.stderr))
    return list(csv.DictReader((out / "sweep.csv").open()))


def ceiling(seen: list[str], test: list[dict[str, float]]) -> tuple[float, float]:
    """(MAE, Corr) on the test clips of the oracle that knows the parts of `seen` exactly and predicts
    their sum (the best predictor of label = t + a + v from them: the rest has mean and median 0)."""
    import numpy as np

    pred = np.array([sum(clip[m] for m in seen) for clip in test])
    label = np.array([clip["label"] for clip in test])
    return float(np.abs(pred - label).mean()), float(np.corrcoef(pred, label)[0, 1])


def expected(seen: list[str]) -> tuple[float, float]:
    """The oracle's expected (MAE, Corr) over the population: the unread parts are N(0, s²), s² their
    shares, so MAE = s·sqrt(2/π) and Corr = sqrt(1 - s²)."""
    rest = sum(v for m, v in SHARES.items() if m not in seen)
    return math.sqrt(rest) * NORMAL_MAE, math.sqrt(1 - rest)


def recovery(args: argparse.Namespace) -> None:
    """The fusion × seed sweep on the synthetic task (section `fusion-recovery`)."""
    torch.set_num_threads(1)
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        shards = work / "shards"
        test = make_folder(shards, args.clips)
        encoder = make_encoder(work / "bert")
        train = (f'[sweep]\ncommand = "finetune"\nseeds = [1, 2, 3]\n[train]\nencoder = {json.dumps(str(encoder))}\n'
                 f"epochs = {args.epochs}\nbatch_size = 32\nlayers = 1\nuse_mcc = false\nlr_encoder = 1e-3\n"
                 f"lr_other = 1e-3\ncheckpoint_every = 0\nkeep_last = 1\nmax_text_tokens = 16\n")
        fused = sweep_rows(train + f"[grid]\nfusion = {json.dumps(FUSIONS)}\n", shards, work / "fusions")
        refs = sweep_rows(train + 'fusion = "sf"\n[grid]\n"modalities.use" = ["t", "ta"]\n', shards, work / "refs")
    wall = time.monotonic() - t0

    def cell(row: dict[str, str], metric: str) -> str:
        return f"{float(row[metric + '_mean']):.3f} ± {float(row[metric + '_std']):.3f}"

    rows = ["| model | reads | oracle MAE (expected) | MAE (mean ± std, 3 seeds) | oracle Corr (expected) | "
            "Corr (mean ± std) | recovered (Corr / oracle) | parameters |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    entries = [(f"`{r['fusion']}`", SEES.get(r["fusion"], "text, audio, visual"), r) for r in fused]
    reads = {"t": "text", "ta": "text, audio"}
    entries += [(f"`sf`, modalities.use = {r['modalities.use']}", reads[r["modalities.use"]], r) for r in refs]
    for name, reads, r in entries:
        (mae, corr), (e_mae, e_corr) = ceiling(reads.split(", "), test), expected(reads.split(", "))
        rows.append(f"| {name} | {reads} | {mae:.3f} ({e_mae:.3f}) | {cell(r, 'MAE')} | {corr:.3f} ({e_corr:.3f}) | "
                    f"{cell(r, 'Corr')} | {float(r['Corr_mean']) / corr:.2f} | {int(r['params']):,} |")
    table = "\n".join(rows)
    body = (f"Which fusion recovers the most of a label whose parts each modality carries: label = t + a + v, "
            f"independent, with variances {SHARES['text']} (text: the value of the sentence's one number word, 10 "
            f"evenly spaced values), {SHARES['audio']} (audio: a·(+1, −1, +1, ...) in each of 20-40 frames of "
            f"width {WIDTH}, noise σ 0.5) and {SHARES['visual']} (visual: v·(+1, −1, ...) in 10-20 frames, "
            f"noise σ 0.5); "
            f"the pattern has zero mean across a frame's dimensions because a frame-wide offset is erased by a "
            f"per-frame LayerNorm (TCMF's LN_m: a first version of this bench, with offsets, left TCMF at text-only "
            f"level, Corr 0.57). {args.clips} clips, "
            f"train/valid/test 3:1:1 ({args.clips // 5} test clips). Each fusion fine-tunes with `kebr-train sweep` "
            f"(Python API), seeds 1, 2, 3: a tiny random BERT (width 32, 1 layer) as the text encoder, "
            f"{args.epochs} epochs, batch 32, Adam 1e-3 for everything, L1, no MCC, 1-layer TCMF, the other fusions "
            f"at their defaults; the model selected on the validation loss, test metrics reported. The oracle of "
            f"a model knows exactly the parts it reads and predicts their sum (the best predictor from them), "
            f"measured on the same test clips; in brackets its expectation (the unread parts are N(0, s²): "
            f"MAE = s·sqrt(2/π), Corr = sqrt(1 − s²)). MMML fuses text and audio only (its "
            f"paper's design), so its oracle is that of text + audio; the references (sf over text only and over "
            f"text + audio) show what one and two modalities give here. Std over seeds is the sample std (n − 1). "
            f"One thread, {wall / 60:.1f} min in all; torch {torch.__version__}, {os.cpu_count()} cores shared "
            f"(load average {load0:.1f} at the start).\n\n{table}\n")
    write_section("fusion-recovery", "Fusions: which recovers the most (synthetic task, 3 seeds)", body,
                  script="fusion.py")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--recovery", action="store_true", help="the synthetic which-fusion-recovers-most sweep")
    ap.add_argument("--epochs", type=int, default=20, help="--recovery: epochs per run")
    ap.add_argument("--clips", type=int, default=400, help="--recovery: clips in the synthetic folder")
    ap.add_argument("--out", help="--recovery: keep the folder, runs and sweep tables here (default: a temp folder)")
    args = ap.parse_args()
    if args.recovery:
        recovery(args)
    else:
        step_costs(args)


if __name__ == "__main__":
    main()
