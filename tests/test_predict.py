"""`kebr-train predict` and `kebr_model.load_run`: predictions equal `kebr-train eval`'s on the same clips for
every fusion and scheme (--shards) and on features made anew from the videos (--src); bad inputs are rows;
features made with other settings, another tool build or a missing binary are refused in one line before any
work; the documented example runs."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import DEMO, ROOT, tiny_audio_model
from shard_factory import make_shards

from kebr_data import config as data_config
from kebr_data.pipeline import run_record
from kebr_data.pipeline.engine import Engine, RunOptions
from kebr_data.storage.layout import OutputDir

torch = pytest.importorskip("torch")
pq = pytest.importorskip("pyarrow.parquet")

import kebr_model  # noqa: E402
from kebr_model.cli import main  # noqa: E402
from kebr_model.training.run import split_defaults  # noqa: E402
from kebr_model.config import TrainConfig  # noqa: E402
from kebr_model.training.train import Trainer  # noqa: E402

MMSA = ROOT / "demo" / "mmsa"
#: predict scores every clip in batches of batch_size, eval one split's: other paddings, float32 round-off
TOL = {"rel": 1e-5, "abs": 1e-6}
TINY = ["batch_size=4", "epochs=1", "checkpoint_every=0", "max_text_tokens=16", "patience=0", "dropout=0.0",
        "lr_other=1e-2", "freeze_encoder=true", "layers=1"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def train(folder: Path, run: Path, sets: list[str], config: tuple[Path, ...] = ()) -> Path:
    """A few fine-tuning steps, as `kebr-train finetune` takes them (without its plots)."""
    cfg = TrainConfig.load(config, [*TINY, *sets], task="finetune")
    split_defaults(cfg)
    Trainer(cfg, folder, run).fit()
    return run


def eval_rows(folder: Path, run: Path, split: str) -> list[dict]:
    result = cli("eval", "--shards", folder, "--run", run, "--split", split)
    assert result.exit_code == 0, result.output
    return pq.read_table(run / f"predictions-{split}.parquet").to_pylist()


def assert_same(evaluated: list[dict], predicted: list[dict]) -> None:
    """Every clip eval scored has predict's values: prediction, c_a, c_v and each unimodal head's."""
    by_id = {r["clip_id"]: r for r in predicted}
    assert evaluated
    for row in evaluated:
        got = by_id[row["clip_id"]]
        assert got["status"] == "ok"
        for key in [k for k in row if k == "prediction" or k.startswith(("prediction_", "c_"))]:
            if key in got or row[key] != 0.0:  # eval writes 0 for the cosine of a modality the model lacks
                assert got[key] == pytest.approx(row[key], **TOL), (row["clip_id"], key)


def one_line_refusal(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- --shards: every fusion and scheme --------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_bert) -> Path:
    """Ten labelled clips (6 train, 2 valid, 2 test) with acoustic, visual and the audio stage's FLAC, and the
    run.json an extract leaves (the training run records its settings)."""
    root = make_shards(tmp_path_factory.mktemp("predict") / "f", n=10, shard_size=5, labelled=True,
                       widths=(6, 5), audio=True)
    run_record.record(OutputDir(root), data_config.defaults(), "kebr-data extract", ["acoustic"], None)
    return root


@pytest.fixture(scope="module")
def hubert(tmp_path_factory) -> str:
    return str(tiny_audio_model("hubert", tmp_path_factory.mktemp("hubert") / "m", True, layerdrop=0.0))


CASES = {
    "tcmf": [],
    "sf": ["fusion=sf", "use_mcc=false"],
    "tfn": ["fusion=tfn", "tfn_project=4", "use_mcc=false"],
    "mult": ["fusion=mult", "mult_d=8", "mult_layers=1", "mcc_space=flatten"],
    "mmml": ["fusion=mmml", "mmml_d=8", "mmml_layers=1", "mmml_heads=2", "mcc_space=flatten"],
    "joint": ["scheme=joint", "alpha_text=0.5", "alpha_audio=0.5", "alpha_visual=0.5"],
    "two-step": ["scheme=two-step", "alpha_text=0.5", "alpha_audio=0.5", "epochs=2"],
    "audio-encoder": ["modalities.audio=audio", "modalities.use=ta", "fusion=mmml", "mmml_d=8", "mmml_layers=1",
                      "mmml_heads=2", "scheme=joint", "alpha_text=0.5", "alpha_audio=0.5", "max_audio_s=0.5",
                      "use_mcc=false"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_predictions_equal_eval_for_every_fusion_and_scheme(case, folder, tiny_bert, hubert, tmp_path):
    sets = [f"encoder={tiny_bert}", *CASES[case]] + ([f"audio_encoder={hubert}"] if case == "audio-encoder" else [])
    run = train(folder, tmp_path / "run", sets)
    evaluated = eval_rows(folder, run, "train")
    rows = kebr_model.load_run(run).predict_shards(folder)
    assert [r["clip_id"] for r in rows] == [f"clip{i:04d}" for i in range(10)]  # plan order, every clip
    assert_same(evaluated, rows)
    if case in ("joint", "two-step", "audio-encoder"):  # eval's file holds the heads, under predict's names
        assert {"prediction_text", "prediction_audio"} <= {k for k in evaluated[0] if k.startswith("pred")} \
            <= set(rows[0])
    assert "c_v" not in rows[0] if case == "audio-encoder" else {"c_a", "c_v"} <= set(rows[0])


def test_eval_and_predict_score_a_clip_without_transcript_alike_for_a_model_without_text(tiny_bert, tmp_path):
    """`modalities.use = av` reads no text: eval scores clip0001 (no given text, mask skipped) as predict does,
    and writes the joint scheme's audio and visual heads as predict does."""
    folder = make_shards(tmp_path / "f", n=5, shard_size=5, labelled=True, widths=(6, 5), textless="clip0001")
    run = train(folder, tmp_path / "run", [f"encoder={tiny_bert}", "modalities.use=av", "scheme=joint",
                                           "alpha_audio=0.5", "alpha_visual=0.5"])
    evaluated = eval_rows(folder, run, "train")
    assert [r["clip_id"] for r in evaluated] == ["clip0000", "clip0001", "clip0002"]
    assert {"prediction_audio", "prediction_visual"} <= set(evaluated[0])
    rows = kebr_model.load_run(run).predict_shards(folder)
    assert rows[1]["transcript"] is None
    assert_same(evaluated, rows)


