"""docs/datasets.md's recipes, each run as written on a miniature copy of its dataset's layout.

Each fenced block tagged ```bash recipe=NAME is run by bash (`-euo pipefail`) from the repository root,
with only the values of its top variables replaced: the dataset root and OUT by folders made here, the
model folders by tiny random models (helpers.tiny_text_encoder, helpers.tiny_audio_model), and EPOCHS by
the recipe's own "first run" value. `kebr-data`/`kebr-train` are this checkout's; `docker run ... kebr`
is tests/fake_docker.py (no container engine on CI), which checks the mounts and runs the image's entry
point here, with OpenFace from KEBR_OPENFACE_BIN or tests/fake_openface. The miniatures have the real
folder names and label files (MMSA's Raw/ + label.csv, VoxCeleb2's dev/ + test/, MMSA's pickle) and
real speech (the bundled demo clips), and enough labelled clips in train/valid/test for every step.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import shutil
import subprocess
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import cli_server
from helpers import DEMO, ROOT, run_cli, tiny_audio_model

import kebr_data
from kebr_data import config
from kebr_data.media.ffmpeg import find_ffmpeg

pytest.importorskip("transformers")
DOC = ROOT / "docs" / "datasets.md"
BLOCK = re.compile(r"^```bash recipe=(\S+)\n(.*?)^```", re.M | re.S)
MMSA_COLUMNS = ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"]
#: the bundled labelled demo (demo/mmsa): 8 spoken sentences with labels in [-3, 3] and MMSA's splits
DEMO_MMSA = ROOT / "demo" / "mmsa"
SIMS_TEXT = ["我真的很喜欢这部电影，看完特别开心。", "这部电影太糟糕了，我很难过。", "音乐很棒，演技也非常出色。",
             "我讨厌冗长的场景，太烦人了。", "故事不错，就是有点慢。", "演技很差，结局也很无聊。",
             "多么美好又惊喜的礼物，谢谢你。", "情节平淡，人物也很单薄。"]
SIMS_LABELS = [0.8, -0.6, 0.6, -0.8, 0.2, -0.4, 0.4, -0.2]


def recipes() -> dict[str, str]:
    """The recipe blocks of docs/datasets.md by name."""
    return {m.group(1): m.group(2) for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


def with_values(script: str, values: dict[str, str]) -> str:
    """`script` with the assignments `NAME=...` of `values`' names set to their values (each must be there)."""
    lines, seen = [], set()
    for line in script.splitlines():
        name = line.split("=", 1)[0]
        if "=" in line and name in values:
            seen.add(name)
            line = f"{name}={values[name]}"  # the tests' values hold no shell metacharacter
        lines.append(line)
    assert seen == set(values), f"the recipe sets no {sorted(set(values) - seen)}"
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def shell_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The environment the recipes run in: kebr-data, kebr-train and docker on PATH as this checkout's. The two
    CLIs are forked from one pre-imported interpreter (tests/cli_server.py): each command is still a process of
    its own, without ~5 CPU-s of interpreter start and torch import each."""
    bin_dir = tmp_path_factory.mktemp("bin")
    sock = bin_dir / "cli.sock"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "250",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name, target in (("kebr-data", cli_server.command(sock, "kebr_data")),
                         ("kebr-train", cli_server.command(sock, "kebr_model.cli")),
                         ("docker", [sys.executable, str(ROOT / "tests" / "fake_docker.py")])):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {shlex.join(target)} "$@"\n')
        (bin_dir / name).chmod(0o755)
    with cli_server.running(sock, env, ROOT):
        yield env


def run_recipe(name: str, values: dict[str, str], env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess:
    """Run recipe `name` as written (its variables set to `values`) and return the finished process."""
    script = tmp / f"recipe-{name}.sh"
    script.write_text(with_values(recipes()[name], values))
    proc = subprocess.run(["bash", "-euo", "pipefail", str(script)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, \
        f"recipe {name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def demo_clips() -> list[dict]:
    """demo/mmsa's rows (label.csv) with their video files."""
    with open(DEMO_MMSA / "label.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [{**r, "media": DEMO_MMSA / "Raw" / r["video_id"] / f"{r['clip_id']}.mp4"} for r in rows]


def mmsa_miniature(root: Path, rows: list[dict]) -> Path:
    """MMSA's layout: Raw/<video_id>/<clip_id>.mp4 and label.csv with MMSA's columns, from `rows`
    (each with its `media` file and MMSA_COLUMNS' values; missing ones empty)."""
    for r in rows:
        (root / "Raw" / r["video_id"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r["media"], root / "Raw" / r["video_id"] / f"{r['clip_id']}.mp4")
    with open(root / "label.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, MMSA_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows({c: r.get(c, "") for c in MMSA_COLUMNS} for r in rows)
    return root


def renamed(videos: list[str], clip_ids: list[str] | None = None) -> list[dict]:
    """The demo's 8 clips under other video ids (one per demo video, in order) and clip ids."""
    order = sorted({r["video_id"] for r in demo_clips()})
    return [{**r, "video_id": videos[order.index(r["video_id"])], "clip_id": clip_ids[i] if clip_ids else r["clip_id"]}
            for i, r in enumerate(demo_clips())]


def sims_rows(videos: list[str], clip_ids: list[str]) -> list[dict]:
    """CH-SIMS-style rows: Mandarin text, labels in [-1, 1] in MMSA's 0.2 steps (the test split's two in
    [-0.4, 0.4], so v2's Acc2_weak has clips), per-modality labels."""
    rows = []
    for r, text, y in zip(renamed(videos, clip_ids), SIMS_TEXT, SIMS_LABELS, strict=True):
        rows.append({**r, "text": text, "label": f"{y:.1f}", "label_T": f"{y:.1f}",
                     "label_A": f"{min(1.0, y + 0.2):.1f}", "label_V": f"{y / 2:.1f}",
                     "annotation": "Positive" if y > 0 else "Negative"})
    return rows


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """OUT of every recipe: the systems recipe reads the VoxCeleb2 and MOSI recipes' folders."""
    return tmp_path_factory.mktemp("kebr")


@pytest.fixture(scope="module")
def models(tiny_bert) -> dict[str, str]:
    """The recipes' text encoder folder: a tiny random BERT."""
    return {"ENCODER": tiny_bert}


def clips(folder: Path, *columns: str) -> list[dict]:
    """The folder's per-clip rows with these `<stage>.<column>`s, through the public reader (current tables only)."""
    return kebr_data.open(folder, columns=["clip_id", *columns]).to_pylist()


def evaluations(stdout: str) -> list[dict]:
    """The JSON objects `kebr-train eval` printed (flat: the metrics at the top level, unlike finetune's)."""
    found = [json.loads(m.group(0)) for m in re.finditer(r"^\{\n.*?^\}$", stdout, re.M | re.S)]
    return [d for d in found if "samples" in d]


def finetuned(run: Path, evaluated: dict, metrics: set[str], test_clips: int) -> None:
    """A fine-tuned run evaluated on its test split: the dataset's metrics, finite, over every test clip."""
    test = json.loads((run / "test_metrics.json").read_text())
    assert metrics <= set(test) and test["samples"] == test_clips
    assert metrics <= set(evaluated)
    assert all(isinstance(evaluated[m], float | int) and np.isfinite(evaluated[m]) for m in metrics), evaluated
    assert evaluated["samples"] == test_clips
    preds = pq.read_table(run / "predictions-test.parquet").to_pylist()
    assert len(preds) == test_clips and {p["split"] for p in preds} == {"test"}


MOSI_METRICS = {"Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"}
SIMS_METRICS = {"Acc2", "Acc3", "Acc5", "F1", "MAE", "Corr"}


def test_the_dataset_configs_read_the_given_transcripts():
    """MOSI, MOSEI and CH-SIMS ship their transcripts in label.csv: their configs read them (no ASR model)."""
    for name in ("mosi", "mosei", "sims", "sims2"):
        cfg = config.load([ROOT / "pipelines" / f"{name}.toml"])
        assert (cfg["index"]["layout"], cfg["asr"]["engine"]) == ("mmsa", "given"), name


def test_every_recipe_is_tested():
    assert set(recipes()) == {"voxceleb2", "mosi", "mosei", "sims", "sims2", "mmsa-pickle", "systems"}


def test_kebr_data_names_the_kebr_train_commands():
    """`kebr-data import-mmsa` (a kebr-train command, easily typed after a kebr-data one) says whose command it
    is, exit 2, instead of click's bare "No such command"; the list is kebr-train's commands that kebr-data lacks."""
    from kebr_data.cli import TRAIN_COMMANDS
    from kebr_data.cli import main as data_main
    from kebr_model.cli import main as train_main

    assert set(TRAIN_COMMANDS) == set(train_main.commands) - set(data_main.commands)
    proc = run_cli("import-mmsa", "--pickle", "MOSI/Processed/unaligned_50.pkl")
    assert proc.returncode == 2 and "'import-mmsa' is a kebr-train command: kebr-train import-mmsa" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- VoxCeleb2 -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def voxceleb2(tmp_path_factory, out, models, shell_env) -> Path:
    """VoxCeleb2's unpacked archives: dev/{mp4,aac}/idNNNNN/<youtube_id>/NNNNN.{mp4,m4a}, and test/ alike,
    from the demo's six good clips (spoken sentences with sentiment words); the recipe run on it."""
    root = tmp_path_factory.mktemp("vox") / "voxceleb2"
    ffmpeg = find_ffmpeg()
    good = sorted(p for p in DEMO.rglob("*.mp4") if "id00003" not in str(p))  # id00003: the demo's broken clips
    for i, mp4 in enumerate(good):
        rel = mp4.relative_to(DEMO / "mp4")
        split = "test" if i == len(good) - 1 else "dev"
        (root / split / "mp4" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mp4, root / split / "mp4" / rel)
        (root / split / "aac" / rel).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(mp4), "-vn", "-c:a", "copy",
                        str((root / split / "aac" / rel).with_suffix(".m4a"))], check=True)
    run_recipe("voxceleb2", {"VOX2": str(root), "OUT": str(out), "EPOCHS": "2", **models}, shell_env, out)
    return out / "features-vox2"


@pytest.mark.slow
def test_voxceleb2_recipe_extracts_masks_and_pretrains(voxceleb2, out):
    rows = clips(voxceleb2, "plan.split", "plan.audio_path", "plan.video_path", "asr.status", "mask.status",
                 "mask.masked_text", "visual.status")
    assert len(rows) == 6 and {r["plan.split"] for r in rows} == {"dev", "test"}
    assert all(r["plan.audio_path"].endswith(".m4a") and r["plan.video_path"].endswith(".mp4") for r in rows)
    assert all(r["asr.status"] == "ok" and r["visual.status"] == "ok" for r in rows)
    masked = [r for r in rows if r["mask.status"] == "ok"]
    assert masked and all("[MASK]" in r["mask.masked_text"] for r in masked)
    steps = [json.loads(line) for line in (out / "runs/pretrain/metrics.jsonl").read_text().splitlines()]
    assert steps and all(np.isfinite(s["loss"]) for s in steps if "loss" in s)
    assert (out / "runs/pretrain/checkpoints/latest").is_file()


# --- CMU-MOSI, CMU-MOSEI -------------------------------------------------------------------------------

MOSI_VIDEOS = ["03bSnISJMiM", "0h-zjBukYpk", "1DmNV9C1hbY", "2iD-tVS8NPw"]  # real MOSI video ids


@pytest.fixture(scope="module")
def mosi(tmp_path_factory, out, models, shell_env) -> tuple[Path, Path, str]:
    src = mmsa_miniature(tmp_path_factory.mktemp("mosi") / "MOSI", renamed(MOSI_VIDEOS))
    proc = run_recipe("mosi", {"MOSI": str(src), "OUT": str(out), "EPOCHS": "2", **models}, shell_env, out)
    return src, out / "features-mosi", proc.stdout


def given_text_was_read(src: Path, features: Path) -> None:
    """Every clip's transcript is label.csv's text, read by the `given` engine (no ASR model ran)."""
    with open(src / "label.csv", newline="", encoding="utf-8") as fh:
        want = {f"{r['video_id']}$_${r['clip_id']}": r["text"] for r in csv.DictReader(fh) if r["text"]}
    asr = {r["clip_id"]: r for r in clips(features, "asr.status", "asr.engine", "asr.text") if r["clip_id"] in want}
    assert {c: (r["asr.status"], r["asr.engine"], r["asr.text"]) for c, r in asr.items()} == \
        {c: ("ok", "given", " ".join(t.split())) for c, t in want.items()}


def test_mosi_recipe_reads_the_given_text_finetunes_and_evaluates(mosi, out):
    src, features, stdout = mosi
    given_text_was_read(src, features)
    assert all(r["visual.status"] == "ok" for r in clips(features, "visual.status"))
    finetuned(out / "runs/mosi", evaluations(stdout)[-1], MOSI_METRICS, 2)


@pytest.mark.slow
def test_mosei_recipe(tmp_path_factory, out, models, shell_env):
    videos = ["-3g5yACwYnA", "-6rXp3zJ3kc", "0Jc1Ng8GHnk", "_0efYOjQYRc"]  # MOSEI's ids may start with "-"
    src = mmsa_miniature(tmp_path_factory.mktemp("mosei") / "MOSEI",
                         renamed(videos, ["10", "13", "2", "5", "0", "1", "7", "8"]))
    proc = run_recipe("mosei", {"MOSEI": str(src), "OUT": str(out), "EPOCHS": "2", **models}, shell_env, out)
    given_text_was_read(src, out / "features-mosei")
    finetuned(out / "runs/mosei", evaluations(proc.stdout)[-1], MOSI_METRICS, 2)


# --- CH-SIMS, CH-SIMS v2 -------------------------------------------------------------------------------

@pytest.mark.slow
def test_sims_recipe_trains_on_the_sims_labels_and_metrics(tmp_path_factory, out, models, shell_env):
    rows = sims_rows([f"video_{i:04d}" for i in range(1, 5)], [f"{i:04d}" for i in (1, 2) * 4])
    src = mmsa_miniature(tmp_path_factory.mktemp("sims") / "CH-SIMS", rows)
    proc = run_recipe("sims", {"SIMS": str(src), "OUT": str(out), **models}, shell_env, out)
    given_text_was_read(src, out / "features-sims")
    by_id = {r["clip_id"]: r for r in clips(out / "features-sims", "plan.label_a")}
    assert by_id["video_0001$_$0001"]["plan.label_a"] == pytest.approx(float(rows[0]["label_A"]))
    finetuned(out / "runs/sims", evaluations(proc.stdout)[-1], SIMS_METRICS, 2)


@pytest.mark.slow
def test_sims2_recipe_keeps_unlabelled_clips_and_reports_sims2_metrics(tmp_path_factory, out, models, shell_env):
    rows = sims_rows([f"aqgy{i}_0001" for i in range(1, 5)], [f"{i:05d}" for i in range(8)])
    unlabelled = [{"video_id": "aqgy9_0002", "clip_id": f"{k:05d}", "text": SIMS_TEXT[k], "media": rows[k]["media"]}
                  for k in range(2)]  # v2's unsupervised clips: no label, no mode
    src = mmsa_miniature(tmp_path_factory.mktemp("sims2") / "CH-SIMS-v2", rows + unlabelled)
    proc = run_recipe("sims2", {"SIMS2": str(src), "OUT": str(out), **models}, shell_env, out)
    given_text_was_read(src, out / "features-sims2")
    free = [r for r in clips(out / "features-sims2", "plan.label", "plan.split") if r["clip_id"].startswith("aqgy9")]
    assert len(free) == 2 and all(r["plan.label"] is None and r["plan.split"] is None for r in free)
    finetuned(out / "runs/sims2", evaluations(proc.stdout)[-1], SIMS_METRICS | {"Acc2_weak"}, 2)


# --- MMSA feature pickle -------------------------------------------------------------------------------

def mosi_pickle(path: Path) -> Path:
    """MMSA's processed MOSI (unaligned_50.pkl's keys): COVAREP 5-d audio with -inf, Facet 20-d vision."""
    rng = np.random.default_rng(0)

    def part(videos: list[str]) -> dict:
        n = 2 * len(videos)
        labels = rng.uniform(-3, 3, n).astype(np.float32)
        audio = (rng.standard_normal((n, 50, 5)) + labels[:, None, None]).astype(np.float32)
        audio[:, 40:, :] = -np.inf
        return {"id": [f"{v}$_${k}" for v in videos for k in (1, 2)],
                "raw_text": np.array(["it was really good", "i did not like it"] * len(videos)),
                "text": rng.standard_normal((n, 50, 768)).astype(np.float32),
                "text_bert": np.ones((n, 3, 50), np.float32), "audio": audio,
                "vision": (rng.standard_normal((n, 50, 20)) + labels[:, None, None]).astype(np.float32),
                "audio_lengths": [40] * n, "vision_lengths": [50] * n, "regression_labels": labels,
                "classification_labels": (labels > 0).astype(np.float32),
                "annotations": ["Positive" if y > 0 else "Negative" for y in labels]}

    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"train": part(MOSI_VIDEOS[:2]), "valid": part(MOSI_VIDEOS[2:3]),
                                   "test": part(MOSI_VIDEOS[3:])}))
    return path


