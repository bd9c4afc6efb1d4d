"""`kebr-train`: pre-train KEBR on kebr-data shards, fine-tune it on MOSI/MOSEI, evaluate.

    kebr-train pretrain --shards features/ --out runs/pretrain
    kebr-train finetune --shards mosi-features/ --init runs/pretrain --out runs/mosi --seeds 1,2,3
    kebr-train eval --shards mosi-features/ --run runs/mosi/seed-1 --split test
    kebr-train predict --run runs/mosi/seed-1 --src my-videos/ --out predictions/
    kebr-train analyse --shards mosi-features/ --run runs/mosi/seed-1
    kebr-train import-mmsa --pickle MOSI/unaligned.pkl --out mosi-features/ --trust-pickle
    kebr-train defaults

`kebr-train --shards ...` (no command) is `kebr-train train`, the task coming from the config.
torch is imported only when a command runs, so `--help` works without the `train` extra.
"""

from __future__ import annotations

import functools
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from kebr_data.errors import ConfigError, KebrError
from kebr_data.storage.atomic import atomic_write_bytes, real_dir

from .config import TrainConfig
from .jsonout import dumps, write_json

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
INSTALL = "pip install torch==2.13.0 && pip install 'kebr-toolkit[train]' (the `train` extra)"


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _needs_torch() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        _fail(f"kebr-train needs torch and transformers ({exc.name} is missing): {INSTALL}")