@pytest.fixture(scope="module")
def tcmf_run(folder, tiny_bert, tmp_path_factory) -> Path:
    return train(folder, tmp_path_factory.mktemp("tcmf") / "run", [f"encoder={tiny_bert}"])


def test_shards_made_with_other_settings_are_refused_naming_the_setting(folder, tcmf_run, tmp_path):
    from kebr_data.schema import ACOUSTIC
    from kebr_data.storage.commit import commit_rows
    from kebr_data.storage.store import Store
    from kebr_data.mmsa_import import with_width

    other = shutil.copytree(folder, tmp_path / "other")
    store = Store(other)
    for shard in range(store.plan.num_shards):  # the same frames, committed as made with the paper's recipe
        rows = store.read("acoustic", shard).to_pylist()
        commit_rows(OutputDir(other), "acoustic", shard, rows, with_width(ACOUSTIC, 6), "paper-recipe-hash",
                    store.plan.shard_sha256(shard))
    cfg = data_config.load((), ["acoustic.recipe=paper"])
    run_record.record(OutputDir(other), cfg, "kebr-data extract", ["acoustic"], None)
    result = cli("predict", "--run", tcmf_run, "--shards", other, "--out", tmp_path / "p")
    one_line_refusal(result, "acoustic.recipe", "'released'", "'paper'", str(other))
    assert not (tmp_path / "p").exists()


def test_frames_of_another_width_are_refused(tcmf_run, tmp_path):
    narrow = make_shards(tmp_path / "narrow", n=5, shard_size=5, labelled=True, widths=(7, 5))
    result = cli("predict", "--run", tcmf_run, "--shards", narrow, "--out", tmp_path / "p")
    one_line_refusal(result, "audio frames of width 7", "trained on width 6")
    assert not (tmp_path / "p").exists()


