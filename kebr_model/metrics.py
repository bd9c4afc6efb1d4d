"""The regression metrics every MOSI/MOSEI table reports, with MMSA's exact definitions
(`MMSA/utils/metricsTop.py`, `__eval_mosei_regression`).

- Has0_acc_2 / Has0_F1_score: label >= 0 vs < 0 over all samples (prediction likewise).
- Non0_acc_2 / Non0_F1_score: samples with label == 0 dropped, then > 0 vs < 0 (prediction > 0).
- F1 scores are weighted by class support.
- Mult_acc_7 / Mult_acc_5: clip both sides to [-3, 3] / [-2, 2], round half to even (numpy), compare.
- MAE, and Corr (Pearson).
"""

from __future__ import annotations

import numpy as np


def weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """F1 per class weighted by the class's support in `truth` (sklearn's average='weighted')."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    total = 0.0
    for cls in np.unique(truth):
        tp = np.sum((pred == cls) & (truth == cls))
        fp = np.sum((pred == cls) & (truth != cls))
        fn = np.sum((pred != cls) & (truth == cls))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        total += f1 * np.sum(truth == cls)
    return float(total / truth.size) if truth.size else 0.0


def multiclass_acc(pred: np.ndarray, truth: np.ndarray) -> float:
    """Share of samples whose rounded prediction equals the rounded label (numpy rounds half to even)."""
    return float(np.sum(np.round(pred) == np.round(truth)) / len(truth))


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MMSA's MOSI/MOSEI regression metrics, rounded to 4 digits as MMSA reports them."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    non0 = truth != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = float(np.corrcoef(pred, truth)[0][1]) if pred.size > 1 else float("nan")
    out = {
        "Has0_acc_2": float(np.mean((pred >= 0) == (truth >= 0))),
        "Has0_F1_score": weighted_f1(truth >= 0, pred >= 0),
        "Non0_acc_2": float(np.mean((pred[non0] > 0) == (truth[non0] > 0))) if non0.any() else float("nan"),
        "Non0_F1_score": weighted_f1(truth[non0] > 0, pred[non0] > 0) if non0.any() else float("nan"),
        "Mult_acc_5": multiclass_acc(np.clip(pred, -2.0, 2.0), np.clip(truth, -2.0, 2.0)),
        "Mult_acc_7": multiclass_acc(np.clip(pred, -3.0, 3.0), np.clip(truth, -3.0, 3.0)),
        "MAE": float(np.mean(np.abs(pred - truth))),
        "Corr": corr,
    }
    return {k: round(v, 4) for k, v in out.items()}
