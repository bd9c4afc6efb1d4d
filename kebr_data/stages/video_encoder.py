"""The video_encoder stage: a video transformer over the `faces` crops, one vector per temporal
patch (about 5 per second: 10 fps crops, tubelet 2) or their mean.

Models come from local files only (`video_encoder.model`): a Hugging Face VideoMAE directory, or
with `model_type = swin3d_t` torchvision's Swin3D-T state dict when torchvision imports. The
sha256 of the model's files is part of the config hash; a missing or unloadable model stops the
run before any shard with one message. The
table's width D is read from the model's config when the stage is built (768 for VideoMAE-base and
Swin3D-T).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ..deps import missing
from ..errors import ClipError, PrerequisiteError
from ..features.model_size import size_problem
from ..schema import ANY_WIDTH, COMMON, frame_field
from ..settings import content_hash, setting
from .base import ClipInput, ClipStage, ShardContext



def video_schema(width: int) -> pa.Schema:
    return pa.schema(COMMON + [
        pa.field("model_type", pa.string()),
        pa.field("pooling", pa.string()),
        pa.field("frame_rate", pa.float32()),
        pa.field("start_s", pa.float32()),
        pa.field("num_frames", pa.int32()),
        frame_field("features", width),
    ])


@functools.lru_cache(maxsize=1)
def load(path: str, model_type: str, device: str, batch_windows: int, threads: int) -> Any:
    """One model per worker process (the last one asked for)."""
    import torch

    from ..features.video_models import VideoModel

    torch.set_num_threads(threads)
    return VideoModel(Path(path), model_type, device, batch_windows)


def model_sha256(path: Path, model_type: str) -> str:
    """The model files' sha256, computed once per process while their sizes and times stay the same."""
    from ..features.video_models import weight_files

    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in weight_files(path, model_type))
    return _sha256(path, model_type, stamp)


@functools.lru_cache(maxsize=8)
def _sha256(path: Path, model_type: str, stamp: tuple) -> str:
    from ..features.video_models import fingerprint

    return fingerprint(path, model_type)


@dataclass
class VideoEncoderSettings:
    """The video_encoder stage: a video transformer over the face crops."""

    model: str = setting("", "local model: a Hugging Face VideoMAE directory (safetensors), or a swin3d_t state dict")
    model_type: Literal["videomae", "swin3d_t"] = setting("videomae", "videomae | swin3d_t (needs torchvision)")
    pooling: Literal["none", "mean"] = setting("none", "none: a vector per temporal patch; mean: one per clip")
    device: str = setting("cpu", "cpu | cuda (part of the config hash: results differ by device)")
    batch_windows: int = setting(4, "windows of num_frames crops per forward pass (in the hash: batch shapes change "
                                    "the last bits)", min=1)
    threads: int = setting(1, "torch threads per worker", min=1)
    max_params: float = setting(2e9, "videomae: refuse a model whose parameter count, computed from its config.json "
                                     "before it is loaded, exceeds this", min=1.0, runtime=True)


class VideoEncoderStage(ClipStage):
    """frames × D video-transformer features per clip from the face crops (D from the model's config)."""

    name = "video_encoder"
    version = "1"
    schema = video_schema(ANY_WIDTH)
    hdf5_attributes = ("model_type", "pooling")
    upstream = ("plan", "faces")
    Settings = VideoEncoderSettings
    settings: VideoEncoderSettings
    extract_default = False

    def __init__(self, settings: Any) -> None:
        from ..features import video_models as vm

        super().__init__(settings)
        kind = self.settings.model_type
        if self.settings.model and not vm.problem(self._path(), kind):
            self.schema = video_schema(vm.geometry(self._path(), kind).dim)

    def _path(self) -> Path:
        return Path(self.settings.model).expanduser()

    def check(self) -> list[str]:
        from ..features import video_models as vm

        if not self.settings.model:
            return ["video_encoder.model is not set: point it at a local VideoMAE directory (e.g. "
                    "MCG-NJU/videomae-base downloaded once), --set video_encoder.model=/path/to/videomae-base"]
        for module in ("torch", "transformers"):
            problem = missing(module, "encoders", "the video_encoder stage")
            if problem:
                return [problem]
        problem = vm.problem(self._path(), self.settings.model_type)
        if problem is None and self.settings.model_type == "videomae":
            problem = size_problem(self._path(), self.settings.max_params, "video_encoder.max_params")
        return [problem] if problem else []

    def config_hash(self) -> str:
        base = super().config_hash()
        try:
            model = model_sha256(self._path(), self.settings.model_type) if self.settings.model else ""
        except OSError:
            model = "unresolved"
        return content_hash({"config": base, "model_sha256": model})

    def versions(self) -> dict[str, str]:
        import torch
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__}

    def input_columns(self) -> dict[str, list[str] | None]:
        return {"faces": ["clip_id", "status", "error", "fps", "start_s", "crops"]}

    def model(self) -> Any:
        try:
            return load(str(self._path()), self.settings.model_type, self.settings.device,
                        self.settings.batch_windows, self.settings.threads)
        except (OSError, ValueError) as exc:
            raise PrerequisiteError(f"video_encoder cannot load {self._path()}: {exc}") from exc

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        import cv2

        faces = clip.upstream["faces"]
        frames = []
        for data in faces["crops"]:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise ClipError("decode_error", "a face crop is not a readable JPEG")
            frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if not frames:
            raise ClipError("no_frames", "the faces row has no crops")
        model = self.model()
        features = model.encode(np.stack(frames))
        if not np.isfinite(features).all():
            raise ClipError("non_finite", "the model gave NaN or infinity")
        if self.settings.pooling == "mean":
            features = features.mean(axis=0, keepdims=True)
        return {"model_type": self.settings.model_type, "pooling": self.settings.pooling,
                "frame_rate": float(faces["fps"]) / model.geo.tubelet, "start_s": faces["start_s"],
                "num_frames": int(features.shape[0]), "features": features}
