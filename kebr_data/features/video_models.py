"""Video transformers from local weights for the `video_encoder` stage: a Hugging Face VideoMAE
directory (transformers, `local_files_only`, safetensors only: no unpickling) or torchvision's
Swin3D-T state dict (only where torchvision imports). Each turns a clip's face crops into one
vector per temporal patch (spatial tokens averaged).

A clip of T frames is cut into windows of the model's `num_frames` (the last one padded by
repeating its last frame); window w's temporal tokens cover frames [w·num_frames, (w+1)·num_frames),
and the tokens past the clip's ceil(T / tubelet) are dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .hf_folder import LOAD_OPTIONS, folder_problem, quiet_loading

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SWIN3D_FRAMES, SWIN3D_SIZE, SWIN3D_TUBELET, SWIN3D_DIM = 16, 224, 2, 768
#: torchvision's Kinetics-400 statistics for its video models
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def weight_files(path: Path, model_type: str) -> list[Path]:
    """The files whose bytes define the model (weights and config), sorted."""
    if model_type == "swin3d_t":
        return [path]
    names = [p for p in sorted(path.glob("*.safetensors"))] + [p for p in (path / "config.json",
                                                                            path / "preprocessor_config.json")
                                                                 if p.is_file()]
    return names


def fingerprint(path: Path, model_type: str) -> str:
    """sha256 over the model's files (names and bytes): its identity in the config hash."""
    digest = hashlib.sha256()
    for f in weight_files(path, model_type):
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def problem(path: Path, model_type: str) -> str | None:
    """Why the model cannot be loaded from `path` (checked up front), or None."""
    if model_type == "swin3d_t":
        try:
            import torchvision  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - a broken torchvision raises more than ImportError
            return (f"video_encoder.model_type = swin3d_t needs torchvision, which does not import here ({exc}); "
                    "use a VideoMAE directory instead")
        return None if path.is_file() else f"video_encoder.model {path} is not a file (a swin3d_t state dict)"
    return folder_problem(path, "video_encoder.model")


@dataclass
class Geometry:
    """What the model expects: frames per window, tubelet, input size, width, normalisation."""

    num_frames: int
    tubelet: int
    image_size: int
    dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def geometry(path: Path, model_type: str) -> Geometry:
    """The model's input geometry and output width, read from its config files (no torch)."""
    if model_type == "swin3d_t":
        return Geometry(SWIN3D_FRAMES, SWIN3D_TUBELET, SWIN3D_SIZE, SWIN3D_DIM, KINETICS_MEAN, KINETICS_STD)
    cfg = json.loads((path / "config.json").read_text())
    pre = path / "preprocessor_config.json"
    stats = json.loads(pre.read_text()) if pre.is_file() else {}
    size = cfg.get("image_size", 224)
    return Geometry(int(cfg.get("num_frames", 16)), int(cfg.get("tubelet_size", 2)),
                    int(size if isinstance(size, int) else size[0]), int(cfg.get("hidden_size", 768)),
                    tuple(stats.get("image_mean", IMAGENET_MEAN)), tuple(stats.get("image_std", IMAGENET_STD)))


class VideoModel:
    """A loaded model: `encode(frames)` maps T × H × W × 3 uint8 RGB frames to ceil(T / tubelet) × D."""

    def __init__(self, path: Path, model_type: str, device: str = "cpu", batch_windows: int = 4) -> None:
        import torch

        self.torch, self.model_type, self.device = torch, model_type, device
        self.geo = geometry(path, model_type)
        self.batch_windows = batch_windows
        if model_type == "swin3d_t":
            from torchvision.models.video import swin3d_t

            self.net = swin3d_t(weights=None)
            self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        else:
            from transformers import VideoMAEModel
            with quiet_loading():
                self.net = VideoMAEModel.from_pretrained(str(path), **LOAD_OPTIONS)
        self.net.eval().to(device)

    def pixels(self, frames: np.ndarray) -> Any:
        """T × 3 × S × S float tensor: RGB in [0, 1], bilinear resize to the model's size, normalised."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
        s = self.geo.image_size
        if x.shape[-2:] != (s, s):
            x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.geo.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.geo.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def windows(self, pixels: Any) -> Any:
        """W × num_frames × 3 × S × S, the last window padded with its last frame."""
        n = self.geo.num_frames
        count = math.ceil(pixels.shape[0] / n)
        pad = count * n - pixels.shape[0]
        if pad:
            pixels = self.torch.cat([pixels, pixels[-1:].expand(pad, *pixels.shape[1:])])
        return pixels.reshape(count, n, *pixels.shape[1:])

    def forward(self, batch: Any) -> Any:
        """B windows → B × (num_frames / tubelet) × D, spatial tokens averaged."""
        if self.model_type == "swin3d_t":
            x = self.net.patch_embed(batch.permute(0, 2, 1, 3, 4))  # B C T H W → B T' H' W' C
            x = self.net.norm(self.net.features(self.net.pos_drop(x)))
            return x.mean(dim=(2, 3))
        hidden = self.net(pixel_values=batch).last_hidden_state
        t = self.geo.num_frames // self.geo.tubelet
        return hidden.reshape(hidden.shape[0], t, -1, hidden.shape[-1]).mean(dim=2)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        torch = self.torch
        windows = self.windows(self.pixels(frames))
        out = []
        with torch.inference_mode():
            for i in range(0, windows.shape[0], self.batch_windows):
                out.append(self.forward(windows[i:i + self.batch_windows].to(self.device)).float().cpu())
        tokens = torch.cat(out).reshape(-1, out[0].shape[-1])
        return tokens[:math.ceil(frames.shape[0] / self.geo.tubelet)].numpy().astype(np.float32)
