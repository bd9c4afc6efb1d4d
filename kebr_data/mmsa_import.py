"""Fine-tuning data from MMSA's pickles (`train/valid/test` -> `id, raw_text, audio, vision,
audio_lengths, vision_lengths, regression_labels[, regression_labels_T/A/V]`), turned into kebr-data
shards so the trainer reads them like any other. Features of any width are kept (MOSI's 5/20,
MOSEI's 74/35, the released KEBR 33/709), and `-inf` values (COVAREP's) become 0 as MMSA's loader
does. Unpickling runs code from the file, so it needs explicit trust.

Samples obey the index stage's rules (`kebr_data.sources.base`): ids are NFC-normalised and must be
valid and unique across the splits, labels finite float32 numbers (NaN is MMSA's "no label"), text
UTF-8; features must be finite once `-inf` is zeroed. A pickle with any sample that breaks one is
refused as a whole (PlanError naming the first ids), and nothing is written."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .clip_ids import clip_id_problem, normalize_clip_id
from .errors import PlanError
from .schema import ACOUSTIC, PLAN, VISUAL, frame_field
from .sources.base import BadValue, label_value, text_value
from .storage.commit import commit_plan_marker, commit_rows
from .storage.layout import OutputDir

SPLITS = ("train", "valid", "test")
#: the keys every split of an MMSA feature pickle has (one entry per sample each)
REQUIRED = ("id", "raw_text", "audio", "vision", "regression_labels")
#: offending samples named in a refusal (the rest are counted)
LISTED = 10


class UntrustedPickle(PermissionError):
    """Refused to unpickle a file without --trust-pickle."""


def load_mmsa_pickle(path: Path, trust: bool) -> dict[str, Any]:
    """Unpickle an MMSA feature file, only when the caller trusts it (pickles execute code); PlanError
    for a file that is not a pickle or not laid out as MMSA's (a dict of splits with `REQUIRED` keys)."""
    if not trust:
        raise UntrustedPickle(f"{path} is a pickle: loading it can run arbitrary code. Pass --trust-pickle only "
                              "if you trust where it came from.")
    with open(path, "rb") as fh:
        try:
            data = pickle.load(fh)  # noqa: S301 - explicit opt-in above
        except Exception as exc:  # noqa: BLE001 - unpickling raises whatever the file's objects raise
            raise PlanError(f"cannot unpickle {path} ({type(exc).__name__}: {exc}); give an MMSA feature pickle "
                            "(e.g. MOSI's unaligned_50.pkl)") from None
    check_layout(data, path)
    return data


def check_layout(data: Any, path: Path | str = "the pickle") -> None:
    """PlanError unless `data` is a dict holding at least one of `SPLITS`, each a dict with the `REQUIRED`
    keys, one entry per sample each."""
    expected = f"expected MMSA's layout: a dict with {'/'.join(SPLITS)}, each with {', '.join(REQUIRED)}"
    if not isinstance(data, dict) or not any(s in data for s in SPLITS):
        what = f"a dict with keys {sorted(map(str, data))[:5]}" if isinstance(data, dict) else \
            f"a {type(data).__name__}"
        raise PlanError(f"{path} holds {what}, not MMSA features; {expected}")
    for split in (s for s in SPLITS if s in data):
        part = data[split]
        missing = [k for k in REQUIRED if not isinstance(part, dict) or k not in part]
        if missing:
            raise PlanError(f"{path}: split {split!r} lacks {', '.join(missing)}; {expected}")
        try:
            sizes = {k: len(part[k]) for k in (*REQUIRED, "audio_lengths", "vision_lengths") if k in part}
        except TypeError as exc:
            raise PlanError(f"{path}: split {split!r} has an entry that is not a sequence ({exc}); {expected}") \
                from None
        if len(set(sizes.values())) > 1:
            raise PlanError(f"{path}: split {split!r} has entries of different lengths ({sizes}); each needs one "
                            "entry per sample")


def _frames(x: Any, length: Any, dim: int | None) -> np.ndarray:
    """One sample's frames (cut to its length), `-inf` set to 0 as MMSA's loader does; BadValue for frames of
    another shape than the split's others, or NaN or +infinity left in them."""
    x = np.array(x, dtype=np.float32)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise BadValue(f"features have shape {x.shape}, not (frames, {dim or 'width'}) like the other samples")
    x[np.isneginf(x)] = 0.0
    x = x[: int(length)] if length is not None else x
    if not np.isfinite(x).all():
        raise BadValue("features contain NaN or +infinity")
    return x


