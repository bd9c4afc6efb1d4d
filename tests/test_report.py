"""`kebr-data report` and the trainer's plots: what is on the page and in the PNGs."""

import csv
import json

import matplotlib
import matplotlib.image
import numpy as np
import pytest
from helpers import run_cli
from shard_factory import make_shards

from kebr_data.pipeline.summaries import StageSummary
from kebr_data.report import (build_report, hist_figure, integer_bins, labels_figure, plan_labels,
                              throughput_figure)
from kebr_data.storage.store import Store
from kebr_model.data import open_reader
from kebr_model.evaluation.plots import plot_run, series_figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

C0, C1 = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # matplotlib's first two line colours (c_a, c_v)


def _pixels(png, rgb) -> int:
    img = (matplotlib.image.imread(png)[..., :3] * 255).round()
    return int((np.abs(img - np.array(rgb)).max(axis=-1) <= 8).sum())


def test_integer_bins_hold_whole_numbers():
    assert integer_bins([8, 9, 10, 10]) == [7.5, 8.5, 9.5, 10.5]
    wide = integer_bins(list(range(100)), max_bins=40)  # 100 numbers, at most 40 bins: 3 numbers per bin
    assert len(wide) == 35 and wide[0] == -0.5 and wide[1] == 2.5 and wide[-1] == 101.5
    assert all(float(e - 0.5).is_integer() for e in wide)


def test_clip_counts_get_whole_number_ticks():
    fig = hist_figure(plt, [3.3, 3.4, 3.4, 4.1], "Clip durations", "seconds")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks)  # no 0.5-clip ticks
    plt.close(fig)


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """An mmsa folder whose media are empty files: the audio stage fails every clip, mask uses the given text."""
    src = tmp_path_factory.mktemp("mosi") / "MOSI"
    (src / "Raw/vid").mkdir(parents=True)
    with open(src / "label.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        for k, text in enumerate(["I love this movie", "what a terrible day", "we sat at the table"]):
            (src / f"Raw/vid/{k}.mp4").write_bytes(b"")
            w.writerow(["vid", k, text, "0.5", "Neutral", "train"])
    out = src.parent / "features"
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index,audio", "--max-failed", "1",
            check=True)
    run_cli("mask", "--out", str(out), check=True)
    return out


def test_report_summary_matches_status(masked):
    run_cli("report", "--out", str(masked), check=True)
    page = (masked / "report/index.html").read_text()
    status = run_cli("status", "--out", str(masked), check=True).stdout
    assert "<th>top reasons</th>" in page and "failed/empty_file 3" in page and "failed/empty_file 3" in status
    line = "mask: sentiment word in 66.7% of 3 masked clips"
    assert line in page and line in status
    assert "<figcaption>" not in page  # each PNG carries its own title
    assert "alt='Throughput per stage'" in page and "per worker" not in page
    assert (masked / "report/words.png").exists()
    assert "alt='Dataset labels'" in page and (masked / "report/labels.png").exists()  # MOSI's labels, one panel


def test_throughput_is_on_a_log_axis():
    """Issue #27 point 10: on a linear axis mask's 43 clips/s hid every stage under 1 clip/s."""
    fig = throughput_figure(plt, [StageSummary("mask", 1, rows=430, wall_s=10.0),
                                  StageSummary("visual", 1, rows=3, wall_s=10.0), StageSummary("asr", 1)])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_yticklabels()] == ["mask", "visual"]
    assert ax.get_xlim()[0] < 0.3  # the slowest bar is visible
    plt.close(fig)
    assert throughput_figure(plt, [StageSummary("asr", 1)]) is None


def test_a_labelled_sims_folder_gets_its_label_histograms(tmp_path):
    """Issue #27 point 10: the dataset's labels are plotted, and CH-SIMS' T/A/V labels beside M."""
    src = tmp_path / "SIMS"
    (src / "Raw/vid").mkdir(parents=True)
    labels = [(-0.8, -1.0, -0.6, -0.8), (0.2, 0.2, 0.0, 0.4), (1.0, 1.0, 0.8, 1.0), (0.0, -0.2, 0.2, 0.0)]
    with open(src / "label.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"])
        for k, row in enumerate(labels):
            (src / f"Raw/vid/{k}.mp4").write_bytes(b"")
            w.writerow(["vid", k, "你好", *row, "Neutral", "train"])
    out = tmp_path / "features"
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index", check=True)
    found = plan_labels(Store(out))
    assert list(found) == ["label", "label_t", "label_a", "label_v"]
    for i, column in enumerate(found):
        assert sorted(found[column]) == pytest.approx(sorted(r[i] for r in labels))
    fig = labels_figure(plt, found)
    assert [ax.get_title() for ax in fig.axes] == [f"{m}: 4 clips" for m in ("multimodal (M)", "text (T)", "audio (A)",
                                                                             "visual (V)")]
    assert [sum(p.get_height() for p in ax.patches) for ax in fig.axes] == [4] * 4
    plt.close(fig)
    page = build_report(out).read_text()
    assert "alt='Dataset labels'" in page and (out / "report/labels.png").exists()


def test_single_step_losses_are_drawn():
    fig = series_figure(plt, [("train loss", [1], [0.7]), ("valid loss", [1], [0.9])], "loss terms", "loss")
    for line in fig.axes[0].lines:
        assert len(line.get_xdata()) == 1 and line.get_marker() not in (None, "None", "", " ")
    plt.close(fig)


def test_no_visual_cosine_without_visual_frames(tmp_path):
    shards = make_shards(tmp_path / "shards", n=4, shard_size=4, visual=False)
    assert open_reader(shards).frame_modalities() == {"audio"}
    assert open_reader(make_shards(tmp_path / "both", n=4, shard_size=4)).frame_modalities() == {"audio", "visual"}
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "loss": 1.0, "l1": 0.9, "mcc": 0.1,
                                                   "c_a": 0.2, "c_v": 0.3}) + "\n")
    paths = plot_run(run, open_reader(shards).frame_modalities())
    cosines = run / "plots/cosines.png"
    assert cosines in paths and _pixels(cosines, C0) > 0 and _pixels(cosines, C1) == 0
    plot_run(run)  # both modalities: c_v is drawn in the second colour
    assert _pixels(cosines, C1) > 0
