"""`kebr-data`: build KEBR pre-training data from talking-head clips.

    kebr-data extract --src voxceleb2/ --out features/
    kebr-data mask --lexicon vader --out features/
    kebr-data status --out features/
"""

from __future__ import annotations

import dataclasses
import errno
import json
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from . import __version__, config as config_mod, plugin_options
from .config import Config
from .display import command_console, printable
from .errors import KebrError, PlanError
from .executors import EXECUTORS
from .export import FORMATS
from .label_quality import quality_rows
from .pipeline import run_record
from .pipeline.engine import Engine, RunOptions
from .pipeline.summaries import folder_summaries, plan_line
from .plugin_options import PluginCommand, RegistryChoice
from .sources import LAYOUTS
from .stages import extract_default, parse_stages, registry
from .stages.mask import resolve_text_source
from .status import label_quality_table, limit_hint, summary_view
from .storage.layout import OutputDir
from .storage.lock import OutputLock
from .storage.store import PLAN, Store

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


console = command_console(stderr=True)


def _fail(exc: KebrError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # one line, however long
    sys.exit(exc.exit_code)


_OS_HINTS = {errno.ENOSPC: "free some space, or use another --out",
             errno.EDQUOT: "free some space, or use another --out",
             errno.EROFS: "use a writable --out", errno.EACCES: "fix its permissions, or use another --out",
             errno.EPERM: "fix its permissions (chattr -i?), or use another --out",
             errno.EEXIST: "--out must be a folder", errno.ENOTDIR: "--out must be a folder (a path through a file?)",
             errno.EIO: "the disk reports I/O errors: check it, then rerun to resume"}


def os_error(exc: OSError) -> KebrError:
    """An OSError of the main process (not a clip's) as one line naming the path and what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    hint = _OS_HINTS.get(exc.errno or 0, "check the path and rerun")
    return KebrError(f"{where}{exc.strerror or exc}; {hint}")


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a KebrError's (or the machine's OSError's) message, no traceback, and exit with its code."""
    try:
        yield
    except KebrError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(os_error(exc))


#: kebr-train's commands: typed after kebr-data, they are named as kebr-train's (tests/test_recipes.py checks the list)
TRAIN_COMMANDS = ("analyse", "eval", "finetune", "import-mmsa", "predict", "pretrain", "sweep", "train")


class _Commands(click.Group):
    """The command group: Ctrl-C ends any command with exit 130 and one line, never a traceback, and so does a
    KebrError raised before a command's own `user_errors` (exit 2 on a plugin flag that clashes); a kebr-train
    command typed after kebr-data (`kebr-data import-mmsa`) is named as kebr-train's, exit 2."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] in TRAIN_COMMANDS and args[0] not in self.commands:
            ctx.fail(f"{args[0]!r} is a kebr-train command: kebr-train {args[0]} --help")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KebrError as exc:  # raised while the command's flags are built (a plugin's flag that clashes)
            _fail(exc)
        except KeyboardInterrupt:
            console.print("interrupted: committed shards are kept; rerun the same command to resume",
                          markup=False, highlight=False)
            sys.exit(130)


def existing_out(help_text: str) -> Callable:
    """`--out` naming an output folder that must already exist."""
    return click.option("--out", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
                        help=help_text)


def run_options(fn: Callable) -> Callable:
    """Options shared by every command that runs stages (such a command is a `RunCommand`, which adds the
    executors' own options)."""
    for decorator in reversed([
        click.option("--config", "config_files", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="TOML config file (see pipelines/); repeatable, later files win."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override one config key, e.g. --set audio.sample_rate=16000; repeatable."),
        click.option("--workers", type=int, help="Worker processes (default: one per CPU core)."),
        click.option("--executor", type=RegistryChoice(lambda: EXECUTORS),
                     help="Where shards run: local process pool (default) or Ray. The executors' own options "
                          "(--address, ...) follow."),
        click.option("--max-failed", type=float,
                     help="Exit with status 1 when a stage's failed fraction exceeds this (default 0.05)."),
    ]):
        fn = decorator(fn)
    return fn


class RunCommand(PluginCommand):
    """A command that runs stages: its last flags are the registered executors' options (`--address`, ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, plugin_flags=lambda: plugin_options.flags(EXECUTORS, "executor"), **kwargs)


def executor_flags() -> dict[str, Any]:
    """The executor options given as flags on this command line, as config keys (`--address` -> ray.address)."""
    return plugin_options.given_keys(click.get_current_context(), EXECUTORS)


def _config(out: Path, config_files: tuple[Path, ...], overrides: tuple[str, ...],
            values: dict[str, Any]) -> tuple[Config, tuple[str, ...]]:
    """The folder's saved configuration (defaults for a new folder) with this command's files, overrides
    and options applied; and the keys they changed, which are printed."""
    saved = run_record.saved_config(OutputDir(out))
    cfg = config_mod.apply(config_mod.load(config_files, overrides, base=saved), values)
    # against the saved configuration as loaded: keys added since it was saved (a new executor's options)
    # hold their defaults and are not changes
    changed = tuple(config_mod.changed_keys(config_mod.load(base=saved), cfg)) if saved is not None else ()
    if changed:
        console.print(f"settings changed for {escape(str(out))}: {escape(', '.join(changed))}", highlight=False)
    return cfg, changed


def _resolve_mask(cfg: Config, out: Path, stages: list[str]) -> Config:
    """The config with mask.text_source = auto resolved for this run (asr when its outputs exist or are made)."""
    asr_available = "asr" in stages or bool(OutputDir(out).marker_shards("asr"))
    with user_errors():
        return {**cfg, "mask": resolve_text_source(cfg["mask"], asr_available)}


def _require_transcripts(out: Path, mask_cfg: dict[str, Any]) -> None:
    """`mask` needs an output folder with transcripts: the asr stage's, or the dataset's given text."""
    store = Store(out)
    if mask_cfg["text_source"] == "asr" and store.committed_shards("asr"):
        return
    if mask_cfg["text_source"] == "given" and any(
            any(t and t.strip() for t in store.read(PLAN, shard, ["given_text"]).column("given_text").to_pylist())
            for shard in range(store.plan.num_shards)):
        return
    raise PlanError(f"ASR has not run on {out} and its plan has no given text: first run "
                    f"`kebr-data extract --out {out} --stages audio,asr`")


def _run(opts: RunOptions) -> None:
    """Run the engine, print the summary, exit with the documented code."""
    with user_errors():
        report = Engine(opts, console).run()
    root = report.root or opts.out
    console.print(summary_view(report.stages, f"{root}: {report.plan.clips} clips, "
                               f"{report.plan.num_shards} shard(s)", with_run=True))
    limit = opts.config["run"]["max_failed"]
    over = [s for s in report.stages if s.failed_fraction > limit]
    for s in over:
        console.print(f"[bold red]{s.stage}: {s.failed_fraction:.1%} of clips failed, above --max-failed "
                      f"{limit:.1%}[/] (see {escape(str(OutputDir(root).log(s.stage, 0).parent))}/)",
                      highlight=False)
    sys.exit(1 if over else 0)


def _command_line() -> str:
    return shlex.join(["kebr-data", *sys.argv[1:]])


@click.group(cls=_Commands, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="kebr-data")
def main() -> None:
    """Turn talking-head clips (VoxCeleb, MOSI/MOSEI, any folder) into sharded KEBR features.

    Every command works on an output folder (--out) that it can resume: rerun the same command
    after a crash and only unfinished shards are computed.
    """


@main.command(cls=RunCommand, context_settings=CONTEXT, short_help="Index clips and extract their features.")
@click.option("--src", type=click.Path(path_type=Path), help="Dataset folder or manifest (.csv/.parquet). "
              "Needed for a new output folder; later runs reuse the frozen plan.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (created if absent).")
@click.option("--stages", help=f"Comma-separated subset, run in pipeline order. Default: run.stages of the config, "
              f"else {','.join(extract_default())}. Available: index,{','.join(registry())}.")
@click.option("--layout", type=click.Choice(["auto", *LAYOUTS]),
              help="Force the source layout instead of auto-detecting it.")
@run_options
@click.option("--force", is_flag=True, help="Recompute every shard of the selected stages.")
@click.option("--replan", is_flag=True, help="Re-index the source and re-cut shards (changed shards are recomputed).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Smoke test: run the stages on the plan's "
              "first N clips only, in OUT/_limit/; the plan and the stage tables of OUT are not changed.")
def extract(src: Path | None, out: Path, stages: str | None, layout: str | None, config_files: tuple[Path, ...],
            overrides: tuple[str, ...], workers: int | None, executor: str | None, max_failed: float | None,
            force: bool, replan: bool, limit: int | None) -> None:
    """Index clips and extract features: index, audio, asr, acoustic, visual.

    Each stage writes OUT/<stage>/shard-NNNNN.parquet plus a done marker; a bad clip becomes a
    row with status failed/skipped and a message, never a crash.
    """
    with user_errors():
        cfg, changed = _config(out, config_files, overrides, {
            "run.workers": workers, "run.executor": executor, **executor_flags(),
            "run.max_failed": max_failed, "index.layout": layout})
        selected = parse_stages(stages or ",".join(cfg["run"]["stages"]))
    _run(RunOptions(out=out, src=src, stages=selected, config=_resolve_mask(cfg, out, selected), force=force,
                    replan=replan, command=_command_line(), changed=changed, saved_config=cfg, limit=limit))


def _setting_text(value: Any) -> str:
    """A setting as the folder-settings line shows it: booleans on/off, text quoted and escaped."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return printable(json.dumps(value, ensure_ascii=False))


def _folder_settings_line(out: Path, section: str, cfg: Config, fresh: Config) -> str | None:
    """The `section` settings this run takes from OUT/run.json (saved by an earlier command) rather than
    from its own options, files and the defaults (`fresh`), each with the option that changes it; None
    when there is none. A remembered `--negation` keeps a plain rerun's negation on: this line says so."""
    params = {p.name: p for p in click.get_current_context().command.params if isinstance(p, click.Option)}
    kept = []
    for key, value in cfg[section].items():
        if value == fresh[section][key]:
            continue
        option = params.get(key)
        if option is not None and option.secondary_opts and value is True:
            how = f"pass {option.secondary_opts[0]} to turn it off"
        elif option is not None:
            how = f"pass {option.opts[-1]} to change it"
        else:
            how = f"--set {section}.{key}=... changes it"
        kept.append(f"{key}={_setting_text(value)} ({how})")
    return f"settings from {printable(str(out / 'run.json'))}: {', '.join(kept)}" if kept else None


@main.command(cls=RunCommand, context_settings=CONTEXT,
              short_help="Mask the most salient sentiment word of each transcript.")
@existing_out("Output folder of `kebr-data extract` (its plan, and its asr stage if any).")
@click.option("--lexicon", help="'vader' (default: vaderSentiment's 7,506-entry lexicon) or a word<TAB>score TSV.")
@click.option("--scale-from", metavar="LOW,HIGH", help="Score range of the lexicon, mapped linearly onto [-3,3] "
              "(default -4,4, VADER's).")
@click.option("--text-source", type=click.Choice(["auto", "asr", "given"]),
              help="Transcripts from the asr stage or the dataset's given text (default auto: asr if it ran).")
@click.option("--negation/--no-negation", default=None, help="Flip (x -0.74, as VADER) the score of a word "
              "preceded within 3 words by a negator (default off, as the papers; once given, OUT keeps it for "
              "later runs until --no-negation).")
@click.option("--max-neutral-fraction", type=float, help="Keep at most this share of no-sentiment sentences "
              "among each shard's masked clips; the rest are skipped (default 1.0 = keep all).")
@run_options
def mask(out: Path, lexicon: str | None, scale_from: str | None, text_source: str | None, negation: bool | None,
         max_neutral_fraction: float | None, config_files: tuple[Path, ...], overrides: tuple[str, ...],
         workers: int | None, executor: str | None, max_failed: float | None) -> None:
    """Mask the most salient sentiment word of every transcript: OUT/mask/.

    Reads the plan (and the asr stage) of OUT and writes only mask/. Cheap (text only), and made
    to be re-run: with other options it replaces mask/ and says so. Options not given keep the values
    an earlier run saved in OUT/run.json (not the defaults); the run names each such setting.
    """
    with user_errors():
        scale = None
        if scale_from is not None:
            try:
                scale = [float(x) for x in scale_from.split(",")]
            except ValueError:
                raise config_mod.ConfigError(f"--scale-from expects LOW,HIGH, got {scale_from!r}") from None
        values = {"mask.lexicon": lexicon, "mask.scale_from": scale, "mask.text_source": text_source,
                  "mask.negation": negation, "mask.max_neutral_fraction": max_neutral_fraction,
                  "run.workers": workers, "run.executor": executor, **executor_flags(),
                  "run.max_failed": max_failed}
        cfg, changed = _config(out, config_files, overrides, values)
        fresh = config_mod.apply(config_mod.load(config_files, overrides), values)  # the same command on a new folder
        kept = _folder_settings_line(out, "mask", cfg, fresh)
        if kept:
            console.print(kept, markup=False, highlight=False)
        resolved = _resolve_mask(cfg, out, ["mask"])
        lock = OutputDir(out).lock_file
        if lock.exists():  # a run in progress comes first (it may be the ASR); a folder never run has no lock
            with OutputLock(lock, _command_line()):
                pass
        _require_transcripts(out, resolved["mask"])
    _run(RunOptions(out=out, stages=["mask"], config=resolved, replace_on_change=True,
                    command=_command_line(), changed=changed, saved_config=cfg))


@main.command("retry-failed", cls=RunCommand, context_settings=CONTEXT,
              short_help="Redo only the failed rows of done shards.")
@existing_out("Output folder of a previous run.")
@click.option("--stages", help="Stages whose failed rows are redone (default: every stage in OUT).")
@run_options
def retry_failed(out: Path, stages: str | None, config_files: tuple[Path, ...], overrides: tuple[str, ...],
                 workers: int | None, executor: str | None, max_failed: float | None) -> None:
    """Redo only the failed rows of done shards (after a transient outage, a raised timeout or quota).

    The other rows are kept as they are. Later stages present in OUT are then brought up to date:
    their shards whose input changed are recomputed.
    """
    with user_errors():
        cfg, changed = _config(out, config_files, overrides, {
            "run.workers": workers, "run.executor": executor, **executor_flags(),
            "run.max_failed": max_failed})
        present = [s for s in registry() if OutputDir(out).marker_shards(s)]
        chosen = parse_stages(stages, default=tuple(present))
        run_stages = [s for s in parse_stages(",".join(present), default=()) if s in present]
    _run(RunOptions(out=out, stages=run_stages, config=_resolve_mask(cfg, out, run_stages),
                    retry_stages=tuple(chosen), command=_command_line(), changed=changed, saved_config=cfg))


@main.command(cls=PluginCommand, plugin_flags=lambda: plugin_options.flags(FORMATS, "export format"),
              context_settings=CONTEXT,
              short_help="Export the stage tables as HDF5, Parquet or an MMSA pickle.")
@existing_out("Output folder of `kebr-data extract`.")
@click.option("--format", "fmt", required=True, type=RegistryChoice(lambda: FORMATS),
              help="; ".join(f"{name}: {cls().describe()}" for name, cls in FORMATS.items()) + ".")
@click.option("--to", "dest", type=click.Path(file_okay=False, path_type=Path),
              help="Destination folder (default OUT/export/FORMAT).")
def export(out: Path, fmt: str, dest: Path | None) -> None:
    """Export the committed stage tables as HDF5, merged Parquet or an MMSA pickle; reruns redo only what
    changed. Refuses tables that are not committed and current (naming the command that fixes them).
    A format's own options follow (`mmsa: ...`): they apply to that format only."""
    from .export import export as run_export

    with user_errors():  # export takes the folder's lock itself
        options = plugin_options.given(click.get_current_context(), FORMATS[fmt].Options, fmt, "export format")
        where, note = run_export(out, fmt, dest, **options)
    console.print(f"exported to {escape(str(where))}: {escape(note)}", highlight=False)


@main.command(context_settings=CONTEXT, short_help="Write an HTML report with plots per stage.")
@existing_out("Output folder of a previous run.")
def report(out: Path) -> None:
    """Write OUT/report/index.html: dataset-label (SIMS: T/A/V too), mask-label, duration, words, face-ratio
    and ASR-confidence histograms, failure reasons and throughput per stage (log axis)."""
    from .report import build_report

    with user_errors(), OutputLock(OutputDir(out).lock_file, _command_line()):
        page = build_report(out)
    console.print(f"wrote {page}", highlight=False)


@main.command(context_settings=CONTEXT, short_help="Re-read every shard and check it against its marker.")
@existing_out("Output folder to check.")
def validate(out: Path) -> None:
    """Re-read every shard: sizes and hashes against markers, schemas, rows against the plan, staleness."""
    from .validate import validate as run_validate

    with user_errors():
        checked, problems = run_validate(out)
    for p in problems:
        where = f"shard {p.shard:05d}" if p.shard >= 0 else "all shards"
        console.print(f"{p.stage} {where}: {escape(p.what)}", highlight=False)
    console.print(f"{checked} shard table(s) checked, {len(problems)} problem(s)", highlight=False)
    sys.exit(1 if problems else 0)


@main.command(context_settings=CONTEXT, short_help="Show shards done and clips ok, failed or skipped per stage.")
@existing_out("Output folder of a previous run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (for scripts).")
def status(out: Path, as_json: bool) -> None:
    """Show shards done per stage, clips ok/failed/skipped and the top failure reasons."""
    with user_errors():
        store = Store(out)
        summaries = folder_summaries(store)
        line = plan_line(store)
    if as_json:
        click.echo(json.dumps({"folder": str(out), "plan": {"clips": store.plan.clips, "shards": store.plan.num_shards,
                                                            "src": store.plan.src, "rejected": store.plan.rejected},
                               "stages": [{"stage": s.stage, "shards_done": s.shards_done,
                                           "shards_total": s.shards_total, "clips": s.rows, "ok": s.ok,
                                           "failed": s.failed, "skipped": s.skipped, "errors": dict(s.errors),
                                           "stats": s.stats} for s in summaries],
                               "label_quality": [dataclasses.asdict(r) for r in quality_rows(store)]}, indent=2))
        return
    command_console(stderr=False).print(summary_view(summaries, line))
    hint = limit_hint(store, summaries)
    if hint is not None:
        command_console(stderr=False).print(escape(hint), highlight=False)
    quality = label_quality_table(store)
    if quality is not None:
        command_console(stderr=False).print(quality)


@main.command(context_settings=CONTEXT, short_help="Print every config key with its default and meaning.")
def defaults() -> None:
    """Print every configuration key with its default and meaning (TOML, ready to copy into --config)."""
    click.echo(config_mod.describe_defaults(), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
