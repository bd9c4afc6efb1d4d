"""A pre-trained audio encoder trained inside the graph (MMML's setting): a local Hugging Face HuBERT,
wav2vec2 or data2vec-audio model run on the audio stage's raw waveform, its convolutional front end
frozen by default (as Hugging Face's `freeze_feature_encoder`), giving (B, T, D) frames and a frame
mask to the fusion.

Padding follows the ssl_audio stage's rule (`ssl_encoder.padding_is_exact`): clips of different lengths
share one padded forward pass with an attention mask only where that leaves each clip's frames unchanged
(layer-normalised HuBERT / wav2vec2 front ends whose extractor returns attention masks); any other model
runs each group of equal-length clips on its own, so no clip's frames depend on the batch.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from kebr_data.features import ssl_encoder as enc
from kebr_data.features.hf_folder import LOAD_OPTIONS, quiet_loading

from .config import RAW_AUDIO, TrainConfig
from .data import RawAudio
from .errors import TrainSetupError

KINDS = ("hubert", "wav2vec2", "data2vec-audio")


class AudioEncoder(nn.Module):
    """(B, N, 1) normalised waveforms and (B, N) sample masks -> (B, T, D) frames and (B, T) frame masks.
    A clip without samples gets no frame (an all-False mask row)."""

    def __init__(self, net: nn.Module, layer: str | int = "last", exact_padding: bool = False,
                 freeze_cnn: bool = True, padding_value: float = 0.0) -> None:
        super().__init__()
        self.net, self.layer, self.exact_padding, self.padding_value = net, layer, exact_padding, padding_value
        states = net.config.num_hidden_layers + 1
        self.dim = net.config.hidden_size * (states if layer == "all" else 1)
        if freeze_cnn:  # what freeze_feature_encoder() does (HubertModel itself lacks that method)
            net.feature_extractor._freeze_parameters()

    def frames_of(self, samples: torch.Tensor) -> torch.Tensor:
        """Output frames of clips of `samples` samples (0 for none)."""
        return torch.where(samples > 0, self.net._get_feat_extract_output_lengths(samples), 0)

    def _groups(self, lengths: list[int]) -> list[list[int]]:
        """Rows encoded together: every clip with audio in one padded pass, or clips of equal length."""
        rows = [i for i, n in enumerate(lengths) if n > 0]
        if self.exact_padding:
            return [rows] if rows else []
        by_length: dict[int, list[int]] = {}
        for i in rows:
            by_length.setdefault(lengths[i], []).append(i)
        return list(by_length.values())

    def _encode(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The chosen hidden states of one group (rows padded to the group's longest clip)."""
        kwargs: dict[str, Any] = {"attention_mask": mask.long()} if self.exact_padding else {}
        spec = self.net.config  # the Hugging Face model's own config: SpecAugment's keys exist in some models only
        frames = int(self.frames_of(torch.tensor(values.shape[1])))
        if self.training and getattr(spec, "mask_time_prob", 0) > 0 and frames < getattr(spec, "mask_time_length", 1):
            # the model's SpecAugment cannot place a span in so few frames (Hugging Face raises): no time mask
            kwargs["mask_time_indices"] = torch.zeros(values.shape[0], frames, dtype=torch.bool, device=values.device)
        out = self.net(values.masked_fill(~mask, self.padding_value), output_hidden_states=self.layer != "last",
                       **kwargs)
        if self.layer == "last":
            return out.last_hidden_state
        if self.layer == "all":
            return torch.cat(out.hidden_states, dim=-1)  # layer-major, as the ssl_audio stage stores `all`
        return out.hidden_states[self.layer]

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = values.squeeze(-1), mask.sum(1)
        frames = self.frames_of(lengths)
        longest = max(1, int(frames.max())) if len(frames) else 1
        encoded: dict[int, torch.Tensor] = {}
        for group in self._groups(lengths.tolist()):
            n = int(lengths[group].max())
            states = self._encode(x[group, :n], mask[group, :n])
            encoded |= {r: states[j, :int(frames[r])] for j, r in enumerate(group)}
        dtype = next(iter(encoded.values())).dtype if encoded else x.dtype
        rows = [nn.functional.pad(encoded[r], (0, 0, 0, longest - len(encoded[r]))) if r in encoded
                else x.new_zeros(longest, self.dim, dtype=dtype) for r in range(x.shape[0])]
        frame_mask = torch.arange(longest, device=x.device)[None, :] < frames[:, None]
        return torch.stack(rows), frame_mask


def setup_problem(folder: str) -> str | None:
    """Why `folder` cannot be the in-graph audio encoder, or None."""
    if not folder:
        return (f"modalities.audio = '{RAW_AUDIO}' runs an audio encoder on the raw waveform: pass --set "
                "audio_encoder=/path/to/local/model (a HuBERT, wav2vec2 or data2vec-audio folder)")
    problem = enc.model_problem(folder, "audio_encoder")
    if problem:
        return problem
    kind = enc.model_info(folder).kind
    if kind not in KINDS:
        return (f"audio_encoder {folder} is a {kind} model; in-graph training takes {', '.join(KINDS)} (raw "
                "waveform models); use its frozen frames through the ssl_audio stage instead")
    return None


def load_audio_encoder(cfg: TrainConfig) -> tuple[AudioEncoder, RawAudio]:
    """The in-graph encoder of `cfg.audio_encoder` and how the loader prepares its input; TrainSetupError
    (one line, exit 2) for a missing, incomplete or unsupported folder or a layer the model lacks."""
    problem = setup_problem(cfg.audio_encoder)
    if problem:
        raise TrainSetupError(problem)
    info = enc.model_info(cfg.audio_encoder)
    try:
        layer = enc.parse_layer(cfg.audio_encoder_layer, info.hidden_states)
    except ValueError as exc:
        raise TrainSetupError(f"audio_encoder_layer {cfg.audio_encoder_layer!r}: {exc}") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    with quiet_loading():
        net = AutoModel.from_pretrained(cfg.audio_encoder, **LOAD_OPTIONS)
    extractor = enc.load_extractor(cfg.audio_encoder)
    module = AudioEncoder(net, layer, enc.padding_is_exact(info.kind, net.config, extractor),
                          cfg.audio_encoder_freeze_cnn, float(getattr(extractor, "padding_value", 0.0)))
    return module, RawAudio(cfg.audio_encoder, info.kind, info.sample_rate, cfg.max_audio_s)
