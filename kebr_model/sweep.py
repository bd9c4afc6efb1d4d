"""`kebr-train sweep`: a grid over training options and seeds, each point-seed its own resumable
`kebr-train` run, then one mean ± std table (sweep.md, sweep.csv) with parameter and FLOP counts,
and a plot of one metric against the swept option (sweep.png).

The grid file (TOML):

    [sweep]
    command = "finetune"                    # pretrain | finetune | train
    seeds = [1, 2, 3]
    config = ["pipelines/train_mosi.toml"]  # trainer configs every point starts from
    plot_x = "mcc_g"                        # default: the first grid key
    plot_metric = "Corr"                    # default: Corr, else the first metric
    [train]                                 # options every point shares (as --set)
    layers = 1
    [grid]                                  # the cartesian product of these lists
    mcc_g = [-0.5, -0.25, 0.0, 0.25, 0.5]   # any --set key; `config` takes trainer config files

Each point-seed runs in OUT/<point>/seed-N/ and is done when its sweep_result.json exists.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import re
import shlex
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kebr_data.config import did_you_mean
from kebr_data.errors import KebrError
from kebr_data.storage.atomic import atomic_write, atomic_write_bytes, open_append_text, read_owned_text, real_dir

from .config import TrainConfig
from .jsonout import dumps, write_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COMMANDS = ("pretrain", "finetune", "train")
SWEEP_KEYS = ("command", "seeds", "config", "init", "plot_x", "plot_metric")
TABLES = ("sweep", "grid", "train")
CONFIG = "config"  # the grid key whose values are trainer config files (e.g. pipelines/systems/*.toml)
RESULT = "sweep_result.json"  # a point-seed's final metrics: its presence means "finished, not rerun"
COST = "model_cost.json"
# reported first, in this order (MMSA's), then any other metric alphabetically
ORDER = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "Mult_acc_5", "MAE", "Corr",
         "loss", "l1", "mcc")
SAFE = re.compile(r"[^A-Za-z0-9._=+,-]")


class SweepError(KebrError):
    """A grid file that cannot run, or points whose runs failed (the others are kept)."""


@dataclass
class Point:
    name: str
    values: dict[str, Any]  # grid key -> this point's value


@dataclass
class Sweep:
    command: str = "finetune"
    seeds: list[int] = field(default_factory=lambda: [0])
    configs: list[Path] = field(default_factory=list)
    init: Path | None = None
    fixed: dict[str, Any] = field(default_factory=dict)       # the [train] table, dotted keys
    grid: dict[str, list[Any]] = field(default_factory=dict)
    plot_x: str | None = None
    plot_metric: str | None = None

    def points(self) -> list[Point]:
        """The cartesian product of the grid lists, in file order, each with a stable safe name."""
        keys = list(self.grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]
        names = [point_name(c) for c in combos]
        folded = [n.lower() for n in names]  # case-insensitive file systems
        names = [n if folded.count(n.lower()) == 1 else f"{n}~{_digest(c)}" for n, c in zip(names, combos)]
        return [Point(n, c) for n, c in zip(names, combos)]

    def overrides(self, point: Point, seed: int) -> list[str]:
        """`key=value` (TOML values) for `--set`: the [train] table, the point's values (but `config`),
        the seed."""
        values = {**self.fixed, **{k: v for k, v in point.values.items() if k != CONFIG}, "seed": seed}
        return [f"{k}={toml_value(v)}" for k, v in values.items()]

    def config_files(self, point: Point) -> list[Path]:
        """The trainer configs of a point: [sweep] config, then the point's `config` grid value(s)."""
        extra = point.values.get(CONFIG, [])
        return self.configs + [Path(c) for c in (extra if isinstance(extra, list) else [extra])]


def _digest(values: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, list):
        return "+".join(_text(v) for v in value) or "none"
    return str(value)


def point_name(values: dict[str, Any]) -> str:
    """`key=value,key=value` (lists joined with +): the same values always give the same name; a
    name whose characters had to be replaced (anything but letters, digits and ._=+,-), or a long
    one, gets a digest of the values so that two points never share a folder. Never `..` or a path."""
    if not values:
        return "base"
    raw = ",".join(f"{k}={_text(_stems(v) if k == CONFIG else v)}" for k, v in values.items())
    safe = SAFE.sub("_", raw)
    if safe != raw or len(safe) > 80:
        safe = f"{safe[:80]}~{_digest(values)}"
    return safe