def test_a_run_trained_before_the_record_predicts_on_shards_only(folder, tcmf_run, tmp_path):
    """Its checkpoints hold the config hashes of the stages it read, not how to make features anew."""
    old = shutil.copytree(tcmf_run, tmp_path / "old")
    for state in old.glob("checkpoints/*/state.json"):
        meta = json.loads(state.read_text())
        del meta["data"]["source"]
        state.write_text(json.dumps(meta))
    result = cli("predict", "--run", old, "--shards", folder, "--out", tmp_path / "p", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"ok": 10}
    one_line_refusal(cli("predict", "--run", old, "--src", MMSA, "--out", tmp_path / "q"),
                     "does not record how its training shards were made", "fine-tune it again")
    assert not (tmp_path / "q").exists()


def test_rows_columns_identity_and_the_summary(folder, tcmf_run, tmp_path):
    out = tmp_path / "p"
    result = cli("predict", "--run", tcmf_run, "--shards", folder, "--out", out)
    assert result.exit_code == 0, result.output
    assert "10 clip(s): 10 ok" in result.stdout and "clip0000" in result.stdout
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    with open(out / "predictions.csv", newline="") as fh:
        assert [r["clip_id"] for r in csv.DictReader(fh)] == [r["clip_id"] for r in rows]
    first = rows[0]
    assert set(first) == {"clip_id", "source_path", "status", "reason", "prediction", "class_2", "class_5",
                          "class_7", "c_a", "c_v", "transcript", "run", "checkpoint", "checkpoint_sha256"}
    state = (tcmf_run / "checkpoints" / first["checkpoint"] / "state.json").read_text()
    assert first["checkpoint_sha256"] in state and first["run"] == str(tcmf_run.resolve())
    assert first["transcript"] and first["class_7"] == round(max(-3.0, min(3.0, first["prediction"])))
    as_json = cli("predict", "--run", tcmf_run, "--shards", folder, "--out", out, "--json")
    parsed = json.loads(as_json.stdout)
    assert parsed["counts"] == {"ok": 10} and len(parsed["rows"]) == 10


def test_a_pretraining_run_and_a_run_without_checkpoints_are_refused(folder, tiny_bert, tmp_path):
    run = tmp_path / "pre"
    cfg = TrainConfig.load((), [*TINY, f"encoder={tiny_bert}", "max_steps=1"], task="pretrain")
    Trainer(cfg, folder, run).fit()
    one_line_refusal(cli("predict", "--run", run, "--shards", folder, "--out", tmp_path / "p"), "pretrain run")
    (tmp_path / "empty").mkdir()
    one_line_refusal(cli("predict", "--run", tmp_path / "empty", "--shards", folder, "--out", tmp_path / "p"),
                     "holds no checkpoint")
    assert not (tmp_path / "p").exists()


# --- --src: features made anew from the videos -------------------------------------------------------

@pytest.fixture(scope="module")
def mmsa_run(tmp_path_factory, tiny_bert) -> tuple[Path, Path]:
    """demo/mmsa extracted as the README does (index, audio, acoustic) and a few fine-tuning steps on it."""
    base = tmp_path_factory.mktemp("mmsa")
    cfg = data_config.load([ROOT / "pipelines" / "demo_mmsa.toml"], ["run.workers=1"])
    Engine(RunOptions(out=base / "features", stages=["index", "audio", "acoustic"], config=cfg, src=MMSA,
                      command="kebr-data extract", saved_config=cfg)).run()
    run = train(base / "features", base / "run", [f"encoder={tiny_bert}", "modalities.use=ta"],
                (ROOT / "pipelines" / "train_demo.toml",))
    return base / "features", run


