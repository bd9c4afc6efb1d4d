"""kebr_data: the KEBR data pipeline (index, audio, asr, mask, acoustic, visual, export)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

__version__ = "0.1.0"


def open(root: str | os.PathLike[str], stages: Iterable[str] | None = None,  # noqa: A001
         columns: Iterable[str] | None = None, partial: bool = False, format: str = "arrow") -> Any:
    """The output folder `root` as one per-clip table (`clip_id`, then `<stage>.<column>`: `plan.label`,
    `mask.label`, ...): a pyarrow Table, or with `format="pandas"` / `"datasets"` a DataFrame or an HF
    `datasets.Dataset`. `root` is a str or a path. Reads only committed, current tables; see `kebr_data.reader`."""
    from .reader import open_folder

    return open_folder(root, stages, columns, partial, format)
