"""kebr_data: the KEBR data pipeline (index, audio, asr, mask, acoustic, visual, export)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

__version__ = "0.1.0"


def open(root: Path | str, stages: Iterable[str] | None = None, columns: Iterable[str] | None = None,  # noqa: A001
         partial: bool = False, format: str = "arrow") -> Any:
    """The output folder `root` as one per-clip table (`clip_id`, then `<stage>.<column>`: `plan.label`,
    `mask.label`, ...): a pyarrow Table, or with `format="pandas"` / `"datasets"` a DataFrame or an HF
    `datasets.Dataset`. Reads only committed, current tables; see `kebr_data.reader`."""
    from .reader import open_folder

    return open_folder(root, stages, columns, partial, format)
