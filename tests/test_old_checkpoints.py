"""Checkpoints written before the trainer's redesign (issue #26) still load: fixtures/checkpoints_v0/ holds
tiny checkpoints made by the code of that time (a 1-layer, 8-wide BERT with a 50-word vocabulary, so
each is a few kilobytes) for the plain TCMF, the released TCMF and SKESL's per-modality queries (whose
state_dict keys differed: `fusion.layers.*` vs `fusion.tcmf.layers.*`), with the predictions and cosines
they gave on a fixed batch. Loaded by today's code, through a resume/eval load and through --init, they
must give the same numbers.

Regenerate only with the code that wrote them: KEBR_RECORD_CHECKPOINTS=1 pytest tests/test_old_checkpoints.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from kebr_model.training import checkpoint  # noqa: E402
from kebr_model.config import TrainConfig  # noqa: E402
from kebr_model.model import KEBR  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_v0"
WIDTHS = {"audio": 6, "visual": 10}
CONFIGS = {
    "kebr": ["layers=2", "mcc_space=pooled"],
    "released": ["layers=2", "tcmf_attention=released", "tcmf_residual=raw", "shared_layers=true",
                 "ffn=linear-dropout", "finetune_pool=all", "mcc_space=released", "tcmf_embed_dim=8"],
    "skesl": ["layers=2", "per_modality_query=true", "mcc_space=pooled"],
}


def encoder() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16, max_position_embeddings=32))


def model(name: str) -> tuple[KEBR, TrainConfig]:
    cfg = TrainConfig.load((), ["task=finetune", *CONFIGS[name]])
    return KEBR(encoder(), WIDTHS, cfg).eval(), cfg


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    b, t = 3, 6
    attention = torch.ones(b, t, dtype=torch.long)
    attention[0, 4:] = 0
    out = {"input_ids": torch.randint(1, 50, (b, t), generator=g), "attention_mask": attention,
           "mask_pos": torch.tensor([1, 2, 3])}
    for m, d in WIDTHS.items():
        frames = 5 if m == "audio" else 4
        out[m] = torch.randn(b, frames, d, generator=g)
        mask = torch.ones(b, frames, dtype=torch.bool)
        mask[1, 2:] = False
        out[f"{m}_mask"] = mask
    return out


def outputs(net: KEBR) -> dict[str, list[float]]:
    with torch.no_grad():
        found = {}
        for task in ("pretrain", "finetune"):
            out = net(batch(), task)
            found |= {f"{task}_prediction": out.prediction.tolist(), f"{task}_c_a": out.c_a.tolist(),
                      f"{task}_c_v": out.c_v.tolist()}
    return found


def record() -> None:
    shutil.rmtree(FIXTURES, ignore_errors=True)
    expected = {}
    for name in CONFIGS:
        torch.manual_seed(0)
        net, cfg = model(name)
        run = FIXTURES / name
        checkpoint.save(run, "step-00000001", net, None, None, {"step": 1, "epoch": 0, "batch_in_epoch": 1,
                                                                "config": cfg.to_dict()})
        expected[name] = outputs(net)
    (FIXTURES / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if os.environ.get("KEBR_RECORD_CHECKPOINTS"):
    record()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_checkpoint_written_before_the_redesign_loads_and_predicts_the_same(name):
    expected = json.loads((FIXTURES / "expected.json").read_text())[name]
    ckpt = checkpoint.latest(FIXTURES / name)
    saved = checkpoint.read_state(ckpt)["config"]
    torch.manual_seed(123)  # other initial weights: every number must come from the checkpoint
    net, _ = model(name)
    now = TrainConfig.load((), [], **saved).to_dict()
    assert {k: now[k] for k in saved} == saved and set(now) - set(saved) == {"head"}  # one key added since: `head`
    assert set(checkpoint.load_weights(ckpt)) == set(net.state_dict())  # what --init loads: today's keys
    checkpoint.load(ckpt, net, restore_rng=False)
    assert outputs(net.eval()) == expected
