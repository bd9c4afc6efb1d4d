"""Fine-tuning data from MMSA's pickles (`train/valid/test` -> `id, raw_text, audio, vision,
audio_lengths, vision_lengths, regression_labels[, regression_labels_T/A/V]`), turned into kebr-data
shards so the trainer reads them like any other. Features of any width are kept (MOSI's 5/20,
MOSEI's 74/35, the released KEBR 33/709), and `-inf` values (COVAREP's) become 0 as MMSA's loader
does. Unpickling runs code from the file, so it needs explicit trust."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .clip_ids import clip_id_problem
import pyarrow as pa

from .schema import ACOUSTIC, PLAN, VISUAL, frame_field
from .storage.commit import commit_plan_marker, commit_rows
from .storage.layout import OutputDir

SPLITS = ("train", "valid", "test")


class UntrustedPickle(PermissionError):
    """Refused to unpickle a file without --trust-pickle."""


def load_mmsa_pickle(path: Path, trust: bool) -> dict[str, Any]:
    """Unpickle an MMSA feature file, only when the caller trusts it (pickles execute code)."""
    if not trust:
        raise UntrustedPickle(f"{path} is a pickle: loading it can run arbitrary code. Pass --trust-pickle only "
                              "if you trust where it came from.")
    with open(path, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - explicit opt-in above


def _frames(x: np.ndarray, length: int | None, what: str, dim: int | None) -> np.ndarray:
    """One sample's frames (cut to its length), `-inf` set to 0 as MMSA's loader does."""
    x = np.array(x, dtype=np.float32)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise ValueError(f"{what} features have shape {x.shape}; expected (frames, {dim or 'width'}) like the "
                         "split's other samples")
    x[np.isneginf(x)] = 0.0
    return x[: int(length)] if length is not None else x


def with_width(schema: pa.Schema, dim: int) -> pa.Schema:
    """A stage schema whose `features` column holds `dim`-wide frames."""
    return schema.set(schema.get_field_index("features"), frame_field("features", dim))


def _label(part: dict[str, Any], key: str, i: int) -> float | None:
    if key not in part:
        return None
    value = float(np.asarray(part[key][i]).reshape(-1)[0])
    return None if np.isnan(value) else value


def import_mmsa(data: dict[str, Any], out_root: Path, shard_size: int = 1000) -> dict[str, int]:
    """Write plan, acoustic and visual shards (with markers) for every sample of every split."""
    rows = []
    dims: dict[str, int | None] = {"audio": None, "vision": None}
    for split in SPLITS:
        part = data.get(split)
        if part is None:
            continue
        for i, cid in enumerate(part["id"]):
            cid = str(cid)
            if clip_id_problem(cid):
                raise ValueError(f"sample id {cid!r}: {clip_id_problem(cid)}")
            a_len = part.get("audio_lengths", [None] * len(part["id"]))[i]
            v_len = part.get("vision_lengths", [None] * len(part["id"]))[i]
            audio = _frames(part["audio"][i], a_len, f"{split} {cid} audio", dims["audio"])
            vision = _frames(part["vision"][i], v_len, f"{split} {cid} vision", dims["vision"])
            dims = {"audio": audio.shape[1], "vision": vision.shape[1]}
            labels = {f"label_{m}": _label(part, f"regression_labels_{m.upper()}", i) for m in "tav"}
            rows.append((cid, split, _label(part, "regression_labels", i), str(part["raw_text"][i]), audio, vision,
                         labels))
    rows.sort(key=lambda r: r[0])
    out = OutputDir(out_root)
    shards, counts = {}, {s: 0 for s in SPLITS}
    for k, start in enumerate(range(0, len(rows), shard_size)):
        chunk = rows[start:start + shard_size]
        plan = [{"clip_id": c, "status": "ok", "split": s, "label": y, "given_text": t, "source": "mmsa-pickle", **lab}
                for c, s, y, t, _, _, lab in chunk]
        acoustic = [{"clip_id": c, "status": "ok", "recipe": "mmsa-pickle", "frame_rate": None,
                     "num_frames": len(a), "features": a} for c, _, _, _, a, _, _ in chunk]
        visual = [{"clip_id": c, "status": "ok", "backend": "mmsa-pickle", "fps": None, "num_frames": len(v),
                   "features": v, "success": np.ones(len(v), bool), "confidence": np.ones(len(v), np.float32),
                   "face_ratio": 1.0} for c, _, _, _, _, v, _ in chunk]
        for c in plan:
            counts[c["split"]] += 1
        shards[f"{k:05d}"] = commit_rows(out, "plan", k, plan, PLAN, "mmsa-pickle")
        schemas = {"acoustic": with_width(ACOUSTIC, dims["audio"] or 1), "visual": with_width(VISUAL, dims["vision"] or 1)}
        for stage, schema, table_rows in (("acoustic", schemas["acoustic"], acoustic),
                                          ("visual", schemas["visual"], visual)):
            commit_rows(out, stage, k, table_rows, schema, "mmsa-pickle", shards[f"{k:05d}"]["sha256"])
    commit_plan_marker(out, shards, "mmsa-pickle", shard_size)
    return counts
