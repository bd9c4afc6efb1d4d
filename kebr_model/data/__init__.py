"""The trainer's data: one reader per run over a `--shards` folder (`open_reader`: the Parquet output
folder or its HDF5 export), the batches built from it, the preflight checks and the data identity a
run records."""

from .batches import DataConfig, RawAudio, ShardBatches, clip_frames, collate, encode_text, shard_samples, text_sample
from .detect import is_hdf5_export, open_reader
from .reader import ShardReader, ShardRows

__all__ = ["DataConfig", "RawAudio", "ShardBatches", "ShardReader", "ShardRows", "clip_frames", "collate",
           "encode_text", "is_hdf5_export", "open_reader", "shard_samples", "text_sample"]
