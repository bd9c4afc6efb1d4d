"""`kebr-train sweep`: grid files checked up front (the trainer's own validation, "did you mean"),
stable safe point names, mean ± std hand-computed, a 2 x 2 grid through the CLI with real runs
(one point-seed finished beforehand and not rerun), a sweep's run equal to the same run on its own,
parameter/FLOP counts; the t-SNE plot. (All system configs in one table: tests/test_systems.py.)
Runs use a tiny random BERT (conftest.py)."""

import csv
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from shard_factory import make_shards

from kebr_model.cli import main
from kebr_model.sweeps import (RESULT, Point, Sweep, SweepError, aggregate, load_sweep, metric_order, point_name,
                              toml_value)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder(tiny_bert) -> Path:
    return Path(tiny_bert)


def grid_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_unknown_keys_fail_up_front_with_did_you_mean(tmp_path):
    cases = [
        ("[grid]\nmcc_gg = [0.0, 0.5]\n",
         "[grid] mcc_gg = 0.0: unknown config key 'train.mcc_gg' (did you mean train.mcc_g?)"),
        ("[train]\nbach_size = 4\n",
         "[train]: unknown config key 'train.bach_size' (did you mean train.batch_size?)"),
        ("[grid]\nlayers = [1, 'two']\n", "[grid] layers = \"two\": config key train.layers expects int"),
        ("[grid]\n\"modalities.use\" = ['ta', 'tx']\n",
         "[grid] modalities.use = \"tx\": config key modalities.use expects"),
        ("[grid]\nconfig = ['a/x.toml', 'b/x.toml']\n", "two files share a name"),
        ("[grid]\nconfig = ['nowhere.toml']\n", "nowhere.toml does not exist"),
        ("[sweep]\nseed = [1]\n", "unknown [sweep] key 'seed' (did you mean seeds?)"),
        ("[grids]\nlayers = [1]\n", "unknown table [grids] (did you mean grid?)"),
        ("[grid]\nseed = [1, 2]\n", "seeds go in [sweep]"),
        ("[grid]\nlayers = []\n", "non-empty list"),
        ("[grid]\nlayers = [1, 1]\n", "lists a value twice"),
        ("[sweep]\nseeds = [1, 1]\n", "distinct integers"),
        ("[sweep]\ncommand = 'pretrian'\n", "command must be one of"),
        ("[sweep]\nplot_x = 'layer'\n[grid]\nlayers = [1]\n",
         "plot_x 'layer' is not a grid key (did you mean layers?)"),
    ]
    for text, needle in cases:
        with pytest.raises(SweepError) as err:
            load_sweep(grid_file(tmp_path, text))
        assert needle in str(err.value), (text, str(err.value))
    typo = CliRunner().invoke(main, ["sweep", "--config", str(grid_file(tmp_path, cases[0][0])), "--shards",
                                     str(tmp_path), "--out", str(tmp_path / "out")])
    assert typo.exit_code == 2 and "did you mean train.mcc_g?" in typo.output and "Traceback" not in typo.output
    assert not (tmp_path / "out").exists()
    zoo = '[sweep]\ncommand = "{}"\n[train]\nuse_mcc = false\n[grid]\nfusion = ["sf"]\n'
    assert len(load_sweep(grid_file(tmp_path, zoo.format("finetune"))).points()) == 1  # checked as the command runs
    with pytest.raises(SweepError, match="pre-training predicts the .MASK. token"):
        load_sweep(grid_file(tmp_path, zoo.format("pretrain")))


