"""The grid of `kebr-train sweep`: a grid over training options and seeds, each point-seed its own resumable
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

import copy
import hashlib
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kebr_data.config import did_you_mean
from kebr_data.errors import KebrError

from ..config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COMMANDS = ("pretrain", "finetune", "train")
SWEEP_KEYS = ("command", "seeds", "config", "init", "plot_x", "plot_metric")
TABLES = ("sweep", "grid", "train")
CONFIG = "config"  # the grid key whose values are trainer config files (e.g. pipelines/systems/*.toml)
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
    #: point name -> its trainer config, loaded once per sweep (`config`)
    loaded: dict[str, TrainConfig] = field(default_factory=dict, repr=False, compare=False)

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

    def config(self, point: Point, seed: int | None = None) -> TrainConfig:
        """The trainer config of `point` with `seed` (default: the first seed), a fresh copy each call: the
        files and overrides are read once per point and sweep, not once per seed, cost and check."""
        if point.name not in self.loaded:
            self.loaded[point.name] = TrainConfig.load(self.config_files(point), self.overrides(point, self.seeds[0]),
                                                       task=task_of(self))
        cfg = copy.deepcopy(self.loaded[point.name])
        cfg.seed = self.seeds[0] if seed is None else seed
        return cfg

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
    for point in sweep.points():
        try:
            sweep.config(point)
        except (ValueError, KebrError) as exc:  # the trainer's own checks: unknown key, type, range, choice
            raise SweepError(f"{path}: {_culprit(sweep, point)}: {exc}") from None
    return sweep


def _culprit(sweep: Sweep, point: Point) -> str:
    """Where a point's config error comes from: the [train] table, one grid value, or only their mix."""
    checks = [("[train]", Point("base", {}))]
    checks += [(f"[grid] {k} = {toml_value(v)}", Point(k, {k: v})) for k, v in point.values.items()]
    for where, part in checks:
        try:
            TrainConfig.load(sweep.config_files(part), sweep.overrides(part, sweep.seeds[0]), task=task_of(sweep))
        except (ValueError, KebrError):
            return where
    return f"grid point {point.name}"


def task_of(sweep: Sweep) -> str | None:
    """The trainer task a sweep's command fixes (None: `train` takes the config's)."""
    return sweep.command if sweep.command != "train" else None


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
