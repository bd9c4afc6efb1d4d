"""`kebr-data export`: the stage tables in other tools' formats (DESIGN §4).

- `parquet`: one merged table per shard (plan columns, then every stage's columns as `<stage>.<column>`).
- `hdf5`: one file per shard, readable with h5py alone: ragged frame features as `values` + `offsets`
  (rows of clip i are values[offsets[i]:offsets[i+1]]), texts and labels as datasets, schema version,
  recipe and config hashes as attributes.
- `mmsa`: MMSA's pickle layout (`train/valid/test` -> `id, raw_text, audio, vision, audio_lengths,
  vision_lengths, regression_labels`), padded/truncated to `--audio-len` / `--vision-len` frames.

Every file is written to a temp name and renamed, then a done marker records the source tables'
hashes: a half-written export is never taken for a finished one, and a rerun redoes only what is
missing or out of date.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import __version__, plan as plan_mod
from .errors import PlanError
from .schema import SCHEMA_VERSION, clip_text
from .storage.atomic import atomic_write, atomic_write_json, fsync_dir, tmp_path_for
from .storage.layout import OutputDir, shard_name
from .storage.markers import read_marker
from .storage.parquet import read_table, write_table

FORMATS = ("parquet", "hdf5", "mmsa")
STAGE_ORDER = ("audio", "asr", "mask", "acoustic", "visual")
SPLITS = ("train", "valid", "test")


def _source(out: OutputDir, shard: int) -> tuple[dict[str, pa.Table], dict[str, str]]:
    """The shard's committed stage tables (without audio bytes) and the hashes they were read at."""
    tables = {"plan": read_table(out.table("plan", shard))}
    marker = plan_mod.read_plan_marker(out)
    hashes = {"plan": plan_mod.shard_hash(marker, shard)}
    for stage in STAGE_ORDER:
        m = read_marker(out.marker(stage, shard))
        if m is None:
            continue
        table = read_table(out.table(stage, shard))
        tables[stage] = table.drop_columns(["flac"]) if stage == "audio" else table
        hashes[stage] = m.output_sha256
    return tables, hashes


def _done(dest: Path, shard: int) -> Path:
    return dest / "_done" / shard_name(shard, "json")


def _up_to_date(dest: Path, shard: int, hashes: dict[str, str], target: Path) -> bool:
    try:
        return target.exists() and json.loads(_done(dest, shard).read_text())["sources"] == hashes
    except (FileNotFoundError, ValueError, KeyError):
        return False


def merged_table(tables: dict[str, pa.Table]) -> pa.Table:
    """Plan columns, then each stage's columns prefixed with the stage name (rows are aligned)."""
    out = tables["plan"]
    for stage in STAGE_ORDER:
        if stage in tables:
            for field in tables[stage].schema:
                if field.name != "clip_id":
                    out = out.append_column(f"{stage}.{field.name}", tables[stage].column(field.name))
    return out