def test_points_are_named_stably_and_never_leave_the_folder():
    assert point_name({"fusion": "sf", "mcc_g": -0.25}) == "fusion=sf,mcc_g=-0.25"
    assert point_name({"modalities": ["text", "audio"], "use_mcc": False}) == "modalities=text+audio,use_mcc=false"
    assert point_name({}) == "base"
    escape = point_name({"encoder": "../../etc"})
    assert "/" not in escape and escape.startswith("encoder=.._.._etc~") and len(escape.split("~")[1]) == 8
    assert escape == point_name({"encoder": "../../etc"})  # stable
    assert point_name({"encoder": "a/b"}) != point_name({"encoder": "a_b"})  # replaced characters never collide
    long = point_name({"encoder": "x" * 200})
    assert len(long) <= 90 and "~" in long
    cased = Sweep(grid={"encoder": ["A", "a"]}).points()  # case-insensitive file systems
    assert len({p.name.lower() for p in cased}) == 2
    sweep = Sweep(grid={"fusion": ["tcmf", "sf"], "mcc_g": [0.0, 0.5]})
    assert [p.name for p in sweep.points()] == ["fusion=tcmf,mcc_g=0", "fusion=tcmf,mcc_g=0.5",
                                                "fusion=sf,mcc_g=0", "fusion=sf,mcc_g=0.5"]


def test_overrides_are_toml_values_the_trainer_reads_back():
    import tomllib

    for value in (True, 3, -0.25, 1e-05, "it's \"q\"", ["text", "audio"], {"a": 1}):
        assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value
    sweep = Sweep(fixed={"layers": 1}, grid={"mcc_g": [0.5]})
    assert sweep.overrides(Point("p", {"mcc_g": 0.5}), 3) == ["layers=1", "mcc_g=0.5", "seed=3"]


def test_mean_and_std_hand_computed():
    results = [{"step": 1, "best_valid": 1.0, "test": {"MAE": 1.0, "Corr": 0.5, "samples": 2}},
               {"step": 1, "best_valid": 2.0, "test": {"MAE": 2.0, "Corr": 0.7, "samples": 2}},
               {"step": 1, "best_valid": 3.0, "test": {"MAE": 4.0, "Corr": 0.6, "samples": 2}}]
    stats = aggregate(results)
    # MAE: mean (1 + 2 + 4) / 3 = 7/3; deviations -4/3, -1/3, 5/3: squares 16/9 + 1/9 + 25/9 = 42/9,
    # over n - 1 = 2: 7/3; std sqrt(7/3) = 1.5275
    assert stats["MAE"][0] == pytest.approx(7 / 3) and stats["MAE"][1] == pytest.approx((7 / 3) ** 0.5)
    assert stats["MAE"][1] == pytest.approx(1.5275, abs=1e-4) and stats["MAE"][2] == 3
    assert stats["Corr"][0] == pytest.approx(0.6) and stats["Corr"][1] == pytest.approx(0.1)
    assert stats["best_valid"][:2] == pytest.approx((2.0, 1.0))
    assert "samples" not in stats
    assert aggregate(results[:1])["MAE"] == (1.0, None, 1)  # one seed: no std
    assert metric_order({"best_valid", "zeta", "Corr", "MAE", "train_loss"}) == ["MAE", "Corr", "zeta", "train_loss",
                                                                                "best_valid"]