def _careful(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a command with torch checked first and toolkit errors printed as one line (exit 2)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except KebrError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:  # the machine's (a full disk, --out a file): one line naming the path
            from kebr_data.cli import os_error

            _fail(str(os_error(exc)), 2)
        except KeyboardInterrupt:
            _fail("interrupted; `--resume auto` continues from the last checkpoint", 130)
    return wrapper


def _load_config(config_files: tuple[Path, ...], overrides: tuple[str, ...], **values: Any) -> TrainConfig:
    try:
        return TrainConfig.load(config_files, overrides, **values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _summary(results: dict[int, dict]) -> str:
    """Mean ± std over seeds, as papers report."""
    from .evaluation.metrics import REPORTED

    lines = ["| metric | " + " | ".join(f"seed {s}" for s in results) + " | mean ± std |",
             "|---|" + "---:|" * (len(results) + 1)]
    keys = [k for k in dict.fromkeys(k for ks in REPORTED.values() for k in ks)
            if any(k in r.get("test", {}) for r in results.values())]
    for key in keys:
        values = [r["test"][key] for r in results.values() if r.get("test", {}).get(key) is not None]
        if not values:
            continue
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {key} | " + " | ".join(f"{v:.4f}" for v in values) +
                     f" | {statistics.mean(values):.4f} ± {std:.4f} |")
    return "\n".join(lines)


class DefaultsToTrain(click.Group):
    """`kebr-train --shards ...` without a command runs `train` (the form older scripts use); a first
    argument that is neither an option nor a command is click's "No such command ... Did you mean"."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in CONTEXT["help_option_names"]:
            args = ["train", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultsToTrain, context_settings=CONTEXT)
def main() -> None:
    """Train or evaluate KEBR (TCMF fusion + MCC loss) on kebr-data shards, or import MMSA pickles.

    Needs torch and the `train` extra: pip install torch==2.13.0 && pip install 'kebr-toolkit[train]'.
    `kebr-train COMMAND --help` shows each command's options.
    """


def _train_options(fn: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option("--shards", required=True, type=click.Path(path_type=Path),
                     help="A kebr-data output folder (plan + mask/acoustic/visual/asr stage tables)."),
        click.option("--out", required=True, type=click.Path(path_type=Path),
                     help="Run folder: metrics.jsonl, plots/, checkpoints/, _lock (held while a run trains there)."),
        click.option("--init", type=click.Path(exists=True, path_type=Path),
                     help="Start from this run or checkpoint (e.g. a pre-training run when fine-tuning)."),
        click.option("--config", "config_files", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="TOML file with a [train] table (see pipelines/train_*.toml)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a training option."),
        click.option("--seeds", help="Comma-separated seeds: one run each under OUT/seed-N and a mean ± std table."),
        click.option("--resume", type=click.Choice(["auto", "never"]), default="auto", show_default=True,
                     help="auto: continue from OUT's latest checkpoint when there is one (same settings and "
                          "data required; a damaged one falls back to the newest complete one); never: refuse an "
                          "OUT that already holds a run."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _train(task: str | None, shards: Path, out: Path, init: Path | None, config_files: tuple[Path, ...],
           overrides: tuple[str, ...], seeds: str | None, resume: str) -> None:
    _needs_torch()
    cfg = _load_config(config_files, overrides, task=task)
    if cfg.task not in ("pretrain", "finetune"):
        raise click.UsageError(f"task must be pretrain or finetune, got {cfg.task!r}")
    from .training.run import split_defaults, train_run

    split_defaults(cfg)
    if not seeds:
        click.echo(dumps(train_run(cfg, shards, out, init, resume), indent=2))
        return
    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        raise click.UsageError(f"--seeds takes comma-separated integers, got {seeds!r}") from None
    results = {}
    for seed in seed_list:
        cfg.seed = seed
        real_dir(out, out / f"seed-{seed}", create=False)  # a seed's run folder: a real folder inside --out
        results[seed] = train_run(cfg, shards, out / f"seed-{seed}", init, resume)
    table = _summary(results)
    atomic_write_bytes(out / "summary.md", (table + "\n").encode(), out)
    click.echo(table)


@main.command("train", context_settings=CONTEXT,
              short_help="Pre-train or fine-tune, the task from --task or the config.")
@click.option("--task", type=click.Choice(["pretrain", "finetune"]), help="Default: the config's (pretrain).")
@_train_options
@_careful
def train_cmd(task: str | None, **kwargs: Any) -> None:
    """Pre-train or fine-tune (the task from --task or the config), resuming OUT when it holds a run."""
    _train(task, **kwargs)


@main.command("pretrain", context_settings=CONTEXT, short_help="Pre-train on the masked sentiment word's intensity.")
@_train_options
@_careful
def pretrain_cmd(**kwargs: Any) -> None:
    """Pre-train: predict the masked sentiment word's intensity (needs the mask stage's table)."""
    _train("pretrain", **kwargs)


@main.command("finetune", context_settings=CONTEXT, short_help="Fine-tune on labelled clips and report test metrics.")
@_train_options
@_careful
def finetune_cmd(**kwargs: Any) -> None:
    """Fine-tune on labelled clips (splits train/valid/test by default) and report test metrics."""
    _train("finetune", **kwargs)


@main.command("eval", context_settings=CONTEXT, short_help="Evaluate a run's best checkpoint on one split.")
@click.option("--shards", required=True, type=click.Path(path_type=Path), help="A kebr-data output folder.")
@click.option("--run", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The run folder whose best (else latest) checkpoint is evaluated.")
@click.option("--split", default="test", show_default=True, help="The split to evaluate.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a training option.")
@click.option("--predictions", type=click.Path(dir_okay=False, path_type=Path),
              help="Per-clip predictions file; default RUN/predictions-SPLIT.parquet.")
@click.option("--tsne", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the split's pooled text/audio/visual/fused features with t-SNE into this PNG.")
@_careful
def eval_cmd(shards: Path, run: Path, split: str, overrides: tuple[str, ...], predictions: Path | None,
             tsne: Path | None) -> None:
    """Evaluate a run's best (else latest) checkpoint on one split: loss and the dataset's metrics as JSON,
    and one row per clip (clip_id, split, label, prediction, each unimodal head's prediction_<modality>, c_a,
    c_v) in a Parquet file. Holds RUN/_lock: refused while a run trains in RUN."""
    _needs_torch()
    from .training import checkpoint
    from .data import open_reader
    from .data.preflight import check_split
    from .training.run import run_lock
    from .training.train import Trainer

    ckpt = checkpoint.evaluated(run)
    with run_lock(run, f"kebr-train eval --run {run}"):  # never beside a training run of the folder
        saved = checkpoint.read_state(ckpt)["config"]
        cfg = _load_config((), overrides, **saved)
        data = open_reader(shards)  # the folder read once: preflight and trainer
        check_split(shards, data.inventory(cfg.task), split, "--split")
        trainer = Trainer(cfg, data, run)
        checkpoint.load(ckpt, trainer.model, restore_rng=False)
        rows: list[dict] = []
        result = trainer.evaluate(split, rows)
        write_predictions(predictions or run / f"predictions-{split}.parquet", rows, None if predictions else run)
        click.echo(dumps(result, indent=2))
        if tsne is not None:
            from .evaluation.tsne import plot_tsne, pooled_features

            found = pooled_features(trainer.model, trainer.batches(split, 0, shuffle=False),
                                    lambda batch: trainer.model(trainer._to_device(batch), cfg.task))
            plot_tsne(*found, tsne, seed=cfg.seed, title=f"{run.name}, split {split}")


def write_predictions(path: Path, rows: list[dict], within: Path | None = None) -> None:
    """Per-clip predictions as Parquet (clip_id, split, label, prediction, each unimodal head's
    `prediction_<modality>`, c_a, c_v), renamed into place (a symlink planted at `path` is replaced, never
    written through; `within`: the run folder holding it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kebr_data.storage.atomic import atomic_write

    heads = [k for k in (rows[0] if rows else {}) if k.startswith("prediction_")]  # predict's column names
    schema = pa.schema([("clip_id", pa.string()), ("split", pa.string()), ("label", pa.float32()),
                        *((c, pa.float32()) for c in ("prediction", *heads, "c_a", "c_v"))])
    table = pa.Table.from_pylist(rows, schema=schema)
    atomic_write(path, lambda fh: pq.write_table(table, fh), within)


@main.command("predict", context_settings=CONTEXT, short_help="Score new videos (or a features folder) with a run.")
@click.option("--run", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The fine-tuned run folder whose best (else latest) checkpoint scores the clips.")
@click.option("--src", multiple=True, type=click.Path(path_type=Path),
              help="Video/audio files (repeatable), a folder in any layout, or a manifest: the stages the model needs "
                   "run into OUT/cache with the settings its training shards were made with (resumable).")
@click.option("--shards", type=click.Path(path_type=Path),
              help="Instead of --src: an output folder whose stages were made with the training shards' settings.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Writes OUT/predictions.parquet and OUT/predictions.csv (and OUT/cache/ for --src).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="With --src: a kebr-data key that leaves the features as they were, e.g. a binary's path.")
@click.option("--json", "as_json", is_flag=True, help="Print the files, status counts and rows as JSON.")
@_careful
def predict_cmd(run: Path, src: tuple[Path, ...], shards: Path | None, out: Path, overrides: tuple[str, ...],
                as_json: bool) -> None:
    """Score clips with a fine-tuned run: one row per clip (status and reason, prediction, its classes,
    unimodal heads, c_a, c_v, transcript, run and checkpoint sha256). Features made with other settings
    than the training shards' are refused before any work."""
    _needs_torch()
    from .predict.command import predict_command

    predict_command(run, src, shards, out, overrides, as_json)


@main.command("analyse", context_settings=CONTEXT, short_help="Measure MCC's c_a, c_v and each modality's reliance.")
@click.option("--shards", required=True, type=click.Path(path_type=Path), help="A kebr-data output folder.")
@click.option("--run", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The run folder whose best (else latest) checkpoint is analysed.")
@click.option("--split", "splits", multiple=True, help="Splits to analyse (repeatable); default: the run's "
              "train, valid and test splits ('' = every clip for pre-training).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a training option.")
@_careful
def analyse_cmd(shards: Path, run: Path, splits: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Make MCC observable: c_a, c_v, Eq. 11's value and each modality's reliance (MAE growth when it is
    shuffled across the batch) per split, as JSON (also RUN/analysis.json). Holds RUN/_lock: refused while a
    run trains in RUN."""
    _needs_torch()
    from .training import checkpoint
    from .data import open_reader
    from .data.preflight import check_split
    from .evaluation.analyse import analyse_split
    from .training.run import run_lock
    from .training.train import Trainer

    ckpt = checkpoint.evaluated(run)
    with run_lock(run, f"kebr-train analyse --run {run}"):  # never beside a training run of the folder
        cfg = _load_config((), overrides, **checkpoint.read_state(ckpt)["config"])
        data = open_reader(shards)  # the folder read once: preflight and trainer
        inv = data.inventory(cfg.task)
        if not splits:
            splits = tuple(dict.fromkeys(s for s in (cfg.train_split, cfg.valid_split,
                                                     cfg.test_split if cfg.task == "finetune" else "")
                                         if inv is None or not s or s in inv.splits))
        for split in splits:
            check_split(shards, inv, split, "--split")
        trainer = Trainer(cfg, data, run)
        checkpoint.load(ckpt, trainer.model, restore_rng=False)
        result = {"checkpoint": ckpt.name, "splits": {s or "all": analyse_split(trainer, s) for s in splits}}
        write_json(run / "analysis.json", result, run)
        for name, found in result["splits"].items():  # a null value is never left unexplained
            for why in dict.fromkeys(found.get("reasons", {}).values()):
                keys = ", ".join(k for k, v in found["reasons"].items() if v == why)
                click.echo(f"note: split {name!r}: {keys} null: {click.unstyle(why)}", err=True)
        click.echo(dumps(result, indent=2))


@main.command("import-mmsa", context_settings=CONTEXT,
              short_help="Convert an MMSA feature pickle into kebr-data shards.")
@click.option("--pickle", "pickle_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An MMSA feature pickle (train/valid/test; audio and vision of any width).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The output folder to write shards to.")
@click.option("--trust-pickle", is_flag=True, help="Unpickle the file (pickles can run code: only for files you "
              "trust).")
@click.option("--replan", is_flag=True, help="Replace the plan of a non-empty --out folder (its other stages are "
              "then recomputed or refused as stale).")
@_careful
def import_mmsa_cmd(pickle_file: Path, out: Path, trust_pickle: bool, replan: bool) -> None:
    """Convert an MMSA feature pickle into kebr-data shards that the trainer reads (holding the folder's
    lock, like every writer). A pickle with a sample that breaks the index stage's rules (a label or
    feature that is NaN or infinite, an invalid or repeated id) is refused whole, naming the samples."""
    _needs_torch()
    from kebr_data.mmsa_import import UntrustedPickle, load_mmsa_pickle, read_samples, write_samples
    from kebr_data.storage.layout import OutputDir
    from kebr_data.storage.lock import OutputLock

    if out.is_dir() and any(p.name != "_lock" for p in out.iterdir()) and not replan:
        raise click.UsageError(f"{out} is not empty: use a new --out, or --replan to replace its plan "
                               "(its other stages are then recomputed or refused as stale)")
    try:
        samples = read_samples(load_mmsa_pickle(pickle_file, trust_pickle))  # refused before --out is touched
    except UntrustedPickle as exc:
        raise click.UsageError(str(exc)) from None
    with OutputLock(OutputDir(out).lock_file, "kebr-train import-mmsa"):
        counts = write_samples(*samples, out)
    click.echo(dumps(counts))


@main.command("sweep", context_settings=CONTEXT, short_help="Run a grid of options x seeds and tabulate the results.")
@click.option("--config", "grid", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Grid file: [sweep] command/seeds/config, [train] shared options, [grid] lists to cross.")
@click.option("--shards", required=True, type=click.Path(path_type=Path), help="A kebr-data output folder.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Sweep folder: OUT/<point>/seed-N/ runs, sweep.md, sweep.csv, sweep.png.")
@click.option("--dry-run", is_flag=True, help="Print each run's kebr-train command line; run nothing.")
@_careful
def sweep_cmd(grid: Path, shards: Path, out: Path, dry_run: bool) -> None:
    """Run a grid of options x seeds (each a resumable run; finished ones are kept) and write a
    mean ± std table with parameter and FLOP counts, and a plot."""
    _needs_torch()
    from .sweeps import load_sweep, run_sweep

    click.echo(run_sweep(load_sweep(grid), shards, out, echo=lambda line: click.echo(line, err=True), dry_run=dry_run))


@main.command("defaults", context_settings=CONTEXT,
              short_help="Print every [train] and [modalities] key with its default.")
def defaults_cmd() -> None:
    """Print every [train] and [modalities] key with its default and meaning (TOML, ready to copy into
    --config; a bare --set key=value means train.key)."""
    from kebr_data.config import describe_defaults

    from .config import TOOL, sections

    click.echo(describe_defaults(sections(), TOOL), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
