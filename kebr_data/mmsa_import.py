"""Fine-tuning data from MMSA's pickles (`train/valid/test` -> `id, raw_text, audio, vision,
audio_lengths, vision_lengths, regression_labels`), turned into kebr-data shards so the trainer
reads them like any other. Unpickling runs code from the file, so it needs explicit trust."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .clip_ids import clip_id_problem
from .schema import ACOUSTIC, PLAN, VISUAL, frame_columns
from .storage.commit import commit_plan_marker, commit_rows
from .storage.layout import OutputDir

A_DIM, V_DIM = frame_columns(ACOUSTIC)["features"], frame_columns(VISUAL)["features"]

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


def _frames(x: np.ndarray, length: int | None, dim: int, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} features have shape {x.shape}; this model uses {dim}-d frames "
                         "(the released KEBR features: 33-d librosa audio, 709-d OpenFace visual)")
    return x[: int(length)] if length is not None else x


def import_mmsa(data: dict[str, Any], out_root: Path, shard_size: int = 1000) -> dict[str, int]:
    """Write plan, acoustic and visual shards (with markers) for every sample of every split."""
    rows = []
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
            rows.append((cid, split, float(np.asarray(part["regression_labels"][i]).reshape(-1)[0]),
                         str(part["raw_text"][i]), _frames(part["audio"][i], a_len, A_DIM, "audio"),
                         _frames(part["vision"][i], v_len, V_DIM, "vision")))
    rows.sort(key=lambda r: r[0])
    out = OutputDir(out_root)
    shards, counts = {}, {s: 0 for s in SPLITS}
    for k, start in enumerate(range(0, len(rows), shard_size)):
        chunk = rows[start:start + shard_size]
        plan = [{"clip_id": c, "status": "ok", "split": s, "label": y, "given_text": t, "source": "mmsa-pickle"}
                for c, s, y, t, _, _ in chunk]
        acoustic = [{"clip_id": c, "status": "ok", "recipe": "mmsa-pickle", "frame_rate": None,
                     "num_frames": len(a), "features": a} for c, _, _, _, a, _ in chunk]
        visual = [{"clip_id": c, "status": "ok", "backend": "mmsa-pickle", "fps": None, "num_frames": len(v),
                   "features": v, "success": np.ones(len(v), bool), "confidence": np.ones(len(v), np.float32),
                   "face_ratio": 1.0} for c, _, _, _, _, v in chunk]
        for c in plan:
            counts[c["split"]] += 1
        shards[f"{k:05d}"] = commit_rows(out, "plan", k, plan, PLAN, "mmsa-pickle")
        for stage, schema, table_rows in (("acoustic", ACOUSTIC, acoustic), ("visual", VISUAL, visual)):
            commit_rows(out, stage, k, table_rows, schema, "mmsa-pickle", shards[f"{k:05d}"]["sha256"])
    commit_plan_marker(out, shards, "mmsa-pickle", shard_size)
    return counts
