"""`Hdf5Reader`: the training data of a `kebr-data export --format hdf5` folder (one `shard-NNNNN.h5` per
shard, each checked against the size and sha256 its export marker `_done/shard-NNNNN.json` recorded).

An export carries no stage markers and no plan table: there is no inventory before the frames are read,
the metric set is the default one, and the run's identity is the files' sizes and recorded hashes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kebr_data.config import content_hash
from kebr_data.errors import PlanError, StaleOutputError
from kebr_data.storage.verified import Digests

from ..config import RAW_AUDIO
from .parquet import FRAME_STAGES, LABELS
from .reader import ShardRows

AGAIN = "export it again from its output folder (`kebr-data export --out FOLDER --format hdf5`)"


class Hdf5Reader:
    """The training data of one HDF5 export folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._files = sorted(self.root.glob("shard-*.h5"))
        self._widths: dict[str, int | None] = {}

    def shard_ids(self) -> list[int]:
        return [int(p.stem.split("-")[1]) for p in self._files]

    def inventory(self, task: str, label: str = "label") -> None:
        return None

    def plan_labels(self) -> None:
        return None

    def check(self, task: str, allow_stale: bool = False, modalities: dict[str, str] | None = None,
              digests: Digests | None = None) -> list[str]:
        """Refuse (StaleOutputError) an export file whose size and sha256 are not the ones its export marker
        recorded (a file edited, truncated or replaced after it was written), unless `allow_stale`."""
        if allow_stale:
            return []
        from kebr_data.export.base import done_path, recorded_output

        digests = digests or Digests()
        for h5 in self._files:
            recorded, marker = recorded_output(self.root, h5.stem), done_path(self.root, h5.stem)
            if recorded is None:
                raise StaleOutputError(f"{h5} has no export marker recording its sha256 ({marker}): {AGAIN}")
            if digests.digest(h5) != recorded:
                raise StaleOutputError(f"{h5} is not the file its export wrote (its size or sha256 differs from "
                                       f"{marker}): {AGAIN}")
        digests.save()
        return []

    def widths(self, modalities: dict[str, str]) -> dict[str, int]:
        """Frame width per modality, from the first export file holding the stage's array."""
        widths = {}
        for m, stage in modalities.items():
            if stage == RAW_AUDIO:
                raise PlanError(f"modalities.{m} = {RAW_AUDIO!r} reads the audio stage's FLAC, but {self.root} is an "
                                "HDF5 export, which drops the FLAC: give the kebr-data output folder")
            if stage not in self._widths:
                self._widths[stage] = self._width(stage)
            if self._widths[stage] is None:
                raise PlanError(f"modalities.{m} = {stage!r}: the HDF5 export has no {stage} table with a `features` "
                                f"frame column in {self.root}; export it from an output folder that has the stage, "
                                f"or pick another modalities.{m}, or a modalities.use without {m[0]}")
            widths[m] = self._widths[stage]
        return widths

    def _width(self, stage: str) -> int | None:
        import h5py

        for path in self._files:
            with h5py.File(path, "r") as f:
                if stage in f and "values" in f[stage]:
                    return int(f[stage]["values"].shape[1])
        return None

    def frame_modalities(self, modalities: dict[str, str] | None = None) -> set[str]:
        """Every modality asked about: an export's arrays do not say which clips had frames."""
        return set(FRAME_STAGES if modalities is None else modalities)

    def identity(self, stages: list[str], widths: dict[str, int]) -> dict[str, Any]:
        """Each shard file's size, and the sources and file sha256 its export marker lists (the run has
        checked each file against that sha256)."""
        from kebr_data.export.base import read_done

        done = {p.stem: read_done(self.root, p.stem) or {} for p in self._files}
        plan = content_hash({"files": {p.name: p.stat().st_size for p in self._files},
                             "sources": {k: {f: d.get(f) for f in ("sources", "sha256")} for k, d in done.items()}})
        return {"plan": plan, "stages": {}, "widths": dict(widths)}

    def source(self) -> dict[str, Any]:
        """An export records no stage settings: the folder alone."""
        return {"path": str(self.root.resolve())}

    def shard_rows(self, shard: int, stages: list[str], digests: Digests | None = None) -> ShardRows:
        """The plan, mask, asr and frame-stage rows of one export file, shaped like the stage tables."""
        from kebr_data.export import read_hdf5

        path = self.root / f"shard-{shard:05d}.h5"
        d = read_hdf5(path)
        n = len(d["clip_id"])
        plan = [{"clip_id": d["clip_id"][i], "split": d["split"][i] or None, "given_text": None,
                 **{c: _label(d[c][i], d["clip_id"][i], path) for c in LABELS if c in d}} for i in range(n)]
        mask = [{"status": "ok" if d["masked_text"][i] else "skipped", "masked_text": d["masked_text"][i],
                 "text": d["text"][i], "label": float(d["mask_label"][i])} for i in range(n)]
        asr = [{"status": "ok" if d["text"][i] else "skipped", "text": d["text"][i]} for i in range(n)]
        frames = {s: [{"status": "ok", "features": d[s][i]} for i in range(n)] if s in d else None for s in stages}
        return ShardRows(plan, mask, asr, frames)


def _label(value: Any, clip_id: str, path: Path) -> float | None:
    """A label cell of an HDF5 export as a float; None for a missing one (None or NaN, as HDF5 exports
    store it). An infinite label is refused (PlanError naming the clip), as `kebr-data validate` refuses
    it in the stage tables: the trainer would learn infinity."""
    if value is None or np.isnan(float(value)):
        return None
    if not np.isfinite(float(value)):
        raise PlanError(f"clip {clip_id!r} in {path} has the label {float(value)}, not a finite number: fix the "
                        "source of that clip, check the output folder with `kebr-data validate --out FOLDER` and "
                        "export it again")
    return float(value)
