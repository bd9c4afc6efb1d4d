"""Training-step cost of each fusion on CPU at batch 32, at the released KEBR feature shapes
(text 39 × 768, BERT-base's width; audio 400 × 33; visual 55 × 709), side by side in one run.

A step is fusion + main head forward, L1 loss, backward and an Adam step (the encoders are left
out: they are the same for every fusion). Steps are interleaved (one step of each fusion in turn)
and repeated; the table gives medians of wall and CPU time, ratios to TCMF (KEBR's fusion), the
activation memory autograd keeps for the backward pass (saved tensors, counted once per storage),
the memory of parameters + gradients + Adam state (16 bytes per trainable parameter), parameter
count and forward FLOPs (torch.utils.flop_counter). One thread, as the local executor runs.

    python bench/fusion.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from kebr_model.fusions import count_flops, count_params, make_fusion  # noqa: E402
from kebr_model.heads import Heads, weighted_loss  # noqa: E402

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
        self.heads = Heads(self.fusion.out_dim, widths)
        self.params = list(self.fusion.parameters()) + list(self.heads.parameters())
        self.opt = torch.optim.Adam(self.params, lr=1e-4)
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def step(self, h: dict, mask: dict, y: torch.Tensor) -> None:
        loss, _ = weighted_loss(self.heads(self.fusion(h, mask)), y, {"main": 1.0})
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
            self.heads(self.fusion(h, mask)).get("main").sum()
        kept = list(h.values()) + list(mask.values()) + self.params
        existing = {x.untyped_storage().data_ptr() for x in kept}
        return sum(v for k, v in seen.items() if k not in existing)

    def n_params(self) -> int:
        return count_params(self.fusion) + count_params(self.heads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
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
    print(table)
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


if __name__ == "__main__":
    main()