def with_width(schema: pa.Schema, dim: int) -> pa.Schema:
    """A stage schema whose `features` column holds `dim`-wide frames."""
    return schema.set(schema.get_field_index("features"), frame_field("features", dim))


def _label(part: dict[str, Any], key: str, i: int) -> float | None:
    """A label as the index stage reads it (finite, float32); NaN is MMSA's missing label."""
    if key not in part:
        return None
    value = np.asarray(part[key][i]).reshape(-1)[0]
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise BadValue(f"label {value!r} is not a number") from None
    return None if np.isnan(x) else label_value(x)


def _sample(part: dict[str, Any], split: str, i: int, cid: str, dims: dict[str, int | None]) -> tuple:
    """One sample as (clip_id, split, label, text, audio, vision, per-modality labels); BadValue names what
    breaks a rule."""
    n = len(part["id"])
    a_len = part.get("audio_lengths", [None] * n)[i]
    v_len = part.get("vision_lengths", [None] * n)[i]
    frames = {}
    for key, length in (("audio", a_len), ("vision", v_len)):
        try:
            frames[key] = _frames(part[key][i], length, dims[key])
        except BadValue as exc:
            raise BadValue(f"{key} {exc}") from None
    labels = {f"label_{m}": _label(part, f"regression_labels_{m.upper()}", i) for m in "tav"}
    text = text_value(part["raw_text"][i], "raw_text") or ""
    return (cid, split, _label(part, "regression_labels", i), text, frames["audio"], frames["vision"], labels)


def read_samples(data: dict[str, Any]) -> tuple[list[tuple], dict[str, int | None]]:
    """Every sample of every split, sorted by clip id, and the audio and vision widths; PlanError naming the
    first `LISTED` samples that break the index stage's rules (and how many do)."""
    check_layout(data)
    rows, bad = [], []
    seen: dict[str, tuple[str, str]] = {}  # clip id -> (split, spelling) of its first sample
    dims: dict[str, int | None] = {"audio": None, "vision": None}
    for split in (s for s in SPLITS if s in data):
        part = data[split]
        for i, raw in enumerate(part["id"]):
            cid = normalize_clip_id(str(raw))
            where = f"{split} {cid!r}"
            try:
                if clip_id_problem(cid):
                    raise BadValue(clip_id_problem(cid))
                if cid in seen:
                    first, spelling = seen[cid]
                    other = "" if spelling == str(raw) else f" spelt {spelling!r}: NFC and NFD spellings are one id"
                    raise BadValue(f"duplicate id (also in {first}{other})")
                seen[cid] = (split, str(raw))
                row = _sample(part, split, i, cid, dims)
            except BadValue as exc:
                bad.append(f"{where}: {exc}")
                continue
            dims = {"audio": row[4].shape[1], "vision": row[5].shape[1]}
            rows.append(row)
    if bad:
        more = f" (and {len(bad) - LISTED} more)" if len(bad) > LISTED else ""
        raise PlanError(f"{len(bad)} sample(s) of the pickle break the index stage's rules, nothing was imported: "
                        f"{'; '.join(bad[:LISTED])}{more}; fix or drop them in the pickle")
    rows.sort(key=lambda r: r[0])
    return rows, dims


def import_mmsa(data: dict[str, Any], out_root: Path, shard_size: int = 1000) -> dict[str, int]:
    """Write plan, acoustic and visual shards (with markers) for every sample of every split; samples per split."""
    return write_samples(*read_samples(data), out_root, shard_size)


def write_samples(rows: list[tuple], dims: dict[str, int | None], out_root: Path,
                  shard_size: int = 1000) -> dict[str, int]:
    """Write `read_samples`'s rows as plan, acoustic and visual shards (with markers); samples per split."""
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
        schemas = {"acoustic": with_width(ACOUSTIC, dims["audio"] or 1),
                   "visual": with_width(VISUAL, dims["vision"] or 1)}
        for stage, schema, table_rows in (("acoustic", schemas["acoustic"], acoustic),
                                          ("visual", schemas["visual"], visual)):
            commit_rows(out, stage, k, table_rows, schema, "mmsa-pickle", shards[f"{k:05d}"]["sha256"])
    commit_plan_marker(out, shards, "mmsa-pickle", shard_size)
    return counts
