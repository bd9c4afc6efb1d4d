"""`kebr-data`: build KEBR pre-training data from talking-head clips.

    kebr-data extract --src voxceleb2/ --out features/
    kebr-data mask --lexicon vader --out features/
    kebr-data status --out features/
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from . import __version__, config as config_mod
from .config import Config
from .engine import Engine, RunOptions, require_plan
from .errors import KebrError, PlanError
from .plan import has_given_text
from .stages import EXTRACT_DEFAULT, STAGES, parse_stages
from .stages.mask import resolve_text_source
from .status import folder_summaries, plan_line, summary_view
from .storage.layout import OutputDir

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console.width = 120
    return console


console = _console(stderr=True)


def _fail(exc: KebrError) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)  # one line, however long
    sys.exit(exc.exit_code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a KebrError's message (no traceback) and exit with its code."""
    try:
        yield
    except KebrError as exc:
        _fail(exc)


def existing_out(help_text: str) -> Callable:
    """`--out` naming an output folder that must already exist."""
    return click.option("--out", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
                        help=help_text)


def run_options(fn: Callable) -> Callable:
    """Options shared by every command that runs stages."""
    for decorator in reversed([
        click.option("--config", "config_files", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="TOML config file (see pipelines/); repeatable, later files win."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override one config key, e.g. --set audio.sample_rate=16000; repeatable."),
        click.option("--workers", type=int, help="Worker processes (default: one per CPU core)."),
        click.option("--executor", type=click.Choice(["local", "ray"]),
                     help="Where shards run: local process pool (default) or Ray."),
        click.option("--address", help="Ray cluster address for --executor ray (default: start a local Ray)."),
        click.option("--max-failed", type=float,
                     help="Exit with status 1 when a stage's failed fraction exceeds this (default 0.05)."),
    ]):
        fn = decorator(fn)
    return fn


def _config(config_files: tuple[Path, ...], overrides: tuple[str, ...], values: dict[str, Any]) -> Config:
    return config_mod.apply(config_mod.load(config_files, overrides), values)


def _resolve_mask(cfg: Config, out: Path, stages: list[str]) -> Config:
    asr_available = "asr" in stages or bool(OutputDir(out).marker_shards("asr"))
    return {**cfg, "mask": resolve_text_source(cfg["mask"], asr_available)}


def _require_transcripts(out: Path, mask_cfg: dict[str, Any]) -> None:
    """`mask` needs an output folder with transcripts: the asr stage's, or the dataset's given text."""
    marker = require_plan(out)
    asr_done = bool(OutputDir(out).marker_shards("asr"))
    if mask_cfg["text_source"] == "asr" and asr_done:
        return
    if mask_cfg["text_source"] == "given" and has_given_text(OutputDir(out), marker):
        return
    raise PlanError(f"ASR has not run on {out} and its plan has no given text: first run "
                    f"`kebr-data extract --out {out} --stages audio,asr`")


def _run(opts: RunOptions) -> None:
    """Run the engine, print the summary, exit with the documented code."""
    with user_errors():
        report = Engine(opts, console).run()
    console.print(summary_view(report.stages, f"{opts.out}: {report.plan['clips']} clips, "
                               f"{report.plan['num_shards']} shard(s)", with_run=True))
    limit = opts.config["run"]["max_failed"]
    over = [s for s in report.stages if s.failed_fraction > limit]
    for s in over:
        console.print(f"[bold red]{s.stage}: {s.failed_fraction:.1%} of clips failed, above --max-failed "
                      f"{limit:.1%}[/] (see {opts.out}/{s.stage}/_logs/)", highlight=False)
    sys.exit(1 if over else 0)


def _command_line() -> str:
    return shlex.join(["kebr-data", *sys.argv[1:]])


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
@click.option("--stages", help=f"Comma-separated subset, run in pipeline order. Default: run.stages of the config, "
              f"else {','.join(EXTRACT_DEFAULT)}. Available: index,{','.join(STAGES)}.")
@click.option("--layout", type=click.Choice(["auto", "voxceleb", "mmsa", "folder", "manifest"]),
              help="Force the source layout instead of auto-detecting it.")
@run_options
@click.option("--force", is_flag=True, help="Recompute every shard of the selected stages.")
@click.option("--replan", is_flag=True, help="Re-index the source and re-cut shards (changed shards are recomputed).")
def extract(src: Path | None, out: Path, stages: str | None, layout: str | None, config_files: tuple[Path, ...],
            overrides: tuple[str, ...], workers: int | None, executor: str | None, address: str | None,
            max_failed: float | None, force: bool, replan: bool) -> None:
    """Index clips and extract features: index, audio, asr, acoustic, visual.

    Each stage writes OUT/<stage>/shard-NNNNN.parquet plus a done marker; a bad clip becomes a
    row with status failed/skipped and a message, never a crash.
    """
    with user_errors():
        cfg = _config(config_files, overrides, {"run.workers": workers, "run.executor": executor,
                                                "run.ray_address": address, "run.max_failed": max_failed,
                                                "index.layout": layout})
        selected = parse_stages(stages or ",".join(cfg["run"]["stages"]))
        cfg = _resolve_mask(cfg, out, selected)
    _run(RunOptions(out=out, src=src, stages=selected, config=cfg, force=force, replan=replan,
                    command=_command_line()))


@main.command(context_settings=CONTEXT)
@existing_out("Output folder of `kebr-data extract` (its plan, and its asr stage if any).")
@click.option("--lexicon", help="'vader' (default: vaderSentiment's 7,506-entry lexicon) or a word<TAB>score TSV.")
@click.option("--scale-from", metavar="LOW,HIGH", help="Score range of the lexicon, mapped linearly onto [-3,3] "
              "(default -4,4, VADER's).")
@click.option("--text-source", type=click.Choice(["auto", "asr", "given"]),
              help="Transcripts from the asr stage or the dataset's given text (default auto: asr if it ran).")
@click.option("--negation/--no-negation", default=None, help="Flip (x -0.74, as VADER) the score of a word "
              "preceded within 3 words by a negator (default off, as the papers).")
@click.option("--max-neutral-fraction", type=float, help="Keep at most this share of no-sentiment sentences "
              "among each shard's masked clips; the rest are skipped (default 1.0 = keep all).")
@run_options
def mask(out: Path, lexicon: str | None, scale_from: str | None, text_source: str | None, negation: bool | None,
         max_neutral_fraction: float | None, config_files: tuple[Path, ...], overrides: tuple[str, ...],
         workers: int | None, executor: str | None, address: str | None, max_failed: float | None) -> None:
    """Mask the most salient sentiment word of every transcript: OUT/mask/.

    Reads the plan (and the asr stage) of OUT and writes only mask/. Cheap (text only), and made
    to be re-run: with other options it replaces mask/ and says so.
    """
    with user_errors():
        scale = None
        if scale_from is not None:
            try:
                scale = [float(x) for x in scale_from.split(",")]
            except ValueError:
                raise config_mod.ConfigError(f"--scale-from expects LOW,HIGH, got {scale_from!r}") from None
        cfg = _config(config_files, overrides, {
            "mask.lexicon": lexicon, "mask.scale_from": scale, "mask.text_source": text_source,
            "mask.negation": negation, "mask.max_neutral_fraction": max_neutral_fraction,
            "run.workers": workers, "run.executor": executor, "run.ray_address": address,
            "run.max_failed": max_failed})
        cfg = _resolve_mask(cfg, out, ["mask"])
        _require_transcripts(out, cfg["mask"])
    _run(RunOptions(out=out, stages=["mask"], config=cfg, replace_on_change=True, command=_command_line()))


@main.command("retry-failed", context_settings=CONTEXT)
@existing_out("Output folder of a previous run.")
@click.option("--stages", help="Stages whose failed rows are redone (default: every stage in OUT).")
@run_options
def retry_failed(out: Path, stages: str | None, config_files: tuple[Path, ...], overrides: tuple[str, ...],
                 workers: int | None, executor: str | None, address: str | None, max_failed: float | None) -> None:
    """Redo only the failed rows of done shards (after a transient outage, a raised timeout or quota).

    The other rows are kept as they are. Later stages present in OUT are then brought up to date:
    their shards whose input changed are recomputed.
    """
    with user_errors():
        cfg = _config(config_files, overrides, {"run.workers": workers, "run.executor": executor,
                                                "run.ray_address": address, "run.max_failed": max_failed})
        present = [s for s in STAGES if OutputDir(out).marker_shards(s)]
        chosen = parse_stages(stages, default=tuple(present))
        run_stages = [s for s in parse_stages(",".join(present), default=()) if s in present]
        cfg = _resolve_mask(cfg, out, run_stages)
    _run(RunOptions(out=out, stages=run_stages, config=cfg, retry_stages=tuple(chosen), command=_command_line()))


@main.command(context_settings=CONTEXT)
@existing_out("Output folder of `kebr-data extract`.")
@click.option("--format", "fmt", required=True, type=click.Choice(["hdf5", "parquet", "mmsa"]),
              help="hdf5: a file per shard (ragged values + offsets); parquet: a merged table per shard; "
                   "mmsa: MMSA's pickle layout.")
@click.option("--to", "dest", type=click.Path(file_okay=False, path_type=Path),
              help="Destination folder (default OUT/export/FORMAT).")
@click.option("--audio-len", default=400, show_default=True, help="mmsa: audio frames kept (padded/truncated).")
@click.option("--vision-len", default=55, show_default=True, help="mmsa: visual frames kept (padded/truncated).")
def export(out: Path, fmt: str, dest: Path | None, audio_len: int, vision_len: int) -> None:
    """Export the stage tables as HDF5, merged Parquet or an MMSA pickle; reruns redo only what changed."""
    from .export import export as run_export

    with user_errors():
        where = run_export(out, fmt, dest, audio_len, vision_len)
    console.print(f"exported to {where}", highlight=False)


@main.command(context_settings=CONTEXT)
@existing_out("Output folder of a previous run.")
def report(out: Path) -> None:
    """Write OUT/report/index.html: label, duration, words, face-ratio and ASR-confidence histograms,
    failure reasons and throughput per stage."""
    from .report import build_report

    with user_errors():
        page = build_report(out)
    console.print(f"wrote {page}", highlight=False)


@main.command(context_settings=CONTEXT)
@existing_out("Output folder to check.")
def validate(out: Path) -> None:
    """Re-read every shard: sizes and hashes against markers, schemas, rows against the plan, staleness."""
    from .validate import validate as run_validate

    with user_errors():
        checked, problems = run_validate(out)
    for p in problems:
        console.print(f"{p.stage} shard {p.shard:05d}: {p.what}", highlight=False)
    console.print(f"{checked} shard table(s) checked, {len(problems)} problem(s)", highlight=False)
    sys.exit(1 if problems else 0)


@main.command(context_settings=CONTEXT)
@existing_out("Output folder of a previous run.")
def status(out: Path) -> None:
    """Show shards done per stage, clips ok/failed/skipped and the top failure reasons."""
    with user_errors():
        marker, summaries = folder_summaries(out)
    _console(stderr=False).print(summary_view(summaries, plan_line(out, marker)))


if __name__ == "__main__":  # pragma: no cover
    main()
