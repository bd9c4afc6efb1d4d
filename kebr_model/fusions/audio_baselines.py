"""MMML's audio-only baselines (MMML appendix A.2), to compare frame features with its pre-trained audio
subnet (its Table 2): a Transformer over openSMILE frames and a CNN over the mel spectrogram. They read
the audio modality alone (`modalities.use = "a"`); text and visual inputs are ignored.

- `audio_transformer`: "Transformer models, incorporating between 2 and 4 encoder layers complemented
  with positional encoding ... A feed-forward layer was subsequently added to process feature embeddings
  in the CLS token of the final transformer encoder": a linear map to `d`, sinusoidal positions, a
  learned CLS token, `layers` pre-LN self-attention blocks; pooled = the CLS output (the head is the
  feed-forward layer).
- `audio_cnn`: "a custom 8-layer CNN model": the paper gives no layout, so this is ours: eight 3×3
  convolutions over the (time × mel) image, batch norm and ReLU each, 2×2 max pooling after every second,
  channels `channels`·(1, 1, 2, 2, 4, 4, 8, 8); pooled = the mean over the real time steps of the last map
  (padded frames are zeroed before each convolution). The paper's ResNet-18 and ResNet-32 variants are not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kebr_data.config import setting

from .attention import Block
from .base import Fusion, FusionOutput
from .mult import sinusoidal


class AudioOnly(Fusion):
    """A fusion built on the audio width alone (the other widths it is given are ignored)."""

    has_sequence = False
    audio_only = True

    def __init__(self, widths: dict[str, int]) -> None:
        if "audio" not in widths:
            raise ValueError(f"fusion {self.name!r} reads the audio modality; widths has {sorted(widths)}")
        super().__init__({"audio": widths["audio"]})


@dataclass
class AudioTransformerSettings:
    """The `audio_transformer` fusion's options (`[train]` keys)."""

    audio_transformer_d: int = setting(64, "audio_transformer: width (MMML A.2 gives none; 4 heads)", min=4)
    audio_transformer_layers: int = setting(2, "audio_transformer: encoder layers (MMML A.2: 'between 2 and 4')",
                                            min=1)


class AudioTransformer(AudioOnly):
    name = "audio_transformer"
    Settings = AudioTransformerSettings

    @classmethod
    def from_settings(cls, widths: dict[str, int], settings: Any, dropout: float) -> "AudioTransformer":
        return cls(widths, d=settings.audio_transformer_d, layers=settings.audio_transformer_layers, dropout=dropout)

    def __init__(self, widths: dict[str, int], d: int = 64, heads: int = 4, layers: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__(widths)
        self.d = d
        self.project = nn.Linear(self.widths["audio"], d)
        self.cls = nn.Parameter(torch.randn(d) * 0.02)
        self.blocks = nn.ModuleList([Block(d, heads, dropout=dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.out_dim = d

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        xs, ms = self.inputs(h, mask)
        x, m = xs["audio"], ms["audio"]
        y = self.project(x)
        y = y + sinusoidal(y.shape[1], self.d, y.device, y.dtype)
        y = torch.cat([self.cls.expand(y.shape[0], 1, -1), y], dim=1)
        m0 = torch.cat([torch.ones_like(m[:, :1]), m], dim=1)
        for block in self.blocks:
            y = block(y, m0)
        pooled = torch.where(m.any(1, keepdim=True), self.norm(y[:, 0]), torch.zeros_like(y[:, 0]))
        return FusionOutput(pooled, None, self.per_modality(h, mask))


@dataclass
class AudioCNNSettings:
    """The `audio_cnn` fusion's options (`[train]` keys)."""

    audio_cnn_channels: int = setting(8, "audio_cnn: channels of the first of its 8 convolutions (doubling every "
                                         "second; MMML A.2 gives none)", min=1)


class AudioCNN(AudioOnly):
    name = "audio_cnn"
    Settings = AudioCNNSettings

    @classmethod
    def from_settings(cls, widths: dict[str, int], settings: Any, dropout: float) -> "AudioCNN":
        return cls(widths, channels=settings.audio_cnn_channels)

    def __init__(self, widths: dict[str, int], channels: int = 8, conv_layers: int = 8) -> None:
        super().__init__(widths)
        sizes = [channels * 2 ** (i // 2) for i in range(conv_layers)]
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip([1, *sizes], sizes))
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in sizes)
        self.out_dim = sizes[-1]

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        xs, ms = self.inputs(h, mask)
        x, m = xs["audio"].unsqueeze(1), ms["audio"].to(xs["audio"].dtype)  # (B, 1, T, n_mels), (B, T)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = F.relu(norm(conv(x * m[:, None, :, None])))
            if i % 2 == 1:
                x = F.max_pool2d(x, 2, ceil_mode=True)
                m = F.max_pool1d(m[:, None], 2, ceil_mode=True)[:, 0]
        frames = x.mean(-1).transpose(1, 2)  # (B, T', C): mel axis averaged
        pooled = (frames * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)
        return FusionOutput(pooled, None, self.per_modality(h, mask))