def _stems(value: Any) -> Any:
    """A config grid value named by its file name(s) without folder and suffix."""
    return [Path(v).stem for v in value] if isinstance(value, list) else Path(value).stem


def toml_value(value: Any) -> str:
    """A value as TOML source (what `--set key=value` parses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise SweepError(f"grid value {value!r}: only finite numbers")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise SweepError(f"grid value {value!r}: not a TOML value")


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_sweep(path: Path) -> Sweep:
    """Read and check a grid file; every point's options go through the trainer's own config
    validation (unknown keys with "did you mean", wrong types) before anything runs."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML ({exc})") from None
    for name in doc:
        if name not in TABLES:
            raise SweepError(f"{path}: unknown table [{name}]{did_you_mean(name, list(TABLES))}; "
                             f"a grid file has {', '.join(f'[{t}]' for t in TABLES)}")
    head = doc.get("sweep", {})
    for key in head:
        if key not in SWEEP_KEYS:
            raise SweepError(f"{path}: unknown [sweep] key {key!r}{did_you_mean(key, list(SWEEP_KEYS))}")
    sweep = Sweep(command=head.get("command", "finetune"), seeds=head.get("seeds", [0]),
                  configs=[Path(c) for c in head.get("config", [])],
                  init=Path(head["init"]) if head.get("init") else None,
                  fixed=_flatten(doc.get("train", {})), grid=_flatten(doc.get("grid", {})),
                  plot_x=head.get("plot_x"), plot_metric=head.get("plot_metric"))
    if sweep.command not in COMMANDS:
        raise SweepError(f"{path}: [sweep] command must be one of {', '.join(COMMANDS)}, got {sweep.command!r}")
    if (not isinstance(sweep.seeds, list) or not sweep.seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in sweep.seeds)
            or len(set(sweep.seeds)) != len(sweep.seeds)):
        raise SweepError(f"{path}: [sweep] seeds must be a list of distinct integers, got {sweep.seeds!r}")
    for key, values in sweep.grid.items():
        if key == "seed":
            raise SweepError(f"{path}: seeds go in [sweep] seeds = [...], not in [grid]")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: [grid] {key} must be a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"{path}: [grid] {key} lists a value twice")
    if sweep.plot_x is not None and sweep.plot_x not in sweep.grid:
        hint = did_you_mean(sweep.plot_x, list(sweep.grid))
        raise SweepError(f"{path}: plot_x {sweep.plot_x!r} is not a grid key{hint}")
    files = sweep.grid.get(CONFIG, [])
    for value in files:
        if not all(isinstance(v, str) for v in (value if isinstance(value, list) else [value])):
            raise SweepError(f"{path}: [grid] config lists config files (or lists of them), got {value!r}")
    named = [point_name({CONFIG: v}) for v in files]
    if len(set(named)) != len(named):
        raise SweepError(f"{path}: [grid] config: two files share a name ({', '.join(named)}): rename one")
    extra = [Path(c) for v in files for c in (v if isinstance(v, list) else [v])]
    for c in sweep.configs + extra + ([sweep.init] if sweep.init else []):
        if not c.exists():
            raise SweepError(f"{path}: {c} does not exist (paths are relative to the current folder)")
    checks = [("[train]", Point("base", {}))]
    checks += [(f"[grid] {k} = {toml_value(v)}", Point(k, {k: v})) for k, values in sweep.grid.items() for v in values]
    checks += [(f"grid point {p.name}", p) for p in sweep.points()]
    for where, point in checks:
        try:
            TrainConfig.load(sweep.config_files(point), sweep.overrides(point, sweep.seeds[0]), task=_task(sweep))
        except (ValueError, KebrError) as exc:  # the trainer's own checks: unknown key, type, range, choice
            raise SweepError(f"{path}: {where}: {exc}") from None
    return sweep


