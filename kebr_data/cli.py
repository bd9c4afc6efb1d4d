"""`kebr-data`: build KEBR pre-training data from talking-head clips.

    kebr-data extract --src voxceleb2/ --out features/
    kebr-data status --out features/
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from rich.console import Console

from . import __version__, config as config_mod
from .engine import Engine, RunOptions
from .errors import KebrError
from .stages import EXTRACT_DEFAULT, STAGES, parse_stages
from .status import folder_summaries, summary_table

console = Console(stderr=True)
if not console.is_terminal:
    console.width = 120

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _fail(exc: KebrError) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    sys.exit(exc.exit_code)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="kebr-data")
def main() -> None:
    """Turn talking-head clips (VoxCeleb, MOSI/MOSEI, any folder) into sharded KEBR features.

    Every command works on an output folder (--out) that it can resume: rerun the same command
    after a crash and only unfinished shards are computed.
    """


@main.command(context_settings=CONTEXT)
@click.option("--src", type=click.Path(path_type=Path), help="Dataset folder or manifest (.csv/.parquet). "
              "Needed for a new output folder; later runs reuse the frozen plan.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (created if absent).")
@click.option("--stages", help=f"Comma-separated subset, run in pipeline order. Default: {','.join(EXTRACT_DEFAULT)}. "
              f"Available: index,{','.join(STAGES)}.")
@click.option("--layout", type=click.Choice(["auto", "voxceleb", "mmsa", "folder", "manifest"]),
              help="Force the source layout instead of auto-detecting it.")
@click.option("--config", "config_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML config file (see pipelines/); repeatable, later files win.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set audio.sample_rate=16000; repeatable.")
@click.option("--workers", type=int, help="Worker processes (default: one per CPU core).")
@click.option("--executor", type=click.Choice(["local"]), help="Where shards run (default local).")
@click.option("--max-failed", type=float, help="Exit with status 1 when a stage's failed fraction exceeds this "
              "(default 0.05).")
@click.option("--force", is_flag=True, help="Recompute every shard of the selected stages.")
@click.option("--replan", is_flag=True, help="Re-index the source and re-cut shards (changed shards are recomputed).")
def extract(src: Path | None, out: Path, stages: str | None, layout: str | None, config_files: tuple[Path, ...],
            overrides: tuple[str, ...], workers: int | None, executor: str | None, max_failed: float | None,
            force: bool, replan: bool) -> None:
    """Index clips and extract features: index, audio, asr, acoustic, visual.

    Each stage writes OUT/<stage>/shard-NNNNN.parquet plus a done marker; a bad clip becomes a
    row with status failed/skipped and a message, never a crash.
    """
    try:
        cfg = config_mod.load(config_files, overrides)
        cfg = config_mod.apply(cfg, {"run.workers": workers, "run.executor": executor,
                                     "run.max_failed": max_failed, "index.layout": layout})
        opts = RunOptions(out=out, src=src, stages=parse_stages(stages), config=cfg, force=force, replan=replan,
                          command=shlex.join(["kebr-data", *sys.argv[1:]]))
        report = Engine(opts, console).run()
    except KebrError as exc:
        _fail(exc)
        return
    console.print(summary_table(report.stages, f"{out}: {report.plan['clips']} clips, "
                                f"{report.plan['num_shards']} shard(s)", with_run=True))
    limit = cfg["run"]["max_failed"]
    over = [s for s in report.stages if s.failed_fraction > limit]
    for s in over:
        console.print(f"[bold red]{s.stage}: {s.failed_fraction:.1%} of clips failed, above --max-failed "
                      f"{limit:.1%}[/] (see {out}/{s.stage}/_logs/)", highlight=False)
    sys.exit(1 if over else 0)


@main.command(context_settings=CONTEXT)
@click.option("--out", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Output folder of a previous run.")
def status(out: Path) -> None:
    """Show shards done per stage, clips ok/failed/skipped and the top failure reasons."""
    try:
        marker, summaries = folder_summaries(out)
    except KebrError as exc:
        _fail(exc)
        return
    title = (f"{out}: {marker['clips']} clips in {marker['num_shards']} shard(s) from {marker['src']} "
             f"({marker['layout']}; {marker['rejected']} rejected at indexing)")
    stdout = Console()
    if not stdout.is_terminal:
        stdout.width = 120
    stdout.print(summary_table(summaries, title))


if __name__ == "__main__":  # pragma: no cover
    main()
