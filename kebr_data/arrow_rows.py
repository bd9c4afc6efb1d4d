"""Rows to Arrow: plain values through `pa.array`, numpy arrays straight into list columns.

Frame features (frames × 33 or × 709 float32) go into `list<fixed_size_list<float32, D>>`
columns from their numpy buffers, without a detour through Python floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


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
