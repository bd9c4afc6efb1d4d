"""The data contracts: one Arrow schema per stage table, named once, used everywhere; and rows to
Arrow, with numpy frame features going straight into `list<fixed_size_list<float32, D>>` columns
from their buffers, without a detour through Python floats.

Frame widths come from the code that defines the features (`features.recipe`, `features.openface`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa

from .features.openface import DIM as OPENFACE_DIM
from .features.recipe import DIM as LIBROSA_DIM

SCHEMA_VERSION = "1"

COMMON = [
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("message", pa.string()),
]


@dataclass(kw_only=True)
class Clip:
    """One plan row before sharding: the `plan` table's columns (after COMMON's status, error, message), in
    its column order, declared once here (`PLAN` is built from these fields)."""

    clip_id: str
    speaker_id: str | None = None
    video_path: str | None = None
    audio_path: str | None = None
    split: str | None = None
    label: float | None = None
    given_text: str | None = None
    source: str
    label_t: float | None = None   # per-modality labels (CH-SIMS label_T/A/V); None elsewhere
    label_a: float | None = None
    label_v: float | None = None
    #: size and mtime of each media file at index time: `--replan` recomputes clips whose media changed
    video_size: int | None = None
    video_mtime_ns: int | None = None
    audio_size: int | None = None
    audio_mtime_ns: int | None = None

    def fingerprint(self) -> None:
        """Record the size and mtime of the clip's media files (left empty for a missing file)."""
        for kind in ("video", "audio"):
            path = getattr(self, f"{kind}_path")
            try:
                st = os.stat(path) if path else None
            except OSError:
                st = None
            setattr(self, f"{kind}_size", st.st_size if st else None)
            setattr(self, f"{kind}_mtime_ns", st.st_mtime_ns if st else None)


#: the Arrow type of each annotation a `Clip` field may have
_PLAN_TYPES = {"str": pa.string(), "str | None": pa.string(), "float | None": pa.float32(), "int | None": pa.int64()}

PLAN = pa.schema(COMMON + [pa.field(f.name, _PLAN_TYPES[f.type]) for f in fields(Clip) if f.name != "clip_id"])

AUDIO = pa.schema(COMMON + [
    pa.field("sample_rate", pa.int32()),
    pa.field("num_samples", pa.int64()),
    pa.field("duration_s", pa.float32()),
    pa.field("flac", pa.binary()),
])

WORD = pa.struct([
    pa.field("word", pa.string()),
    pa.field("start", pa.float32()),
    pa.field("end", pa.float32()),
    pa.field("prob", pa.float32()),
])

ASR = pa.schema(COMMON + [
    pa.field("text", pa.string()),
    pa.field("language", pa.string()),
    pa.field("language_prob", pa.float32()),
    pa.field("avg_logprob", pa.float32()),
    pa.field("engine", pa.string()),
    pa.field("model", pa.string()),
    pa.field("words", pa.list_(WORD)),
])

MASK = pa.schema(COMMON + [
    pa.field("text", pa.string()),
    pa.field("masked_text", pa.string()),
    pa.field("words", pa.list_(pa.string())),
    pa.field("mask_index", pa.int32()),
    pa.field("mask_word", pa.string()),
    pa.field("vader_score", pa.float32()),
    pa.field("label", pa.float32()),
    pa.field("has_sentiment_word", pa.bool_()),
    pa.field("lexicon", pa.string()),
    pa.field("mask_word_prob", pa.float32()),
    pa.field("ref_label", pa.float32()),
])



def frame_field(name: str, dim: int) -> pa.Field:
    """A frame-feature column: one list of `dim`-wide float32 frames per clip."""
    return pa.field(name, pa.list_(pa.list_(pa.float32(), dim)))


#: the width a stage class declares for a frame column whose width its settings choose (a model's
#: hidden size, a feature set's size); the stage instance's `schema` carries the real width
ANY_WIDTH = 0


def same_columns(actual: pa.Schema, declared: pa.Schema) -> bool:
    """Whether a table's columns are the declared ones, a declared `ANY_WIDTH` frame column matching any width."""
    widths = frame_columns(declared)
    if [f.name for f in actual] != [f.name for f in declared]:
        return False
    return all(a.type == d.type or (widths.get(d.name) == ANY_WIDTH and d.name in frame_columns(actual))
               for a, d in zip(actual, declared))


def any_width(schema: pa.Schema) -> pa.Schema:
    """`schema` with each frame column declared `ANY_WIDTH` (tables whose widths come from elsewhere)."""
    for name in frame_columns(schema):
        schema = schema.set(schema.get_field_index(name), frame_field(name, ANY_WIDTH))
    return schema


def frame_columns(schema: pa.Schema) -> dict[str, int]:
    """The frame-feature columns of a schema and their widths."""
    return {f.name: f.type.value_type.list_size for f in schema
            if pa.types.is_list(f.type) and pa.types.is_fixed_size_list(f.type.value_type)
            and pa.types.is_floating(f.type.value_type.value_type)}

ACOUSTIC = pa.schema(COMMON + [
    pa.field("recipe", pa.string()),
    pa.field("frame_rate", pa.float32()),
    pa.field("num_frames", pa.int32()),
    frame_field("features", LIBROSA_DIM),
])

VISUAL = pa.schema(COMMON + [
    pa.field("backend", pa.string()),
    pa.field("fps", pa.float32()),
    pa.field("num_frames", pa.int32()),
    frame_field("features", OPENFACE_DIM),
    pa.field("success", pa.list_(pa.bool_())),
    pa.field("confidence", pa.list_(pa.float32())),
    pa.field("face_ratio", pa.float32()),
])


def clip_text(given_text: str | None, mask_row: dict | None, asr_row: dict | None) -> str | None:
    """A clip's transcript: the dataset's own (given) text, else the mask stage's, else the ASR's
    (rows count only when their status is ok)."""
    if given_text:
        return given_text
    for row in (mask_row, asr_row):
        if row is not None and row.get("status") == "ok" and row.get("text"):
            return row["text"]
    return None


def with_metadata(schema: pa.Schema, stage: str) -> pa.Schema:
    """Tag a stage schema with the stage name and schema version (no timestamps: files stay reproducible)."""
    return schema.with_metadata({b"kebr.stage": stage.encode(), b"kebr.schema_version": SCHEMA_VERSION.encode()})


def _list_array(values: list[Any], typ: pa.ListType) -> pa.Array:
    """A list column from per-row numpy arrays (None = null row)."""
    inner = typ.value_type
    lengths = np.array([0 if v is None else len(v) for v in values], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))
    present = [np.asarray(v) for v in values if v is not None]
    if pa.types.is_fixed_size_list(inner):
        width = inner.list_size
        flat = np.concatenate([a.reshape(-1) for a in present]) if present else np.empty(0)
        child = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(inner.value_type.to_pandas_dtype())), width)
    else:
        flat = np.concatenate([a.reshape(-1) for a in present]) if present else np.empty(0)
        child = pa.array(flat.astype(inner.to_pandas_dtype()), type=inner)
    mask = pa.array([v is None for v in values])
    return pa.ListArray.from_arrays(offsets, child, type=typ, mask=mask)


def rows_to_batch(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """A record batch of `schema` from row dicts whose list cells may be numpy arrays."""
    columns = []
    for field in schema:
        values = [r.get(field.name) for r in rows]
        if pa.types.is_list(field.type) and any(isinstance(v, np.ndarray) for v in values):
            columns.append(_list_array(values, field.type))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
