"""`kebr-train`: pre-train KEBR on kebr-data shards, fine-tune it on MOSI/MOSEI, evaluate.

    kebr-train --shards features/ --task pretrain --out runs/pretrain
    kebr-train --shards mosi-features/ --task finetune --init runs/pretrain --out runs/mosi --seeds 1,2,3
    kebr-train eval --shards mosi-features/ --run runs/mosi/seed-1 --split test
    kebr-train import-mmsa --pickle MOSI/unaligned.pkl --out mosi-features/ --trust-pickle
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import click

from . import checkpoint
from .config import TrainConfig
from .plots import frame_modalities, plot_run

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
REPORTED = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "Mult_acc_5", "MAE", "Corr")


def _train_one(cfg: TrainConfig, shards: Path, out: Path, init: Path | None, resume: str) -> dict:
    from .train import Trainer

    trainer = Trainer(cfg, shards, out, init)
    last = checkpoint.latest(out) if resume == "auto" else None
    if last is not None:
        trainer.resume(last)
        click.echo(f"resumed from {last} (step {trainer.state['step']})", err=True)
    state = trainer.fit()
    result = {"step": state["step"], "best_valid": state["best_valid"]}
    if cfg.task == "finetune" and cfg.test_split:
        best = out / "checkpoints" / "best"
        if best.exists():
            checkpoint.load(best, trainer.model, restore_rng=False)
        result["test"] = trainer.evaluate(cfg.test_split)
        (out / "test_metrics.json").write_text(json.dumps(result["test"], indent=2))
    if trainer.rank == 0 and (out / "metrics.jsonl").exists():
        plot_run(out, frame_modalities(shards))
    return result


def _summary(results: dict[int, dict]) -> str:
    """Mean ± std over seeds, as papers report."""
    lines = ["| metric | " + " | ".join(f"seed {s}" for s in results) + " | mean ± std |",
             "|---|" + "---:|" * (len(results) + 1)]
    for key in REPORTED:
        values = [r["test"][key] for r in results.values() if key in r.get("test", {})]
        if not values:
            continue
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {key} | " + " | ".join(f"{v:.4f}" for v in values) +
                     f" | {statistics.mean(values):.4f} ± {std:.4f} |")
    return "\n".join(lines)


@click.command(context_settings=CONTEXT)
@click.argument("action", type=click.Choice(["train", "eval", "import-mmsa"]), default="train", required=False)
@click.option("--shards", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A kebr-data output folder (plan + mask/acoustic/visual/asr stage tables).")
@click.option("--pickle", "pickle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="import-mmsa: an MMSA feature pickle (train/valid/test with 33-d audio, 709-d vision).")
@click.option("--trust-pickle", is_flag=True, help="import-mmsa: unpickle the file (pickles can run code: "
              "only for files you trust).")
@click.option("--task", type=click.Choice(["pretrain", "finetune"]), help="Default: the config's (pretrain).")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (train): metrics.jsonl, plots/, checkpoints/.")
@click.option("--run", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="eval: the run folder whose best (else latest) checkpoint is evaluated.")
@click.option("--init", type=click.Path(exists=True, path_type=Path), help="Start from this run or checkpoint "
              "(e.g. a pre-training run when fine-tuning).")
@click.option("--config", "config_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML file with a [train] table (see pipelines/train_*.toml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a training option.")
@click.option("--seeds", help="Comma-separated seeds: one run each under OUT/seed-N and a mean ± std table.")
@click.option("--resume", type=click.Choice(["auto", "never"]), default="auto", show_default=True,
              help="auto: continue from OUT's latest checkpoint when there is one.")
@click.option("--split", default="test", show_default=True, help="eval: the split to evaluate.")
def main(action: str, shards: Path | None, pickle_file: Path | None, trust_pickle: bool, task: str | None,
         out: Path | None, run: Path | None, init: Path | None, config_files: tuple[Path, ...],
         overrides: tuple[str, ...], seeds: str | None, resume: str, split: str) -> None:
    """Train or evaluate KEBR (TCMF fusion + MCC loss) on kebr-data shards, or import MMSA pickles."""
    if action == "import-mmsa":
        from .mmsa_import import UntrustedPickle, import_mmsa, load_mmsa_pickle

        if pickle_file is None or out is None:
            raise click.UsageError("import-mmsa needs --pickle FILE and --out FOLDER")
        try:
            counts = import_mmsa(load_mmsa_pickle(pickle_file, trust_pickle), out)
        except (UntrustedPickle, ValueError) as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(json.dumps(counts))
        return
    if shards is None:
        raise click.UsageError("--shards is required")
    try:
        cfg = TrainConfig.load(config_files, overrides, task=task)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if action == "eval":
        if run is None:
            raise click.UsageError("eval needs --run RUN_FOLDER")
        from .train import Trainer

        saved = json.loads(((run / "checkpoints" / "best") if (run / "checkpoints" / "best").exists()
                            else checkpoint.latest(run)).joinpath("state.json").read_text())["config"]
        cfg = TrainConfig.load((), overrides, **{k: v for k, v in saved.items()})
        trainer = Trainer(cfg, shards, run)
        best = run / "checkpoints" / "best"
        checkpoint.load(best if best.exists() else checkpoint.latest(run), trainer.model, restore_rng=False)
        result = trainer.evaluate(split)
        click.echo(json.dumps(result, indent=2))
        return
    if out is None:
        raise click.UsageError("training needs --out RUN_FOLDER")
    if not seeds:
        click.echo(json.dumps(_train_one(cfg, shards, out, init, resume), indent=2, default=str))
        return
    results = {}
    for seed in [int(s) for s in seeds.split(",")]:
        cfg.seed = seed
        results[seed] = _train_one(cfg, shards, out / f"seed-{seed}", init, resume)
    table = _summary(results)
    (out / "summary.md").write_text(table + "\n")
    click.echo(table)


if __name__ == "__main__":  # pragma: no cover
    main()
