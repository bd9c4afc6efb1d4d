"""`kebr-train predict`: load the run, make or check the features, score, write OUT/predictions.*, report."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ..jsonout import dumps
from . import model_io, output, pipeline
from .api import Run, check_shards


def predict_command(run: Path, src: tuple[Path, ...], shards: Path | None, out: Path, overrides: tuple[str, ...],
                    as_json: bool) -> None:
    """Score `src` (files, a folder or a manifest; their features made in OUT/cache) or the output folder
    `shards` with `run`, write OUT/predictions.parquet and .csv, and print a summary table or JSON."""
    if bool(src) == bool(shards):
        raise click.UsageError("give --src (videos, a folder or a manifest) or --shards (an output folder), not both")
    if overrides and shards:
        raise click.UsageError("--set applies to the stages --src runs; --shards folders are scored as they are")
    record = model_io.read_run(run)
    if src:  # every refusal before the model is built
        pipeline.prepare(record, list(src), overrides)
    else:
        check_shards(record, shards)
    model = Run(model_io.load_model(record))
    rows = model.predict(list(src), out, overrides, Console(stderr=True)) if src else model.predict_shards(shards)
    files = output.write(out, rows)
    if as_json:
        click.echo(dumps(output.as_json(rows, files), indent=2))
    else:
        Console(soft_wrap=False).print(output.summary(rows, files))
