"""CH-SIMS metrics against an independent transcription of MMSA's `__eval_sims_regression` (the loops
of `MMSA/utils/metricsTop.py`, with CH-SIMS v2's weak subset), at every bin edge and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from kebr_model.evaluation.metrics import selection_score, sims_metrics


def mmsa_sims(y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """MMSA's code, transcribed loop for loop (only the torch -> numpy lines dropped)."""
    test_preds = np.clip(y_pred.reshape(-1).astype(np.float64), a_min=-1., a_max=1.)
    test_truth = np.clip(y_true.reshape(-1).astype(np.float64), a_min=-1., a_max=1.)

    def binned(values, ms):
        out = values.copy()
        for i in range(len(ms) - 1):
            out[np.logical_and(values > ms[i], values <= ms[i + 1])] = i
        return out

    def acc(p, t):
        return np.sum(np.round(p) == np.round(t)) / float(len(t))

    ms_2, ms_3, ms_5 = [-1.01, 0.0, 1.01], [-1.01, -0.1, 0.1, 1.01], [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]
    p2, t2 = binned(test_preds, ms_2), binned(test_truth, ms_2)
    weak_index_l = np.where(test_truth >= -0.4)[0]
    weak_index_r = np.where(test_truth <= 0.4)[0]
    weak_index = [x for x in weak_index_l if x in weak_index_r]
    if weak_index:
        weak = acc(binned(test_preds[weak_index], ms_2), binned(test_truth[weak_index], ms_2))
    else:
        weak = float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(test_preds, test_truth)[0][1]
    return {"Acc2": acc(p2, t2), "Acc2_weak": weak,
            "Acc3": acc(binned(test_preds, ms_3), binned(test_truth, ms_3)),
            "Acc5": acc(binned(test_preds, ms_5), binned(test_truth, ms_5)),
            "F1": f1_score(t2, p2, average="weighted"),
            "MAE": np.mean(np.absolute(test_preds - test_truth)),
            "Corr": corr}


EDGES = np.array([-1.2, -1.0, -0.7, -0.4, -0.1, 0.0, 0.1, 0.4, 0.7, 1.0, 1.3])


def test_equals_mmsa_at_every_bin_edge_and_around_it():
    rng = np.random.default_rng(0)
    pool = np.concatenate([EDGES, EDGES + 1e-6, EDGES - 1e-6, np.nextafter(EDGES, 2), np.nextafter(EDGES, -2)])
    for _ in range(500):
        n = int(rng.integers(2, 30))
        pred = rng.choice(pool, n) if rng.random() < 0.7 else rng.uniform(-1.5, 1.5, n)
        truth = rng.choice(pool, n) if rng.random() < 0.7 else rng.uniform(-1.5, 1.5, n)
        if np.std(pred) == 0 or np.std(truth) == 0:
            continue
        ours, want = sims_metrics(pred, truth, weak=True), mmsa_sims(pred, truth)
        for key, value in want.items():
            if np.isnan(value):
                assert np.isnan(ours[key]), key
            else:
                assert ours[key] == pytest.approx(round(float(value), 4), abs=1e-12), (key, pred, truth)


def test_hand_computed_cases():
    # truth bins (2/3/5): 0 -> 0/1/2, 0.1 -> 1/1/2, -0.1 -> 0/0/1, 0.7 -> 1/2/3, -0.7 -> 0/0/0
    truth = np.array([0.0, 0.1, -0.1, 0.7, -0.7])
    pred = np.array([0.05, 0.1, -0.2, 0.75, 2.0])  # 2.0 is clipped to 1.0
    # pred bins:     1/1/2, 1/1/2, 0/0/1, 1/2/4, 1/2/4
    m = sims_metrics(pred, truth, weak=True)
    assert m["Acc2"] == 0.6            # clips 1, 2, 3 (0.05 > 0 misses the 0 label; 1.0 misses -0.7)
    assert m["Acc3"] == 0.8            # 0.05 and 0 share (-0.1, 0.1]; only 1.0 vs -0.7 misses
    assert m["Acc5"] == 0.6            # 0.75 is in (0.7, 1], 0.7 in (0.1, 0.7]: a miss, and 1.0 vs -0.7
    assert m["Acc2_weak"] == pytest.approx(round(2 / 3, 4))  # weak labels: 0, 0.1, -0.1 -> 2 of 3 right
    assert m["MAE"] == pytest.approx(round((0.05 + 0 + 0.1 + 0.05 + 1.7) / 5, 4))
    # F1: truth classes {0: 3 (0, -0.1, -0.7), 1: 2}, predicted 1, 1, 0, 1, 1;
    # class 0: tp 1, fp 0, fn 2 -> 2/4 = 0.5; class 1: tp 2, fp 2, fn 0 -> 4/6; weighted (3·0.5 + 2·4/6) / 5
    assert m["F1"] == pytest.approx(round((3 * 0.5 + 2 * 4 / 6) / 5, 4))


def test_weak_subset_is_closed_at_0_4_and_may_be_empty():
    assert sims_metrics(np.array([0.5, -0.5]), np.array([0.4, -0.4]), weak=True)["Acc2_weak"] == 1.0
    assert np.isnan(sims_metrics(np.array([0.5, -0.5]), np.array([0.41, -0.9]), weak=True)["Acc2_weak"])
    assert "Acc2_weak" not in sims_metrics(np.array([0.5, -0.5]), np.array([0.4, -0.4]))


def test_selection_minimises_losses_and_maximises_accuracies():
    assert selection_score("loss", {"samples": 3, "loss": 0.5}) == 0.5
    assert selection_score("MAE", {"samples": 3, "MAE": 0.7}) == 0.7
    assert selection_score("Acc2", {"samples": 3, "Acc2": 0.8}) == -0.8
    assert selection_score("Acc2_weak", {"samples": 3, "Acc2_weak": float("nan")}) is None
    assert selection_score("loss", {"samples": 0}) is None
    assert selection_score("loss", {"samples": 3, "loss": float("inf")}) is None
    assert selection_score("Corr", {"samples": 3, "Corr": float("-inf")}) is None
