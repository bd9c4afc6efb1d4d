"""`--format hdf5`: one file per shard, readable with h5py alone.

Datasets `clip_id`, `split`, `label` (and `label_t/a/v` when the plan has them), `text`, `masked_text`, `mask_label`, `status/<stage>`; for
every stage with frame features, a group `<stage>` holding `values` (frames × D) and `offsets`
(clip i's frames are `values[offsets[i]:offsets[i+1]]`), the stage's other per-frame columns
flattened alongside (`visual/success`, `visual/confidence`), and the columns the stage declares in
`hdf5_attributes` as attributes, their distinct values joined by commas (`acoustic.attrs["recipe"]`). File attributes: `schema_version`, `sources`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .. import __version__
from ..errors import PlanError
from ..schema import SCHEMA_VERSION
from ..stages import registry
from ..storage.atomic import atomic_commit
from ..storage.store import frames_of
from .base import ShardFormat, ShardTables, done_path

META_COLUMNS = ("clip_id", "status", "error", "message")


class UnfinishedExport(PlanError, ValueError):
    """An export file without its done marker (an interrupted export)."""


def _strings(values: list[Any]) -> np.ndarray:
    import h5py

    return np.array([v or "" for v in values], dtype=object).astype(h5py.string_dtype("utf-8"))


def _flat(column: pa.ChunkedArray) -> np.ndarray:
    """A list<primitive> column's values, concatenated over clips (nulls are empty)."""
    array = column.combine_chunks()
    return array.flatten().to_numpy(zero_copy_only=False)


def _write_stage(f: Any, stage: str, table: pa.Table) -> None:
    declared = registry()[stage].frame_columns()
    frame_columns = {c: table.schema.field(c).type.value_type.list_size for c in declared}  # widths a model chose
    if not frame_columns:
        return
    group = f.create_group(stage)
    for column, dim in frame_columns.items():
        frames = frames_of(table.column(column))
        target = group if column == "features" else group.create_group(column)
        target["values"], target["offsets"] = frames.values, frames.offsets
        target.attrs["dim"] = dim
    attributes = registry()[stage].hdf5_attributes
    for field in table.schema:
        if field.name in frame_columns or field.name in META_COLUMNS:
            continue
        if pa.types.is_list(field.type) and not pa.types.is_nested(field.type.value_type):
            group[field.name] = _flat(table.column(field.name))
        elif field.name in attributes:  # a per-shard setting (recipe, backend, model): its values, joined
            group.attrs[field.name] = ",".join(sorted({v for v in table.column(field.name).to_pylist() if v}))


class Hdf5Format(ShardFormat):
    suffix = "h5"

    def describe(self) -> str:
        return "a file per shard (ragged values + offsets)"

    def write_shard(self, path: Path, tables: ShardTables) -> tuple[int, str]:
        """One shard as an HDF5 file (committed by `atomic_commit`: a temp name, fsynced, renamed)."""
        import h5py

        text, masked, mask_label = tables.texts()
        plan = tables.plan

        def fill(tmp: Path) -> None:
            with h5py.File(tmp, "w") as f:
                f.attrs.update({"schema_version": SCHEMA_VERSION, "toolkit_version": __version__,
                                "sources": json.dumps(tables.hashes, sort_keys=True)})
                f["clip_id"] = _strings(plan.column("clip_id").to_pylist())
                f["split"] = _strings(plan.column("split").to_pylist())
                f["label"] = np.array([np.nan if v is None else v for v in plan.column("label").to_pylist()],
                                      np.float32)
                for col in ("label_t", "label_a", "label_v"):  # per-modality labels (CH-SIMS), when the plan has them
                    if col in plan.column_names:
                        f[col] = np.array([np.nan if v is None else v for v in plan.column(col).to_pylist()],
                                          np.float32)
                f["text"], f["masked_text"] = _strings(text), _strings(masked)
                f["mask_label"] = np.array(mask_label, np.float32)
                for stage, table in tables.stages.items():
                    f[f"status/{stage}"] = _strings(table.column("status").to_pylist())
                    _write_stage(f, stage, table)

        return atomic_commit(path, fill)


def read_hdf5(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A finished HDF5 export of one shard (`path` a str or a path) as numpy arrays (refuses files without
    their done marker).

    Frame groups come back as one array per clip under the stage's name."""
    import h5py

    path = Path(path)
    if not done_path(path.parent, path.stem).exists():
        raise UnfinishedExport(f"{path} has no done marker: an interrupted export, not a finished one; rerun "
                        "`kebr-data export` to finish it")
    with h5py.File(path, "r") as f:
        out: dict[str, Any] = {k: f[k][()] for k in ("clip_id", "split", "label", "text", "masked_text", "mask_label")}
        for k in ("clip_id", "split", "text", "masked_text"):
            out[k] = [v.decode() for v in out[k]]
        out |= {k: f[k][()] for k in ("label_t", "label_a", "label_v") if k in f}
        for stage in f:
            group = f[stage]
            if isinstance(group, h5py.Group) and "values" in group and "offsets" in group:
                values, offsets = group["values"][()], group["offsets"][()]
                out[stage] = [values[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        out["attrs"] = dict(f.attrs)
    return out