@pytest.fixture(scope="module")
def src_predictions(mmsa_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("src") / "p"
    result = cli("predict", "--run", mmsa_run[1], "--src", MMSA, "--out", out, "--set", "run.workers=1")
    assert result.exit_code == 0, result.output
    return out


def test_src_predictions_equal_eval_on_the_same_clips(mmsa_run, src_predictions):
    features, run = mmsa_run
    rows = pq.read_table(src_predictions / "predictions.parquet").to_pylist()
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    for split in ("train", "test"):
        assert_same(eval_rows(features, run, split), rows)
    assert rows[0]["transcript"] == "I love this wonderful movie, it made me so happy."  # label.csv's text


@pytest.mark.parametrize("setting,needles", [
    ("audio.sample_rate=16000", ("audio.sample_rate", "22050", "16000")),
    ("audio.ffmpeg=/nowhere/ffmpeg", ("audio.ffmpeg", "not found here", "/nowhere/ffmpeg")),
    ("acoustic.recipe=paper", ("acoustic.recipe", "'released'", "'paper'")),
])
def test_src_with_other_settings_or_a_missing_binary_is_refused_before_any_work(mmsa_run, tmp_path, setting,
                                                                                  needles):
    result = cli("predict", "--run", mmsa_run[1], "--src", MMSA, "--out", tmp_path / "p", "--set", setting)
    one_line_refusal(result, *needles)
    assert not (tmp_path / "p").exists()


def test_another_ffmpeg_build_is_refused_naming_both(mmsa_run, tmp_path):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'ffmpeg version 0.0-other'\n")
    fake.chmod(0o755)
    result = cli("predict", "--run", mmsa_run[1], "--src", MMSA, "--out", tmp_path / "p", "--set",
                 f"audio.ffmpeg={fake}")
    line = one_line_refusal(result, "audio.ffmpeg", str(fake), "this run would use")
    assert len(re.findall(r"sha256 [0-9a-f]{16}", line)) == 2
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("other", ["settings", "clips", "files", "folder"])
def test_a_cache_of_another_predict_is_refused_in_one_line_naming_it(mmsa_run, tmp_path, other):
    """OUT/cache left by another predict, with audio at 16 kHz or of other clips (indexed as another layout, as
    another --src would be; other media files given one by one, whose OUT/inputs.csv keeps its path; the same
    folder with a clip removed since): one line naming it and the way out, not the engine's --force or
    --replan, which predict has not; the files' list is left as the cache was made from it (and the same
    files, or the unchanged folder, again resume it)."""
    from dataclasses import replace

    from kebr_model.predict import pipeline

    src, raw = [MMSA], MMSA / "Raw"
    prepared = pipeline.prepare(kebr_model.load_run(mmsa_run[1]).loaded.record, src, ("run.workers=1",))
    if other == "settings":
        made = replace(prepared, cfg={**prepared.cfg, "audio": {**prepared.cfg["audio"], "sample_rate": 16000}},
                       stages=["audio"])
    elif other == "clips":
        made = replace(prepared, cfg={**prepared.cfg, "index": {**prepared.cfg["index"], "layout": "mmsa"}},
                       stages=[])
    elif other == "files":
        files, src = [raw / "dEmOmOvIe01/1.mp4", raw / "dEmOmOvIe01/2.mp4"], [raw / "dEmOmOvIe02/1.mp4"]
        made = replace(prepared, src=files, files=files, stages=[])
    else:
        src = [shutil.copytree(MMSA, tmp_path / "src")]
        made = replace(prepared, src=src, stages=[])
    cache, _ = pipeline.run_stages(made, tmp_path / "p")
    if other == "folder":  # the same folder, one clip fewer (its label.csv row gone)
        assert pipeline.run_stages(made, tmp_path / "p")[0] == cache  # unchanged: resumed
        labels = src[0] / "label.csv"
        labels.write_text("".join(labels.read_text().splitlines(keepends=True)[:-1]))
    listed = (tmp_path / "p" / "inputs.csv").read_bytes() if other == "files" else None
    if listed is not None:  # the same files again: the cache is this predict's, resumed
        assert pipeline.run_stages(made, tmp_path / "p")[0] == cache
    result = cli("predict", "--run", mmsa_run[1], "--src", *src, "--out", tmp_path / "p", "--set", "run.workers=1")
    line = one_line_refusal(result, f"{cache} holds the features of another predict (other clips or settings)",
                            "use a new --out", f"delete {cache}")
    assert "--force" not in line and "--replan" not in line
    assert not (tmp_path / "p" / "predictions.parquet").exists()
    if listed is not None:
        assert (tmp_path / "p" / "inputs.csv").read_bytes() == listed


def test_bad_inputs_are_rows(mmsa_run, tmp_path):
    """A manifest with a good clip, one without an audio track, a truncated MP4 and a row without media."""
    clips = {"good": "id00001/kEbRdEmOa01/00001.mp4", "silent": "id00003/kEbRdEmOe05/00001.mp4",
             "broken": "id00003/kEbRdEmOe05/00002.mp4"}
    manifest = tmp_path / "clips.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["clip_id", "video_path", "given_text"])
        writer.writerows([[k, str(DEMO / "mp4" / v), "What a great movie."] for k, v in clips.items()])
        writer.writerow(["nothing", "", "no media here"])
    result = cli("predict", "--run", mmsa_run[1], "--src", manifest, "--out", tmp_path / "p", "--json",
                 "--set", "run.workers=1")
    assert result.exit_code == 0, result.output
    rows = {r["clip_id"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["good"]["status"] == "ok" and rows["good"]["reason"] is None
    assert rows["silent"]["status"] == "ok" and rows["silent"]["reason"].startswith("audio: no_audio_track")
    assert rows["broken"]["status"] == "failed" and rows["broken"]["reason"].startswith("audio: decode_error")
    assert rows["broken"].get("prediction") is None and rows["good"]["prediction"] is not None
    rejected = rows[None]
    assert rejected["status"] == "rejected" and rejected["source_path"].endswith("clips.csv row 4")
    table = pq.read_table(tmp_path / "p" / "predictions.parquet")
    assert table.num_rows == 4 and table.column("prediction").null_count == 2


def test_the_documented_example_runs(mmsa_run, src_predictions, tmp_path, monkeypatch, capsys):
    """docs/predict.md's Python example, run where its paths exist (the run, the demo, the cache the command
    above filled: the example resumes it)."""
    text = (ROOT / "docs" / "predict.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "demo-runs").mkdir()
    os.symlink(mmsa_run[1], tmp_path / "demo-runs" / "finetune")
    os.symlink(ROOT / "demo", tmp_path / "demo")
    shutil.copytree(src_predictions, tmp_path / "demo-predictions")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/predict.md", "exec"), {})
    assert "dEmOmOvIe01$_$1 ok" in capsys.readouterr().out


@pytest.mark.slow
def test_a_single_video_is_transcribed_and_scored(mmsa_run, tmp_path):
    """`--src clip.mp4`: no given text, so the ASR stage runs (with the run's asr settings) before scoring."""
    clip = DEMO / "mp4" / "id00001" / "kEbRdEmOa01" / "00001.mp4"
    result = cli("predict", "--run", mmsa_run[1], "--src", clip, "--out", tmp_path / "p", "--json",
                 "--set", "run.workers=1")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert row["clip_id"] == "00001" and row["status"] == "ok" and row["source_path"] == str(clip)
    assert row["transcript"] and row["prediction"] is not None
    assert (tmp_path / "p" / "cache" / "asr").is_dir() and (tmp_path / "p" / "inputs.csv").is_file()


def test_the_summary_table_escapes_clip_ids_and_reasons():
    """A clip id or a stage message is user text: markup and bidi or newline characters print escaped."""
    import io

    from rich.console import Console

    from kebr_model.predict import output

    rows = [{"clip_id": "[bold]evil\u202e\nclip", "status": "failed", "reason": "audio: [red]bad\u202e (x)"}]
    buf = io.StringIO()
    Console(file=buf, width=200).print(output.summary(rows, {"parquet": Path("p"), "csv": Path("c")}))
    text = buf.getvalue()
    assert "[bold]evil\\u202e\\nclip" in text and "audio: [red]bad\\u202e" in text and "\u202e" not in text