def run_args(sweep: Sweep, point: Point, seed: int, shards: Path, out: Path) -> list[str]:
    """The `kebr-train` command line one point-seed's run amounts to (what --dry-run prints)."""
    args = ["kebr-train", sweep.command, "--shards", str(shards), "--out", str(out), "--resume", "auto"]
    for c in sweep.config_files(point):
        args += ["--config", str(c)]
    if sweep.init is not None:
        args += ["--init", str(sweep.init)]
    for text in sweep.overrides(point, seed):
        args += ["--set", text]
    return args


def _read_json(path: Path) -> Any | None:
    """A JSON file the sweep wrote (a run's result, a point's cost), never read through a symlink planted
    there: None when it is absent or not a regular file (then rewritten, replacing what was planted)."""
    text = read_owned_text(path)
    return None if text is None else json.loads(text)


def run_point(sweep: Sweep, point: Point, seed: int, shards: Path, run_dir: Path,
              cost: Path | None = None) -> tuple[dict | None, str]:
    """Run (or resume) one point-seed in this process, as `kebr-train` would (its stderr in
    run_dir/train.log); its result (step, best_valid, test metrics) goes to run_dir/sweep_result.json.
    With `cost`, the model's parameter and FLOP counts are written there before it trains. A failed
    run is reported, not raised. Returns (result or None, what happened)."""
    from .cli import split_defaults, train_run

    done = run_dir / RESULT
    if (finished := _read_json(done)) is not None:
        return finished, "finished before, skipped"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_append_text(run_dir / "train.log", run_dir) as log, contextlib.redirect_stderr(log):

        def count(trainer: Any) -> None:  # a failed count is logged; the run still trains
            try:
                write_json(cost, trainer_cost(trainer))
            except Exception:  # noqa: BLE001 - costs are a side table, never the run's failure
                print("parameter and FLOP count failed (the run goes on):", file=log)
                traceback.print_exc(file=log)

        try:
            cfg = TrainConfig.load(sweep.config_files(point), sweep.overrides(point, seed), task=_task(sweep))
            split_defaults(cfg)
            result = train_run(cfg, shards, run_dir, sweep.init, "auto", before_fit=count if cost else None,
                               progress=False)
        except Exception as exc:  # noqa: BLE001 - this run's failure, whatever it is; the sweep goes on
            if not isinstance(exc, KebrError):
                traceback.print_exc(file=log)
            print(f"error: {exc}", file=log)
            return None, f"failed ({type(exc).__name__}: {exc}; {run_dir / 'train.log'})"
    result = json.loads(dumps(result))  # as the command prints it: strict JSON (no infinity)
    train_loss = last_epoch_loss(run_dir / "metrics.jsonl")
    if train_loss is not None:
        result["train_loss"] = train_loss
    write_json(done, result)
    return result, "done"


def last_epoch_loss(metrics: Path) -> float | None:
    """Mean training loss over the last epoch's steps in a run's metrics.jsonl (what a pre-training
    sweep without a validation split reports)."""
    text = read_owned_text(metrics)
    if text is None:
        return None
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train" and isinstance(r.get("loss"), (int, float))]
    if not train:
        return None
    last = [r["loss"] for r in train if r.get("epoch") == train[-1].get("epoch")]
    return statistics.mean(last)


def metrics_of(result: dict) -> dict[str, float]:
    """The numeric test metrics of a run result (clip counts left out), plus the last epoch's mean
    training loss and best_valid (the selected validation loss)."""
    out = {k: float(v) for k, v in (result.get("test") or {}).items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "samples"}
    for key in ("train_loss", "best_valid"):
        if isinstance(result.get(key), (int, float)) and not isinstance(result.get(key), bool):
            out[key] = float(result[key])
    return out


def aggregate(results: list[dict]) -> dict[str, tuple[float, float | None, int]]:
    """metric -> (mean, sample standard deviation (n - 1; None for one seed), number of seeds)."""
    values: dict[str, list[float]] = {}
    for result in results:
        for key, value in metrics_of(result).items():
            values.setdefault(key, []).append(value)
    return {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else None, len(v)) for k, v in values.items()}


def metric_order(keys: set[str]) -> list[str]:
    last = [k for k in ("train_loss", "best_valid") if k in keys]
    return [k for k in ORDER if k in keys] + sorted(keys - set(ORDER) - set(last)) + last