def test_mmsa_pickle_recipe(tmp_path_factory, out, models, shell_env):
    pkl = mosi_pickle(tmp_path_factory.mktemp("pkl") / "MOSI" / "Processed" / "unaligned_50.pkl")
    proc = run_recipe("mmsa-pickle", {"PICKLE": str(pkl), "OUT": str(out), "EPOCHS": "2", **models}, shell_env,
                      out)
    assert len(clips(out / "features-mosi-pkl")) == 8
    finetuned(out / "runs/mosi-pkl", evaluations(proc.stdout)[-1], MOSI_METRICS, 2)


# --- the four papers' systems --------------------------------------------------------------------------

@pytest.mark.slow
def test_systems_recipe_runs_each_papers_chain(voxceleb2, mosi, out, tiny_bert, tmp_path_factory, shell_env):
    data2vec = tiny_audio_model("data2vec", tmp_path_factory.mktemp("d2v") / "data2vec", attention_mask=False)
    proc = run_recipe("systems", {"OUT": str(out), "BERT": tiny_bert, "ROBERTA": tiny_bert,
                                  "DATA2VEC": str(data2vec), "EPOCHS": "2"}, shell_env, out)
    assert len(evaluations(proc.stdout)) == 4
    for run, evaluated in zip(("kebr", "skesl", "boosting-sf-joint", "mmml"), evaluations(proc.stdout), strict=True):
        finetuned(out / "runs" / run, evaluated, MOSI_METRICS, 2)
