"""The regression metrics of the MSA tables, with MMSA's exact definitions (`MMSA/utils/metricsTop.py`).

MOSI / MOSEI (`__eval_mosei_regression`):
- Has0_acc_2 / Has0_F1_score: label >= 0 vs < 0 over all samples (prediction likewise).
- Non0_acc_2 / Non0_F1_score: samples with label == 0 dropped, then > 0 vs < 0 (prediction > 0).
- Mult_acc_7 / Mult_acc_5: clip both sides to [-3, 3] / [-2, 2], round half to even (numpy), compare.
- MAE, and Corr (Pearson).

CH-SIMS (`__eval_sims_regression`): both sides clipped to [-1, 1], then binned with left-open,
right-closed intervals: Acc2 {[-1, 0], (0, 1]}, Acc3 {[-1, -0.1], (-0.1, 0.1], (0.1, 1]},
Acc5 {[-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]}; F1 on the Acc2 classes; MAE, Corr.
CH-SIMS v2 adds Acc2_weak: Acc2 over the samples whose label lies in [-0.4, 0.4] (NaN when none).

F1 scores are weighted by class support (scikit-learn's f1_score, average="weighted", as MMSA).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..data.reader import ShardReader

SIMS_BINS = {2: [-1.01, 0.0, 1.01], 3: [-1.01, -0.1, 0.1, 1.01], 5: [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]}
REPORTED = {"mosi": ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "Mult_acc_5",
                     "MAE", "Corr"),
            "sims": ("Acc2", "Acc3", "Acc5", "F1", "MAE", "Corr"),
            "sims2": ("Acc2", "Acc2_weak", "Acc3", "Acc5", "F1", "MAE", "Corr")}
#: `select_on` value: the release's validation loss (main.py:158-159, 244), see Trainer.released_valid_loss
RELEASED_VALID = "released_valid_loss"
LOWER_IS_BETTER = {"loss", "task", "l1", "mcc", "MAE", RELEASED_VALID}


def weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """F1 per class weighted by the class's support in `truth` (scikit-learn, average='weighted'; imported
    here: scikit-learn costs a second of start-up to every kebr-train command, most of which never score)."""
    from sklearn.metrics import f1_score

    truth, pred = np.asarray(truth), np.asarray(pred)
    if not truth.size:
        return 0.0
    return float(f1_score(truth, pred, average="weighted", zero_division=0))


def multiclass_acc(pred: np.ndarray, truth: np.ndarray) -> float:
    """Share of samples whose rounded prediction equals the rounded label (numpy rounds half to even)."""
    return float(np.sum(np.round(pred) == np.round(truth)) / len(truth))


def _corr(pred: np.ndarray, truth: np.ndarray) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(pred, truth)[0][1]) if pred.size > 1 else float("nan")


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MMSA's MOSI/MOSEI regression metrics, rounded to 4 digits as MMSA reports them."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    non0 = truth != 0
    out = {
        "Has0_acc_2": float(np.mean((pred >= 0) == (truth >= 0))),
        "Has0_F1_score": weighted_f1(truth >= 0, pred >= 0),
        "Non0_acc_2": float(np.mean((pred[non0] > 0) == (truth[non0] > 0))) if non0.any() else float("nan"),
        "Non0_F1_score": weighted_f1(truth[non0] > 0, pred[non0] > 0) if non0.any() else float("nan"),
        "Mult_acc_5": multiclass_acc(np.clip(pred, -2.0, 2.0), np.clip(truth, -2.0, 2.0)),
        "Mult_acc_7": multiclass_acc(np.clip(pred, -3.0, 3.0), np.clip(truth, -3.0, 3.0)),
        "MAE": float(np.mean(np.abs(pred - truth))),
        "Corr": _corr(pred, truth),
    }
    return {k: round(v, 4) for k, v in out.items()}


def sims_classes(x: np.ndarray, classes: int) -> np.ndarray:
    """Class index of each (clipped) value: bin i is (edge_i, edge_{i+1}] of SIMS_BINS[classes]."""
    edges = SIMS_BINS[classes]
    return np.searchsorted(np.asarray(edges[1:-1]), x, side="left")


def sims_metrics(pred: np.ndarray, truth: np.ndarray, weak: bool = False) -> dict[str, float]:
    """MMSA's CH-SIMS regression metrics (`weak`: CH-SIMS v2's Acc2_weak too), rounded to 4 digits."""
    pred = np.clip(np.asarray(pred, dtype=np.float64).reshape(-1), -1.0, 1.0)
    truth = np.clip(np.asarray(truth, dtype=np.float64).reshape(-1), -1.0, 1.0)
    p2, t2 = sims_classes(pred, 2), sims_classes(truth, 2)
    out = {"Acc2": float(np.mean(p2 == t2))}
    if weak:
        w = (truth >= -0.4) & (truth <= 0.4)
        out["Acc2_weak"] = float(np.mean(p2[w] == t2[w])) if w.any() else float("nan")
    out |= {"Acc3": float(np.mean(sims_classes(pred, 3) == sims_classes(truth, 3))),
            "Acc5": float(np.mean(sims_classes(pred, 5) == sims_classes(truth, 5))),
            "F1": weighted_f1(t2, p2), "MAE": float(np.mean(np.abs(pred - truth))), "Corr": _corr(pred, truth)}
    return {k: round(v, 4) for k, v in out.items()}


def metric_set(choice: str, reader: ShardReader) -> str:
    """The metric set of a run: `choice`, or for `auto` sims2 when the plan has per-modality labels
    (CH-SIMS) and every label lies in [-1, 1], else mosi (also for a folder without a plan)."""
    if choice != "auto":
        return choice
    plan = reader.plan_labels()
    if plan is None:
        return "mosi"
    sims = False
    for table in plan:
        if "label_t" not in table.column_names:
            return "mosi"
        labels = [v for v in table.column("label").to_pylist() if v is not None]
        if any(abs(v) > 1.0 for v in labels):
            return "mosi"
        sims = sims or any(v is not None for v in table.column("label_t").to_pylist())
    return "sims2" if sims else "mosi"


def dataset_metrics(which: str | None, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    if which in ("sims", "sims2"):
        return sims_metrics(pred, truth, weak=which == "sims2")
    return regression_metrics(pred, truth)


def selection_score(criterion: str, result: dict[str, Any]) -> float | None:
    """The value model selection minimises: a loss or MAE as is, any other metric negated; None (never
    selected) when the split was empty or the value is missing, NaN or infinite."""
    if not result.get("samples"):
        return None
    value = result.get(criterion)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value) if criterion in LOWER_IS_BETTER else -float(value)


#: the loss terms of an evaluation, which a working model never makes non-finite (unlike Corr of constant
#: predictions or Acc2_weak of a split without weak labels, whose NaN is a documented outcome)
LOSS_TERMS = ("loss", "task", "l1", "mcc")


def nonfinite_validation(criterion: str, result: dict[str, Any]) -> list[str]:
    """The loss terms and the selection `criterion` of an evaluation that came out NaN or infinite."""
    keys = dict.fromkeys((*LOSS_TERMS, criterion))
    return [k for k in keys if isinstance(result.get(k), float) and not math.isfinite(result[k])]