def _ragged(column: pa.ChunkedArray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(values N_frames × dim, offsets N+1) of a list<fixed_size_list> column (nulls are empty)."""
    arrays, offsets = [], [0]
    for value in column.to_pylist():
        a = np.asarray(value or [], dtype=np.float32).reshape(-1, dim)
        arrays.append(a)
        offsets.append(offsets[-1] + len(a))
    values = np.concatenate(arrays) if arrays else np.zeros((0, dim), np.float32)
    return values, np.asarray(offsets, dtype=np.int64)


def _texts(tables: dict[str, pa.Table]) -> tuple[list[str], list[str], list[float]]:
    n = tables["plan"].num_rows
    given = tables["plan"].column("given_text").to_pylist()
    mask = tables["mask"].to_pylist() if "mask" in tables else [None] * n
    asr = tables["asr"].select(["status", "text"]).to_pylist() if "asr" in tables else [None] * n
    text = [clip_text(g, m, a) or "" for g, m, a in zip(given, mask, asr, strict=True)]
    masked = [m["masked_text"] if m and m["status"] == "ok" else "" for m in mask]
    mask_label = [m["label"] if m and m["status"] == "ok" else np.nan for m in mask]
    return text, masked, mask_label


def write_hdf5(path: Path, tables: dict[str, pa.Table], hashes: dict[str, str]) -> None:
    """One shard as an HDF5 file (written to a temp name, fsynced, renamed)."""
    import h5py

    tmp = tmp_path_for(path)
    text, masked, mask_label = _texts(tables)
    plan = tables["plan"]
    strings = h5py.string_dtype("utf-8")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"schema_version": SCHEMA_VERSION, "toolkit_version": __version__,
                            "sources": json.dumps(hashes, sort_keys=True)})
            f["clip_id"] = np.array(plan.column("clip_id").to_pylist(), dtype=object).astype(strings)
            f["split"] = np.array([s or "" for s in plan.column("split").to_pylist()], dtype=object).astype(strings)
            f["label"] = np.array([np.nan if v is None else v for v in plan.column("label").to_pylist()], np.float32)
            f["text"] = np.array(text, dtype=object).astype(strings)
            f["masked_text"] = np.array(masked, dtype=object).astype(strings)
            f["mask_label"] = np.array(mask_label, np.float32)
            for stage in STAGE_ORDER:
                if stage in tables:
                    f[f"status/{stage}"] = np.array(tables[stage].column("status").to_pylist(),
                                                     dtype=object).astype(strings)
            for stage, dim in (("acoustic", 33), ("visual", 709)):
                if stage not in tables:
                    continue
                values, offsets = _ragged(tables[stage].column("features"), dim)
                group = f.create_group(stage)
                group["values"], group["offsets"] = values, offsets
                group.attrs["dim"] = dim
                if stage == "acoustic":
                    recipes = {r for r in tables[stage].column("recipe").to_pylist() if r}
                    group.attrs["recipe"] = ",".join(sorted(recipes))
                else:
                    flags = [np.asarray(v or [], bool) for v in tables[stage].column("success").to_pylist()]
                    conf = [np.asarray(v or [], np.float32) for v in tables[stage].column("confidence").to_pylist()]
                    group["success"] = np.concatenate(flags) if flags else np.zeros(0, bool)
                    group["confidence"] = np.concatenate(conf) if conf else np.zeros(0, np.float32)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_hdf5(path: Path) -> dict[str, Any]:
    """A finished HDF5 export of one shard as numpy arrays (refuses files without their done marker)."""
    import h5py

    shard = int(path.stem.split("-")[1])
    if not _done(path.parent, shard).exists():
        raise ValueError(f"{path} has no done marker: an interrupted export, not a finished one")
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in ("clip_id", "split", "label", "text", "masked_text", "mask_label")}
        for k in ("clip_id", "split", "text", "masked_text"):
            out[k] = [v.decode() for v in out[k]]
        for stage in ("acoustic", "visual"):
            if stage in f:
                values, offsets = f[stage]["values"][()], f[stage]["offsets"][()]
                out[stage] = [values[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        out["attrs"] = dict(f.attrs)
    return out


def _mmsa_rows(tables: dict[str, pa.Table], audio_len: int, vision_len: int) -> list[dict[str, Any]]:
    text, _, mask_label = _texts(tables)
    plan = tables["plan"].to_pylist()
    rows = []
    for i, p in enumerate(plan):
        label = p["label"] if p["label"] is not None else (mask_label[i] if not np.isnan(mask_label[i]) else 0.0)
        feats = {}
        for stage, dim, limit in (("acoustic", 33, audio_len), ("visual", 709, vision_len)):
            value = tables[stage].column("features")[i].as_py() if stage in tables else None
            a = np.asarray(value or [], np.float32).reshape(-1, dim)[:limit]
            padded = np.zeros((limit, dim), np.float32)
            padded[: len(a)] = a
            feats[stage] = (padded, len(a))
        rows.append({"split": p["split"] if p["split"] in SPLITS else "train", "id": p["clip_id"], "raw_text": text[i],
                     "audio": feats["acoustic"][0], "audio_lengths": feats["acoustic"][1],
                     "vision": feats["visual"][0], "vision_lengths": feats["visual"][1], "regression_labels": label})
    return rows


def export(root: Path, fmt: str, dest: Path | None = None, audio_len: int = 400, vision_len: int = 55) -> Path:
    """Export every shard of `root` to `dest` (default ROOT/export/FORMAT); return the destination."""
    if fmt not in FORMATS:
        raise PlanError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = OutputDir(root)
    marker = plan_mod.read_plan_marker(out)
    if marker is None:
        raise PlanError(f"{root} holds no committed plan (is it a kebr-data output folder?)")
    dest = dest or root / "export" / fmt
    dest.mkdir(parents=True, exist_ok=True)
    mmsa: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    all_hashes = {}
    for shard in range(marker["num_shards"]):
        tables, hashes = _source(out, shard)
        all_hashes[f"{shard:05d}"] = hashes
        if fmt == "mmsa":
            for r in _mmsa_rows(tables, audio_len, vision_len):
                mmsa[r.pop("split")].append(r)
            continue
        target = dest / shard_name(shard, "parquet" if fmt == "parquet" else "h5")
        if _up_to_date(dest, shard, hashes, target):
            continue
        if fmt == "parquet":
            write_table(target, merged_table(tables))
        else:
            write_hdf5(target, tables, hashes)
        atomic_write_json(_done(dest, shard), {"sources": hashes, "format": fmt, "toolkit_version": __version__})
    if fmt == "mmsa":
        data = {}
        for split, rows in mmsa.items():
            data[split] = {
                "id": [r["id"] for r in rows], "raw_text": np.array([r["raw_text"] for r in rows], dtype=object),
                "audio": np.stack([r["audio"] for r in rows]) if rows else np.zeros((0, audio_len, 33), np.float32),
                "vision": np.stack([r["vision"] for r in rows]) if rows else np.zeros((0, vision_len, 709), np.float32),
                "audio_lengths": [r["audio_lengths"] for r in rows],
                "vision_lengths": [r["vision_lengths"] for r in rows],
                "regression_labels": np.array([r["regression_labels"] for r in rows], np.float32)}
        target = dest / "mmsa.pkl"
        atomic_write(target, lambda fh: pickle.dump(data, fh, protocol=4))
        atomic_write_json(dest / "_done" / "mmsa.json", {"sources": all_hashes, "format": fmt,
                                                           "audio_len": audio_len, "vision_len": vision_len})
    return dest
