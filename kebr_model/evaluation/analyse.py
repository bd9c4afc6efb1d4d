"""`kebr-train analyse`: make MCC observable on a trained run. Per split: the mean cosines c_a and
c_v (Eq. 9), the mean of Eq. 11's value at those cosines and of the MCC term the loss used, the
task metric (MAE), and each modality's reliance: how much MAE grows when that modality (frames and
mask, or the text) is shuffled across the samples of each batch, everything else unchanged.

Eq. 11 is zero along a curve of (c_a, c_v), not only at c_a = c_v, so a small L_mcc alone does not
show balanced modalities: the reliance columns do. MCC is defined on the clips that have both audio and
visual frames; where a split has none, c_a, c_v, eq11 and mcc are null and `reasons` says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from kebr_data.display import printable

from .. import mcc as mcc_mod

TEXT_KEYS = ("input_ids", "attention_mask", "mask_pos")
MCC_VALUES = ("c_a", "c_v", "eq11", "mcc")
MCC_MODALITIES = ("audio", "visual")


def mcc_blocked(cfg: Any, present: set[str], shards: Path) -> str | None:
    """Why MCC cannot act in a run with `cfg` (a TrainConfig) on `shards`, whose frames of the modalities in
    `present` exist, or None when it can (or is off): L_mcc needs audio and visual frames on the same
    clips, so without either it stays 0 and the mcc_* settings change nothing. Escaped for the terminal."""
    if not cfg.use_mcc:
        return None
    unread = [m for m in MCC_MODALITIES if m not in cfg.used]
    absent = [m for m in MCC_MODALITIES if m in cfg.used and m not in present]
    if unread:
        why = f"the model reads no {' or '.join(unread)} frames (modalities.use = {cfg.modalities.use!r})"
    elif absent:
        why = f"{shards} holds no {' or '.join(absent)} frames (no ok row in its {cfg.used[absent[0]]}/ table)"
    else:
        return None
    return printable(f"MCC cannot act: {why}; L_mcc needs audio and visual frames, so it stays 0 and the mcc_* "
                     "settings change nothing")


def mcc_absent_reason(widths: dict[str, int], with_audio: int, with_visual: int) -> str:
    """Why a split has no clip on which MCC is defined: the model reads no audio or visual frames, or no
    clip of the split has them (counts of clips with audio and with visual frames), or never both."""
    unread = [m for m in MCC_MODALITIES if m not in widths]
    if unread:
        return (f"the model reads no {' or '.join(unread)} frames (modalities.use): MCC's cosines need audio "
                "and visual frames")
    none = [m for m, n in zip(MCC_MODALITIES, (with_audio, with_visual)) if not n]
    if none:
        return (f"no clip of this split has {' or '.join(none)} frames (the shards hold none): MCC's cosines "
                "need audio and visual frames")
    return "no clip of this split has both audio and visual frames, which MCC's cosines need"


def shuffled(batch: dict[str, Any], modality: str, generator: torch.Generator) -> dict[str, Any]:
    """A copy of `batch` with one modality's inputs permuted across samples (a derangement when the
    batch has more than one sample, so no sample keeps its own)."""
    n = len(batch["label"])
    sigma = torch.randperm(n, generator=generator)
    perm = torch.empty_like(sigma)
    perm[sigma] = sigma.roll(-1)  # sample sigma[i] gets sample sigma[i+1]'s inputs
    keys = TEXT_KEYS if modality == "text" else (modality, f"{modality}_mask")
    return {k: (v[perm.to(v.device)] if k in keys else v) for k, v in batch.items()}


@torch.no_grad()
def analyse_split(trainer: Any, split: str, seed: int = 0) -> dict[str, Any]:
    """The analysis of one split (see the module docstring)."""
    model = trainer.model
    model.eval()
    task = trainer.cfg.task
    modalities = ["text", *model.widths]
    gen = torch.Generator().manual_seed(seed)
    labels, preds, c_a, c_v, terms, valid = [], [], [], [], [], []
    framed = {m: 0 for m in MCC_MODALITIES}
    shuffled_preds: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    for batch in trainer.batches(split, 0, shuffle=False):
        batch = trainer._to_device(batch)
        out = model(batch, task)
        labels.append(batch["label"].cpu().numpy())
        preds.append(out.prediction.float().cpu().numpy())
        c_a.append(out.c_a.float().cpu().numpy())
        c_v.append(out.c_v.float().cpu().numpy())
        terms.append(out.mcc.float().cpu().numpy())
        valid.append(out.mcc_valid.cpu().numpy())
        framed = {m: n + int(batch[f"{m}_mask"].any(1).sum()) if f"{m}_mask" in batch else n
                  for m, n in framed.items()}
        for m in modalities:
            shuffled_preds[m].append(model(shuffled(batch, m, gen), task).prediction.float().cpu().numpy())
    if not labels:
        return {"samples": 0}
    y, p = np.concatenate(labels), np.concatenate(preds)
    ca, cv, ok = np.concatenate(c_a), np.concatenate(c_v), np.concatenate(valid)
    mae = float(np.mean(np.abs(p - y)))
    eq11 = mcc_mod.eq11(torch.from_numpy(ca[ok]), torch.from_numpy(cv[ok]), trainer.cfg.mcc_s, trainer.cfg.mcc_g)
    result = {"samples": int(len(y)), "c_a": float(ca[ok].mean()) if ok.any() else None,
              "c_v": float(cv[ok].mean()) if ok.any() else None,
              "eq11": float(eq11.mean()) if ok.any() else None,
              "mcc": float(np.concatenate(terms)[ok].mean()) if ok.any() else None, "MAE": mae,
              "reliance": {m: float(np.mean(np.abs(np.concatenate(v) - y))) - mae for m, v in shuffled_preds.items()}}
    if not ok.any():
        why = mcc_absent_reason(model.widths, framed["audio"], framed["visual"])
        result["reasons"] = {k: why for k in MCC_VALUES}
    return result
