"""Exact formulas: MMSA metrics and the MCC variants at hand-computed points."""

import math

import numpy as np
import pytest
import torch

from kebr_model.fusions import masked_mean
from kebr_model.mcc import (flatten_cosine, mcc_paper, mcc_released_finetune, mcc_released_pretrain,
                            per_sample)
from kebr_model.evaluation.metrics import regression_metrics, weighted_f1


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


# --- MCC, paper Eq. 9-13 ---------------------------------------------------------------------

def test_mcc_paper_equal_cosines_at_0_3_vanish():
    # θa = θv -> y = cos θ · e^0 = 0.3; f = |cos(π(0.3 + 0.2))| = |cos(π/2)| = 0
    assert mcc_paper(t(0.3), t(0.3)).item() == pytest.approx(0.0, abs=1e-6)


def test_mcc_paper_at_one():
    # c = 1 -> θ = 0 -> y = 1 -> f = |cos(1.2π)| = 0.809017
    assert mcc_paper(t(1.0), t(1.0)).item() == pytest.approx(abs(math.cos(1.2 * math.pi)), abs=1e-5)
    assert abs(math.cos(1.2 * math.pi)) == pytest.approx(0.809017, abs=1e-6)


def test_mcc_paper_unequal_cosines():
    ta, tv = math.acos(0.5), math.acos(0.3)  # 1.047198, 1.266104
    y = math.cos((ta + tv) / 2) * math.exp(ta - tv)
    want = abs(math.cos(math.pi * (y + 0.2)))
    assert mcc_paper(t(0.5), t(0.3)).item() == pytest.approx(want, abs=1e-6)
    assert mcc_paper(t(0.5), t(0.3), s=2.0, g=-0.1).item() == pytest.approx(
        2 * abs(math.cos(math.pi * (y - 0.1))), abs=1e-6)


def test_mcc_paper_negative_cosine_adds_s():
    ta, tv = math.acos(-0.2), math.acos(0.4)
    y = math.cos((ta + tv) / 2) * math.exp(ta - tv)
    assert mcc_paper(t(-0.2), t(0.4)).item() == pytest.approx(abs(math.cos(math.pi * (y + 0.2))) + 1.0, abs=1e-6)


def test_released_pretrain_form():
    assert mcc_released_pretrain(t(0.5), t(0.5)).item() == pytest.approx(abs(math.cos(0.75 * math.pi)))  # 0.7071
    assert mcc_released_pretrain(t(-0.3), t(-0.1)).item() == pytest.approx(1.2)  # m = -0.2 -> 1 - m


def test_released_finetune_form():
    assert mcc_released_finetune(t(0.1), t(0.1)).item() == pytest.approx(0.0, abs=1e-12)  # |cos(π/2)|
    want = abs(math.cos(math.pi * 0.8 * math.exp(0.2)))  # a=0.6, b=0.2: m=0.4, |a-b|=0.4
    assert mcc_released_finetune(t(0.6), t(0.2)).item() == pytest.approx(want)
    assert mcc_released_finetune(t(0.5), t(-0.1)).item() == pytest.approx(1.6)  # 1 + |a| + |b|


def test_per_sample_dispatch_and_unknown_form():
    assert torch.equal(per_sample("paper", t(0.3, 1.0), t(0.3, 1.0)), mcc_paper(t(0.3, 1.0), t(0.3, 1.0)))
    with pytest.raises(ValueError, match="unknown mcc.form"):
        per_sample("nope", t(0.1), t(0.1))


def test_flatten_cosine_tiles_and_pads():
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])            # 2 tokens -> [1,0,0,1]/√2
    b = torch.tensor([[[1.0, 1.0], [9.0, 9.0]]])            # only the first frame is valid -> [1,1]/√2
    c = flatten_cosine(a, torch.tensor([[True, True]]), b, torch.tensor([[True, False]]))
    assert c.item() == pytest.approx(1 / math.sqrt(2))      # tiled twice: [1,1,1,1]/√2
    a3 = torch.tensor([[[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]])  # 7 values vs 3 -> tile 2x, pad 1 zero
    b3 = torch.tensor([[[1.0, 0.0, 0.0]]])
    c3 = flatten_cosine(a3, torch.tensor([[True]]), b3, torch.tensor([[True]]))
    assert c3.item() == pytest.approx(1 / math.sqrt(2) / math.sqrt(2))  # [1,0,0,1,0,0,0]/√2 · [1,0,..,1]/√2


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0
    assert masked_mean(x, torch.tensor([[False, False, False]])).item() == 0.0


# --- metrics, MMSA's definitions --------------------------------------------------------------

def test_metrics_hand_computed():
    truth = np.array([0.0, 1.4, -2.6, 3.5, -0.4, 2.5])
    pred = np.array([-0.2, 0.6, -2.4, 2.8, 0.3, 1.5])
    m = regression_metrics(pred, truth)
    # Has0: truth>=0 [T,T,F,T,F,T], pred>=0 [F,T,F,T,T,T] -> 4/6
    assert m["Has0_acc_2"] == pytest.approx(0.6667)
    # Non0 drops the zero label: truth>0 [T,F,T,F,T], pred>0 [T,F,T,T,T] -> 4/5
    assert m["Non0_acc_2"] == pytest.approx(0.8)
    # Acc-7: clip to ±3 then round half to even: truth [0,1,-3,3,-0,2], pred [-0,1,-2,3,0,2] -> 5/6
    assert m["Mult_acc_7"] == pytest.approx(0.8333)
    # Acc-5: clip to ±2: truth [0,1,-2,2,-0,2], pred [-0,1,-2,2,0,2] -> 6/6
    assert m["Mult_acc_5"] == 1.0
    assert m["MAE"] == pytest.approx(np.mean([0.2, 0.8, 0.2, 0.7, 0.7, 1.0]), abs=1e-4)
    assert m["Corr"] == pytest.approx(np.corrcoef(pred, truth)[0, 1], abs=1e-4)


def test_weighted_f1_matches_hand_and_sklearn():
    truth = np.array([True, True, True, False, False])
    pred = np.array([True, False, True, True, False])
    # class True: tp 2 fp 1 fn 1 -> f1 2/3 (support 3); class False: tp 1 fp 1 fn 1 -> 1/2 (support 2)
    assert weighted_f1(truth, pred) == pytest.approx((2 / 3 * 3 + 0.5 * 2) / 5)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert weighted_f1(truth, pred) == pytest.approx(sklearn.f1_score(truth, pred, average="weighted"))
