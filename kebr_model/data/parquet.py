"""`ParquetReader`: the training data of a kebr-data output folder, read through one `Store`.

A shard's stage tables (plan, mask, asr, and the stage of each non-verbal modality: any stage with a
`features` frame column, its width read from the shards, or the audio stage's FLAC as the raw waveform
of an in-graph audio encoder) are read side by side and checked row by row against the plan; tables
that are not committed and current, and the absent stage of a modality the run reads, are refused
before training starts (`check`). Each table's sha256 is checked against its marker once per run
(remembered by stat in the run folder's `verified_tables.json`), and each shard's tables are
stat-checked again whenever an epoch reads them (re-hashed only if they changed), so a table edited in
place is never trained on. The one `Store` caches every marker, and the plan's split and label columns
are read once, for the preflight and the metric set alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from kebr_data.errors import PlanError, StaleOutputError
from kebr_data.config import content_hash
from kebr_data.storage.store import PLAN, Store, fix_command
from kebr_data.storage.verified import Digests

from ..config import RAW_AUDIO
from . import preflight
from .reader import ShardRows

#: columns read from the text stages; the modality stages give `status` and their `features` frames
TEXT_COLUMNS = {"mask": ["status", "masked_text", "text", "label"], "asr": ["status", "text"]}
STAGE_COLUMNS = {**TEXT_COLUMNS, RAW_AUDIO: ["status", "flac"]}
LABELS = ("label", "label_t", "label_a", "label_v")
#: the frame modalities and the stage tables that hold them by default (`DataConfig.modalities`)
FRAME_STAGES = {"audio": "acoustic", "visual": "visual"}


class ParquetReader:
    """The training data of one kebr-data output folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.store = Store(self.root)
        self._plan_labels: list[pa.Table] | None = None
        self._widths: dict[tuple[str, str], int] = {}

    def shard_ids(self) -> list[int]:
        if self.store.plan_or_none() is None:
            raise PlanError(f"{self.root} is neither a kebr-data output folder nor an HDF5 export: make one with "
                            "`kebr-data extract --src DATASET --out FOLDER`")
        return list(range(self.store.plan.num_shards))

    def plan_labels(self) -> list[pa.Table] | None:
        if self._plan_labels is None and self.store.plan_or_none() is not None:
            self._plan_labels = []
            for k in range(self.store.plan.num_shards):
                table = self.store.read(PLAN, k)
                self._plan_labels.append(table.select([c for c in ("split", *LABELS) if c in table.column_names]))
        return self._plan_labels

    def inventory(self, task: str, label: str = "label") -> preflight.Inventory | None:
        if not self.root.is_dir():
            raise preflight.TrainSetupError(f"--shards {self.root} does not exist; give the --out folder of "
                                            "`kebr-data extract`")
        return preflight.inventory(self.store, self.plan_labels(), task, label)

    def check(self, task: str, allow_stale: bool = False, modalities: dict[str, str] | None = None,
              digests: Digests | None = None) -> list[str]:
        """The stages training will read; refuses (StaleOutputError naming the fix) tables that are not
        committed, current (sha256 against their markers, through `digests`: a table already hashed with the
        same stat is not hashed again) and aligned with the plan, unless `allow_stale`. The stage of every
        modality in `modalities` (those the model reads) must be there even with `allow_stale` (PlanError):
        without it the model would train on empty frames, a text-only run under the modality's name."""
        self.shard_ids()
        modalities = FRAME_STAGES if modalities is None else modalities
        present = set(self.store.stages())
        for m, stage in modalities.items():
            if stage not in present and stage != RAW_AUDIO:  # the raw waveform's own message: `widths`
                raise PlanError(f"modalities.{m} = {stage!r}, but {self.root} has no committed {stage}/ table: run "
                                f"`{fix_command(self.root, stage)}`, or pick another modalities.{m} or a "
                                f"modalities.use without {m[0]}")
        wanted = [*TEXT_COLUMNS, *modalities.values()]
        used = [s for s in dict.fromkeys(wanted) if s in present]
        if task == "pretrain" and "mask" not in present:
            raise PlanError(f"{self.root} has no mask/ tables, which pre-training learns from: run "
                            f"`kebr-data mask --out {self.root}`")
        if not allow_stale:
            self.store.digests = digests or Digests()
            self.store.require_current([PLAN, *used], verify=True)
            self.store.digests.save()
        return used

    def widths(self, modalities: dict[str, str]) -> dict[str, int]:
        """Frame width per modality, from the stage table's schema (read once per stage); PlanError for a stage
        with no frames. The audio stage's raw waveform is one sample per row (width 1) and needs the stage
        committed."""
        widths = {}
        for m, stage in modalities.items():
            if (m, stage) not in self._widths:
                self._widths[(m, stage)] = self._width(m, stage)
            widths[m] = self._widths[(m, stage)]
        return widths

    def _width(self, m: str, stage: str) -> int:
        if stage == RAW_AUDIO:
            if not self.store.committed_shards(RAW_AUDIO):
                raise PlanError(f"modalities.{m} = {RAW_AUDIO!r} reads the audio stage's FLAC, but {self.root} has "
                                f"no committed audio/ table: run `kebr-data audio --out {self.root}`")
            return 1
        width = self.store.frame_width(stage)
        if width is None:  # never a width made up for frames that are not there (a run without the modality)
            raise PlanError(f"modalities.{m} = {stage!r}: the output folder has no committed {stage} table with a "
                            f"`features` frame column in {self.root}; run `{fix_command(self.root, stage)}`, or "
                            f"pick another modalities.{m}, or a modalities.use without {m[0]}")
        return width

    def frame_modalities(self, modalities: dict[str, str] | None = None) -> set[str]:
        """The modalities of `modalities` (default: audio and visual from their usual stages) whose stage has
        `ok` rows in committed shards."""
        modalities = FRAME_STAGES if modalities is None else modalities
        if self.store.plan_or_none() is None:
            return set(modalities)
        return {m for m, stage in modalities.items()
                if any(self.store.marker(stage, shard).ok for shard in self.store.committed_shards(stage))}

    def identity(self, stages: list[str], widths: dict[str, int]) -> dict[str, Any]:
        """The plan's content (every plan shard's sha256: clips, splits, labels), the configuration hashes and
        committed sha256s of `stages`, and the frame `widths`."""
        store = self.store
        plan = content_hash({shard: entry["sha256"] for shard, entry in store.plan.shards.items()})
        shards = range(store.plan.num_shards)
        found = {s: {"settings": sorted(store.config_hashes(s)),
                     "tables": content_hash([store.committed_hash(s, k) for k in shards])} for s in stages}
        return {"plan": plan, "stages": found, "widths": dict(widths)}

    def source(self) -> dict[str, Any]:
        from kebr_data.pipeline import run_record
        from kebr_data.storage.layout import OutputDir

        store, saved = self.store, run_record.read(OutputDir(self.root))
        return {"path": str(self.root.resolve()), "plan_hash": store.plan.plan_hash, "config": saved.get("config"),
                "tools": saved.get("tools", {}),
                "config_hashes": {s: sorted(store.config_hashes(s)) for s in store.stages()}}

    def shard_rows(self, shard: int, stages: list[str], digests: Digests | None = None) -> ShardRows:
        if digests is not None:
            self.recheck(shard, ["mask", "asr", *stages], digests)
        plan = self.store.read(PLAN, shard).to_pylist()
        ids = [p["clip_id"] for p in plan]
        mask, asr = (self._stage_rows(s, shard, ids, False) for s in ("mask", "asr"))
        return ShardRows(plan, mask, asr, {s: self._stage_rows(s, shard, ids, s != RAW_AUDIO) for s in stages})

    def recheck(self, shard: int, stages: list[str], digests: Digests) -> None:
        """Refuse a shard whose tables changed since `check` verified them into `digests` (a stat each; a
        changed table is hashed again and must still match its marker)."""
        store = self.store
        store.digests = digests
        for stage in [PLAN, *(s for s in stages if store.marker(s, shard) is not None)]:
            if why := store.problem(stage, shard, verify=True):
                raise StaleOutputError(f"{stage} shard {shard:05d} of {store.root} changed during training ({why}); "
                                       f"fix: {fix_command(store.root, stage)}, then rerun with --resume auto")

    def _stage_rows(self, stage: str, shard: int, ids: list[str], frames: bool) -> list[dict] | None:
        """Rows of a committed stage table, checked against the plan's clip ids; frame features come as one
        numpy array per row, sliced from the column's Arrow buffer rather than built from Python floats."""
        if self.store.marker(stage, shard) is None:
            return None
        rows = self.store.read_aligned(stage, shard, STAGE_COLUMNS.get(stage, ["status"]), ids).to_pylist()
        if frames:
            column = self.store.frames(stage, shard)
            for i, row in enumerate(rows):
                row["features"] = column.clip(i)
        return rows