def test_last_epoch_loss_hand_computed(tmp_path):
    from kebr_model.sweeps import last_epoch_loss

    rows = [{"step": 1, "epoch": 0, "split": "train", "loss": 9.0},
            {"step": 2, "epoch": 1, "split": "train", "loss": 2.0},
            {"step": 2, "epoch": 1, "split": "valid", "loss": 7.0},
            {"step": 3, "epoch": 1, "split": "train", "loss": 3.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert last_epoch_loss(tmp_path / "metrics.jsonl") == 2.5  # (2 + 3) / 2: epoch 1's training steps
    assert last_epoch_loss(tmp_path / "none.jsonl") is None


GRID = """
[sweep]
command = "finetune"
seeds = [1, 2]
plot_metric = "MAE"
[train]
layers = 1
batch_size = 4
checkpoint_every = 0
max_steps = 1
[grid]
mcc_g = [0.0, 0.5]
"""


def sweep_cli(grid: Path, shards: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, ["sweep", "--config", str(grid), "--shards", str(shards), "--out", str(out),
                                     *extra])


def test_a_two_by_two_grid_through_the_cli(tmp_path, encoder):
    """Real runs; one point-seed is finished beforehand (hand-written result) and is not rerun, its
    metrics enter the table; a second sweep reruns nothing; eval --tsne on a sweep's run."""
    shards = make_shards(tmp_path / "mosi", n=10, shard_size=5, seed=3, labelled=True)
    grid, out = grid_file(tmp_path, GRID.replace("[train]", f"[train]\nencoder = {json.dumps(str(encoder))}")), \
        tmp_path / "sweep"
    planted = {"step": 1, "best_valid": 9.0, "test": {"MAE": 3.0, "Corr": 0.25, "Has0_acc_2": 0.5, "samples": 2}}
    (out / "mcc_g=0.5/seed-2").mkdir(parents=True)
    (out / "mcc_g=0.5/seed-2" / RESULT).write_text(json.dumps(planted))
    ran = sweep_cli(grid, shards, out)
    assert ran.exit_code == 0, ran.output[-3000:]
    assert ran.stderr.count(": done (") == 3 and "[4/4] mcc_g=0.5 seed 2: finished before, skipped" in ran.stderr
    assert not (out / "mcc_g=0.5/seed-2/checkpoints").exists()
    for name in ("mcc_g=0/seed-1", "mcc_g=0/seed-2", "mcc_g=0.5/seed-1"):
        assert (out / name / "checkpoints").is_dir() and (out / name / "test_metrics.json").is_file()
        assert (out / name / "plots/losses.png").is_file() and (out / name / "train.log").is_file()
        result = json.loads((out / name / RESULT).read_text())
        assert result["test"] == json.loads((out / name / "test_metrics.json").read_text())
        first = json.loads((out / name / "metrics.jsonl").read_text().splitlines()[0])
        assert first["split"] == "train" and result["train_loss"] == first["loss"]  # one step (max_steps = 1)
    seed1, seed2 = (json.loads((out / f"mcc_g=0/seed-{s}" / RESULT).read_text()) for s in (1, 2))
    assert seed1["test"]["MAE"] != seed2["test"]["MAE"]  # the seed reaches the run
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["point"] for r in rows] == ["mcc_g=0", "mcc_g=0.5"] and [r["seeds"] for r in rows] == ["2", "2"]
    mixed = [json.loads((out / "mcc_g=0.5/seed-1" / RESULT).read_text())["test"]["MAE"], 3.0]
    assert float(rows[1]["MAE_mean"]) == pytest.approx(statistics.mean(mixed))
    assert float(rows[1]["MAE_std"]) == pytest.approx(statistics.stdev(mixed))
    assert float(rows[1]["best_valid_mean"]) > 4.5  # the planted 9.0 is in it
    assert rows[1]["train_loss_std"] == ""  # the planted result has no training loss: one value, no std
    params = {int(r["params"]) for r in rows}
    assert len(params) == 1 and params.pop() == int(rows[0]["trainable_params"])
    assert all(int(r["flops_per_clip"]) > 0 for r in rows)
    assert rows[0]["flops_per_clip"] == rows[1]["flops_per_clip"]  # mcc_g changes no shape
    md = (out / "sweep.md").read_text()
    assert md == ran.stdout and "| mcc_g=0.5 | 0.5 | 2/2 |" in md and " ± " in md and "| FLOPs/clip |" in md
    assert Image.open(out / "sweep.png").size == (700, 400)
    again = sweep_cli(grid, shards, out)
    assert again.exit_code == 0 and again.stderr.count("finished before, skipped") == 4, again.output[-2000:]
    assert again.stdout == ran.stdout
    tsne = CliRunner().invoke(main, ["eval", "--shards", str(shards), "--run", str(out / "mcc_g=0/seed-1"),
                                     "--split", "train", "--tsne", str(tmp_path / "tsne.png")])
    assert tsne.exit_code == 0, tsne.output
    assert Image.open(tmp_path / "tsne.png").format == "PNG"
    few = CliRunner().invoke(main, ["eval", "--shards", str(shards), "--run", str(out / "mcc_g=0/seed-1"),
                                    "--tsne", str(tmp_path / "few.png")])  # the test split has 2 clips
    assert few.exit_code == 2 and "n >= 3 clips" in few.output.splitlines()[-1] and "Traceback" not in few.output


def test_a_sweep_run_equals_the_same_kebr_train_run(tmp_path, encoder):
    """Runs share the sweep's process: the second point's run (after the first) gives the same test
    metrics as the `kebr-train` command line --dry-run prints for it, run on its own."""
    shards = make_shards(tmp_path / "mosi", n=10, shard_size=5, seed=3, labelled=True)
    grid = grid_file(tmp_path, GRID.replace("[train]", f"[train]\nencoder = {json.dumps(str(encoder))}")
                     .replace("seeds = [1, 2]", "seeds = [2]"))
    out = tmp_path / "sweep"
    dry = sweep_cli(grid, shards, out, "--dry-run")
    assert dry.exit_code == 0 and not out.exists()
    command = shlex.split(dry.stdout.splitlines()[1])
    run_dir = str(out / "mcc_g=0.5/seed-2")
    assert command[:2] == ["kebr-train", "finetune"] and run_dir in command
    alone = CliRunner().invoke(main, [tmp_path / "alone" if a == run_dir else a for a in command[1:]])
    assert alone.exit_code == 0, alone.output[-2000:]
    assert sweep_cli(grid, shards, out).exit_code == 0
    swept = json.loads((out / "mcc_g=0.5/seed-2" / RESULT).read_text())
    assert swept["test"] == json.loads((tmp_path / "alone/test_metrics.json").read_text())


def clusters(n_per: int = 20, dim: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (3, dim))
    x = np.concatenate([c + rng.normal(0, 1, (n_per, dim)) for c in centres])
    return x, np.repeat([-2.0, 0.5, 2.5], n_per)


def test_tsne_separates_synthetic_clusters_and_equals_a_direct_call(tmp_path):
    from sklearn.manifold import TSNE

    from kebr_model.evaluation.tsne import FeatureError, embed, plot_tsne

    x, y = clusters()
    maps = plot_tsne({"fused": x, "text": x[:, :5], "audio": x[:, 5:]}, y, tmp_path / "t/tsne.png", seed=7,
                     perplexity=10)
    assert list(maps) == ["text", "audio", "fused"]  # PANELS order
    direct = TSNE(n_components=2, perplexity=10.0, init="pca", random_state=7).fit_transform(x)
    np.testing.assert_allclose(maps["fused"], direct)
    # each point's nearest neighbour in the map is in its own cluster
    d = np.linalg.norm(maps["fused"][:, None] - maps["fused"][None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).all()
    image = Image.open(tmp_path / "t/tsne.png")
    assert image.format == "PNG" and image.size[0] > 2 * image.size[1]  # three panels side by side
    assert embed(x[:4]).shape == (4, 2)  # perplexity capped at (n - 1) / 3 = 1
    with pytest.raises(FeatureError, match="n >= 3"):
        embed(x[:2])
    with pytest.raises(FeatureError, match="rows for"):
        plot_tsne({"text": x[:5]}, y, tmp_path / "bad.png")


def test_tsne_leaves_constant_and_absent_modalities_out_and_says_so_in_the_title(tmp_path):
    """Visual features of shards without a visual stage are zeros for every clip: scikit-learn's t-SNE
    died on them with a segmentation fault (exit 139)."""
    from kebr_model.evaluation.tsne import FeatureError, caption, drawable, embed, plot_tsne

    x, y = clusters()
    features = {"fused": x, "text": x[:, :5], "visual": np.zeros((len(x), 4), np.float32)}
    names, left_out = drawable(features)
    assert names == ["text", "fused"] and left_out == {"audio": "absent", "visual": "constant"}
    assert caption("run, split test", left_out) == "run, split test\nleft out: audio (absent), visual (constant)"
    assert caption("", {}) == ""
    maps = plot_tsne({**features, "audio": np.ones((len(x), 3))}, y, tmp_path / "tsne.png", perplexity=10)
    assert list(maps) == ["text", "fused"] and Image.open(tmp_path / "tsne.png").format == "PNG"
    with pytest.raises(FeatureError, match="varies across clips"):
        plot_tsne({"fused": np.ones((len(x), 2))}, y, tmp_path / "none.png")
    with pytest.raises(FeatureError, match="constant block"):
        embed(np.zeros((5, 3)))


def hand_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over time, written out per clip."""
    return np.stack([x[i][mask[i]].mean(0) for i in range(len(x))])


def test_pooled_features_from_a_fusion_module_and_from_kebrs_tcmf():
    import torch

    from kebr_model.fusions import make_fusion
    from kebr_model.fusions.tcmf import TCMF
    from kebr_model.evaluation.tsne import FeatureError, pooled_features

    torch.manual_seed(0)
    widths = {"text": 4, "audio": 3, "visual": 2}

    def batch(b: int) -> dict:
        out = {"label": torch.linspace(-1, 1, b)}
        for m, d in widths.items():
            out[m] = torch.randn(b, 5, d)
            out[f"{m}_mask"] = torch.arange(5)[None] < torch.randint(1, 6, (b, 1))
        out["attention_mask"] = out["text_mask"].long()
        return out

    batches = [batch(3), batch(2)]
    sf = torch.nn.Sequential(make_fusion("sf", widths))
    found, labels = pooled_features(sf, batches, lambda b: sf[0]({m: b[m] for m in widths},
                                                                 {m: b[f"{m}_mask"] for m in widths}))
    np.testing.assert_allclose(labels, np.concatenate([b["label"].numpy() for b in batches]))
    for m in widths:
        want = np.concatenate([hand_mean(b[m].numpy(), b[f"{m}_mask"].numpy()) for b in batches])
        np.testing.assert_allclose(found[m], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(found["fused"], np.concatenate([found[m] for m in widths], axis=1), atol=1e-6)

    tcmf = TCMF(widths, layers=1).eval()
    fused = []
    found, _ = pooled_features(tcmf, batches, lambda b: fused.append(
        tcmf({m: b[m] for m in widths}, {m: b[f"{m}_mask"] for m in widths}).sequence))
    for m in widths:
        want = np.concatenate([hand_mean(b[m].numpy(), b[f"{m}_mask"].numpy()) for b in batches])
        np.testing.assert_allclose(found[m], want, rtol=1e-6, atol=1e-6)
    want = np.concatenate([hand_mean(f.numpy(), b["text_mask"].numpy()) for f, b in zip(fused, batches)])
    np.testing.assert_allclose(found["fused"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(FeatureError, match="no fusion module"):
        pooled_features(torch.nn.Linear(2, 2), batches, lambda b: None)


def test_the_shipped_grid_files_load(monkeypatch):
    monkeypatch.chdir(ROOT)  # their paths are relative to the repository root, like the README's commands
    files = sorted((ROOT / "pipelines").glob("sweep_*.toml"))
    assert files
    for path in files:
        sweep = load_sweep(path)
        assert len(sweep.points()) * len(sweep.seeds) > 1, path
    fig4 = load_sweep(ROOT / "pipelines/sweep_mcc_g.toml")
    assert [p.name for p in fig4.points()] == ["mcc_g=-0.5", "mcc_g=-0.25", "mcc_g=0", "mcc_g=0.25", "mcc_g=0.5"]


def test_sweep_help_without_torch_and_a_failed_run_is_reported_not_hidden(tmp_path):
    code = ("import sys; sys.modules['torch'] = None; sys.argv[0] = 'kebr-train'; "
            "from kebr_model.cli import main; main()")
    helped = subprocess.run([sys.executable, "-c", code, "sweep", "--help"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert helped.returncode == 0 and "kebr-train sweep" in helped.stdout and "--dry-run" in helped.stdout
    shards = make_shards(tmp_path / "mosi", n=10, shard_size=5, seed=3, labelled=True)
    grid = grid_file(tmp_path, '[sweep]\nseeds = [1]\n[grid]\nencoder = ["/no/such/encoder"]\n')
    out = tmp_path / "sweep"
    dry = CliRunner().invoke(main, ["sweep", "--config", str(grid), "--shards", str(shards), "--out", str(out),
                                    "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith("kebr-train finetune --shards ")
    assert "--set 'encoder=\"/no/such/encoder\"' --set seed=1" in dry.output
    assert not out.exists()
    failed = sweep_cli(grid, shards, out)
    assert failed.exit_code == 2 and "1 of 1 runs failed" in failed.stderr.splitlines()[-1], failed.output[-2000:]
    name = point_name({"encoder": "/no/such/encoder"})
    log = out / name / "seed-1/train.log"
    assert "not a local folder" in failed.stderr and "not a local folder" in log.read_text()
    assert not (out / name / "seed-1" / RESULT).exists()
    from kebr_data.storage.lock import OutputLock

    with OutputLock(out / "_lock", "another sweep"):
        locked = CliRunner().invoke(main, ["sweep", "--config", str(grid), "--shards", str(shards), "--out", str(out)])
    assert locked.exit_code == 2 and "in use by another run" in locked.output and "another sweep" in locked.output
    assert f"| {name} | /no/such/encoder | 0/1 | - | - | - |" in (out / "sweep.md").read_text()


def test_modality_subsets_sweep_and_their_costs_differ(tmp_path, encoder):
    """`"modalities.use"` as a grid key reaches the model: without visual, fewer parameters and FLOPs."""
    from kebr_model.sweeps import COST, point_cost

    shards = make_shards(tmp_path / "mosi", n=10, shard_size=5, seed=3, labelled=True)
    train = f"[train]\nlayers = 1\nbatch_size = 4\nencoder = {json.dumps(str(encoder))}\n"
    sweep = load_sweep(grid_file(tmp_path, train + '[grid]\n"modalities.use" = ["ta", "tav"]\n'))
    points = sweep.points()
    assert [p.name for p in points] == ["modalities.use=ta", "modalities.use=tav"]
    costs = []
    for point in points:
        (tmp_path / point.name).mkdir()
        costs.append(point_cost(sweep, point, shards, tmp_path / point.name))
        assert json.loads((tmp_path / point.name / COST).read_text()) == costs[-1]
    ta, tav = costs
    assert ta["params"] < tav["params"] and ta["flops_per_clip"] < tav["flops_per_clip"]
    assert ta["params"] == ta["trainable_params"] and ta["flops_batch_clips"] == 2  # the 2 test clips


def test_any_exception_in_a_run_is_that_runs_failure_and_a_failed_count_is_not(tmp_path, monkeypatch):
    """A bug in a fusion or the trainer (KeyError, AssertionError, ...) fails its run, not the sweep; a cost
    count that fails is logged while the run trains."""
    from kebr_model import sweeps
    from kebr_model.training import run

    def broken(*args, **kwargs):
        raise KeyError("fusion.width")

    monkeypatch.setattr(run, "train_run", broken)
    result, what = sweeps.run_point(Sweep(), Point("p", {}), 1, tmp_path / "shards", tmp_path / "run")
    assert result is None and what.startswith("failed (KeyError")
    assert "KeyError" in (tmp_path / "run/train.log").read_text()  # with its traceback

    def trains(cfg, shards, run_dir, init, resume, before_fit=None, progress=True):
        before_fit(object())  # a trainer trainer_cost cannot count
        return {"step": 3, "best_valid": 0.5}

    monkeypatch.setattr(run, "train_run", trains)
    result, what = sweeps.run_point(Sweep(), Point("q", {}), 1, tmp_path / "shards", tmp_path / "run2",
                                   cost=tmp_path / "run2/cost.json")
    assert what == "done" and result["step"] == 3 and not (tmp_path / "run2/cost.json").exists()
    assert "FLOP count failed" in (tmp_path / "run2/train.log").read_text()