def trainer_cost(trainer: Any) -> dict[str, Any]:
    """Parameters (all, trainable) and forward FLOPs per clip of a trainer's model, counted with
    torch.utils.flop_counter on the first batch of the test split (finetune) or the training split,
    at the lengths the loader pads that batch to. Leaves the model's mode and the RNGs as they were."""
    import torch

    from .fusions import count_flops, count_params

    cfg = trainer.cfg
    split = cfg.test_split if cfg.task == "finetune" else cfg.train_split
    batch = next(iter(trainer.batches(split, 0, shuffle=False)))
    mode = trainer.model.training
    with torch.random.fork_rng(devices=[]):
        trainer.model.eval()
        flops = count_flops(trainer.model, (trainer._to_device(batch), cfg.task))
    trainer.model.train(mode)
    clips = len(batch["label"])
    return {"params": count_params(trainer.model), "trainable_params": count_params(trainer.model, True),
            "flops_per_clip": flops // clips, "flops_batch_clips": clips}


def model_cost(cfg: TrainConfig, shards: Path) -> dict[str, Any]:
    """trainer_cost of the model a run with `cfg` builds (for points whose runs all finished before)."""
    import tempfile

    from .cli import split_defaults
    from .train import Trainer

    split_defaults(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        return trainer_cost(Trainer(cfg, shards, Path(tmp)))


def _point_cost(sweep: Sweep, point: Point, shards: Path, point_dir: Path) -> dict[str, Any]:
    cached = point_dir / COST
    if (known := _read_json(cached)) is not None:
        return known
    cfg = TrainConfig.load(sweep.config_files(point), sweep.overrides(point, sweep.seeds[0]), task=_task(sweep))
    cost = model_cost(cfg, shards)
    write_json(cached, cost)
    return cost


def _task(sweep: Sweep) -> str | None:
    return sweep.command if sweep.command != "train" else None


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def table_rows(sweep: Sweep, points: list[Point], results: dict[str, list[dict]],
               costs: dict[str, dict]) -> tuple[list[str], list[dict[str, Any]]]:
    """(metric columns, one row per point: name, grid values, seeds, costs, metric -> (mean, std, n))."""
    stats = {p.name: aggregate(results.get(p.name, [])) for p in points}
    metrics = metric_order({k for s in stats.values() for k in s})
    rows = [{"point": p, "seeds": len(results.get(p.name, [])), "cost": costs.get(p.name, {}),
             "stats": stats[p.name]} for p in points]
    return metrics, rows


def markdown(sweep: Sweep, metrics: list[str], rows: list[dict[str, Any]]) -> str:
    keys = list(sweep.grid)
    head = ["point", *keys, "seeds", "params", "trainable", "FLOPs/clip", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * len(keys) + "---:|" * (len(head) - 1 - len(keys))]
    for row in rows:
        cost = row["cost"]
        shown = {k: _stems(v) if k == CONFIG else v for k, v in row["point"].values.items()}
        cells = [row["point"].name, *(_text(shown[k]) for k in keys),
                 f"{row['seeds']}/{len(sweep.seeds)}",
                 *(_human(cost[c]) if c in cost else "-" for c in ("params", "trainable_params", "flops_per_clip"))]
        for m in metrics:
            mean, std, _ = row["stats"].get(m, (None, None, 0))
            cells.append("-" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(sweep: Sweep, metrics: list[str], rows: list[dict[str, Any]]) -> str:
    keys = list(sweep.grid)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["point", *keys, "seeds", "params", "trainable_params", "flops_per_clip",
                     *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
    for row in rows:
        cost = row["cost"]
        cells = [row["point"].name, *(json.dumps(row["point"].values[k]) if isinstance(row["point"].values[k], list)
                                      else row["point"].values[k] for k in keys), row["seeds"],
                 *(cost.get(c, "") for c in ("params", "trainable_params", "flops_per_clip"))]
        for m in metrics:
            mean, std, _ = row["stats"].get(m, (None, None, 0))
            cells += ["" if mean is None else repr(mean), "" if std is None else repr(std)]
        writer.writerow(cells)
    return buf.getvalue()


def plot_sweep(sweep: Sweep, metrics: list[str], rows: list[dict[str, Any]], path: Path) -> str | None:
    """sweep.png: the plot metric (mean, std as error bars) against the plot key, one line per
    combination of the other grid keys. Returns the metric plotted, None when there is nothing to plot."""
    metric = sweep.plot_metric or ("Corr" if "Corr" in metrics else (metrics[0] if metrics else None))
    if metric is None or not sweep.grid:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = sweep.plot_x or next(iter(sweep.grid))
    xs = sweep.grid[x_key]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    position = {json.dumps(v): (v if numeric else i) for i, v in enumerate(xs)}
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for row in rows:
        values = row["point"].values
        mean, std, _ = row["stats"].get(metric, (None, None, 0))
        if mean is None:
            continue
        label = ",".join(f"{k}={_text(_stems(v) if k == CONFIG else v)}" for k, v in values.items()
                         if k != x_key) or metric
        lines.setdefault(label, []).append((position[json.dumps(values[x_key])], mean, std or 0.0))
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, pts in lines.items():
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    label=label)
    if not numeric:
        ax.set_xticks(range(len(xs)), [_text(_stems(v) if x_key == CONFIG else v) for v in xs])
    ax.set(xlabel=x_key, ylabel=f"{metric} (mean ± std over seeds)", title=f"{metric} vs {x_key}")
    if len(lines) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)
    return metric


def run_sweep(sweep: Sweep, shards: Path, out: Path, echo: Callable[[str], None] = print,
              dry_run: bool = False) -> str:
    """Run every point-seed not finished yet (in file order), then write out/sweep.md, sweep.csv,
    sweep.png. Returns the Markdown table; raises SweepError naming failed runs (after the table
    of those that finished is written)."""
    points = sweep.points()
    out = Path(out)
    if dry_run:  # each run as the kebr-train command line it amounts to
        return "\n".join(shlex.join(run_args(sweep, p, s, shards, out / p.name / f"seed-{s}"))
                         for p in points for s in sweep.seeds)
    from kebr_data.storage.lock import OutputLock

    with OutputLock(out / "_lock", "kebr-train sweep"):  # two sweeps in one folder would run the same points
        return _run_all(sweep, points, shards, out, echo)


def _run_all(sweep: Sweep, points: list[Point], shards: Path, out: Path, echo: Callable[[str], None]) -> str:
    total = len(points) * len(sweep.seeds)
    results: dict[str, list[dict]] = {}
    costs: dict[str, dict] = {}
    failed = []
    i = 0
    for point in points:
        point_dir = out / point.name
        if point_dir.resolve().parent != out.resolve():
            raise SweepError(f"grid point name {point.name!r} leaves {out}")  # cannot happen with point_name
        for seed in sweep.seeds:
            i += 1
            t0 = time.monotonic()
            counted = _read_json(point_dir / COST) is not None  # counted on the first run built
            cost = None if counted else point_dir / COST
            run_dir = real_dir(out, point_dir / f"seed-{seed}")  # real folders in --out, never a planted symlink
            result, what = run_point(sweep, point, seed, shards, run_dir, cost)
            echo(f"[{i}/{total}] {point.name} seed {seed}: {what} ({time.monotonic() - t0:.1f} s)")
            if result is None:
                failed.append(f"{point.name} seed {seed}")
            else:
                results.setdefault(point.name, []).append(result)
        if point.name in results:
            costs[point.name] = _point_cost(sweep, point, shards, point_dir)
    metrics, rows = table_rows(sweep, points, results, costs)
    table = markdown(sweep, metrics, rows)
    atomic_write_bytes(out / "sweep.md", (table + "\n").encode(), out)  # renamed into place: never through a symlink
    atomic_write_bytes(out / "sweep.csv", csv_text(sweep, metrics, rows).encode(), out)
    plotted = plot_sweep(sweep, metrics, rows, out / "sweep.png")
    echo(f"wrote {out / 'sweep.md'}, {out / 'sweep.csv'}" + (f", {out / 'sweep.png'} ({plotted})" if plotted else ""))
    if failed:
        raise SweepError(f"{len(failed)} of {total} runs failed ({'; '.join(failed)}); the table holds the others; "
                         "rerun the same command to retry them (finished runs are kept)")
    return table
