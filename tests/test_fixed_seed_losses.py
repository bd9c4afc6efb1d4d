"""Fixed-seed losses: short pre-training and fine-tuning runs through `kebr-train` (tiny BERT, CPU, one
thread) whose every training step's loss and loss terms, read from the run's own metrics.jsonl, must equal
(==, not approximately) the values recorded in fixtures/fixed_seed_losses.json before the trainer's
redesign (issue #26). A refactor that changes any number here changed behaviour.

Regenerate only for a deliberate change of behaviour: KEBR_RECORD_LOSSES=1 pytest tests/test_fixed_seed_losses.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from shard_factory import make_shards

pytest.importorskip("transformers")

FIXTURE = Path(__file__).parent / "fixtures" / "fixed_seed_losses.json"
COMMON = ["batch_size=4", "max_steps=2", "checkpoint_every=0", "layers=2", "max_text_tokens=16",
          "max_audio_frames=8", "max_visual_frames=8", "lr_other=1e-3", "lr_encoder=1e-4", "seed=3"]
FINETUNE = ["train_split=train", "valid_split=", "test_split=test"]
#: run name -> (command, --init run or None, overrides)
RUNS: dict[str, tuple[str, str | None, list[str]]] = {
    "kebr_pretrain": ("pretrain", None, ["mcc_space=flatten"]),
    "kebr_finetune": ("finetune", "kebr_pretrain", [*FINETUNE, "mcc_space=pooled"]),
    "kebr_released": ("finetune", None, [*FINETUNE, "tcmf_attention=released", "tcmf_residual=raw",
                                         "shared_layers=true", "ffn=linear-dropout", "finetune_pool=all",
                                         "mcc_space=released", "mcc_form=released-finetune", "tcmf_embed_dim=8",
                                         "head_dropout=0.5", "head_dropout_at=hidden"]),
    "skesl_pretrain": ("pretrain", None, ["per_modality_query=true", "mcc_space=flatten"]),
    "skesl_finetune": ("finetune", "skesl_pretrain", [*FINETUNE, "per_modality_query=true", "mcc_space=pooled",
                                                      "mcc_loss=separate"]),
    "tcmf_joint": ("finetune", None, [*FINETUNE, "scheme=joint", "alpha_text=0.5", "alpha_audio=0.3",
                                      "alpha_visual=0.2", "mcc_space=flatten"]),
    "mult_two_step": ("finetune", None, [*FINETUNE, "fusion=mult", "mult_d=8", "mult_layers=1", "scheme=two-step",
                                         "alpha_text=1", "alpha_audio=1", "alpha_visual=1", "use_mcc=false",
                                         "epochs=2", "step_one_epochs=1", "max_steps=0"]),
    "mmml_joint": ("finetune", None, [*FINETUNE, "fusion=mmml", "mmml_d=8", "mmml_heads=2", "mmml_layers=1",
                                      "scheme=joint", "alpha_text=1", "alpha_audio=1", "head_layers=3",
                                      "modal_head_layers=1", "mcc_space=flatten", "modalities.use=ta"]),
}
#: the step record's loss values (the total and each term) and the cosines
SKIP = {"step", "epoch", "split", "samples", "elapsed_s"}


def losses(run: Path) -> list[dict[str, float]]:
    """Every training step's loss record from the run's metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in SKIP} for r in rows if r["split"] == "train"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory, tiny_bert) -> dict[str, list[dict[str, float]]]:
    import torch

    from kebr_model.cli import main

    # recorded with one thread (OMP_NUM_THREADS=1); an earlier test in this worker may have changed torch's count
    # (a stage's model loaded in-process), and a float sum over other threads differs in its last bits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fixed-seed")
    shards = make_shards(root / "shards", n=10, shard_size=5, labelled=True, widths=(6, 10))
    out = {}
    for name, (command, init, overrides) in RUNS.items():
        args = [command, "--shards", str(shards), "--out", str(root / name)]
        args += ["--init", str(root / init)] if init else []
        for option in [f"encoder={tiny_bert}", *COMMON, *overrides]:
            args += ["--set", option]
        ran = CliRunner().invoke(main, args)
        assert ran.exit_code == 0, (name, ran.output[-2000:])
        out[name] = losses(root / name)
    torch.set_num_threads(threads)
    if os.environ.get("KEBR_RECORD_LOSSES"):
        FIXTURE.write_text(json.dumps(out, indent=1) + "\n")
    return out


@pytest.mark.parametrize("name", list(RUNS))
def test_losses_equal_the_recorded_ones_exactly(measured, name):
    recorded = json.loads(FIXTURE.read_text())
    assert measured[name], name
    assert measured[name] == recorded[name]
