"""kebr_model: the KEBR model (TCMF fusion + MCC loss) and its trainer, `kebr-train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"


def load_run(path: str | Path) -> Any:
    """A fine-tuned run loaded once: `.predict(paths_or_folder)`, `.predict_shards(folder)`,
    `.predict_batch(batch)` (see docs/predict.md). torch is imported here, not with the package."""
    from .predict.api import load_run as load

    return load(path)
