"""The data contracts of DESIGN §4: one Arrow schema per stage table, named once, used everywhere."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

STATUSES = ("ok", "failed", "skipped")

COMMON = [
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("message", pa.string()),
]

PLAN = pa.schema(COMMON + [
    pa.field("speaker_id", pa.string()),
    pa.field("video_path", pa.string()),
    pa.field("audio_path", pa.string()),
    pa.field("split", pa.string()),
    pa.field("label", pa.float32()),
    pa.field("given_text", pa.string()),
    pa.field("source", pa.string()),
])

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

ACOUSTIC_DIM = 33
VISUAL_DIM = 709

ACOUSTIC = pa.schema(COMMON + [
    pa.field("recipe", pa.string()),
    pa.field("frame_rate", pa.float32()),
    pa.field("num_frames", pa.int32()),
    pa.field("features", pa.list_(pa.list_(pa.float32(), ACOUSTIC_DIM))),
])

VISUAL = pa.schema(COMMON + [
    pa.field("backend", pa.string()),
    pa.field("fps", pa.float32()),
    pa.field("num_frames", pa.int32()),
    pa.field("features", pa.list_(pa.list_(pa.float32(), VISUAL_DIM))),
    pa.field("success", pa.list_(pa.bool_())),
    pa.field("confidence", pa.list_(pa.float32())),
    pa.field("face_ratio", pa.float32()),
])

PLAN_COLUMNS = [f.name for f in PLAN]


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
