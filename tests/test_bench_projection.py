"""bench/pipeline.py --projection: VoxCeleb2 on one node from the measured sections, every input's source named."""

from __future__ import annotations

import re
import sys

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import pipeline  # noqa: E402


def test_every_input_is_marked_measured_or_assumed_and_each_gpu_class_cites_its_figure():
    lines = pipeline.levers_projection(*pipeline.recorded_per_core_hour())
    inputs = lines[lines.index("| input | value | source |") + 2:]
    inputs = inputs[:inputs.index("")]
    assert len(inputs) >= 10 and all("**M" in row or "**A**" in row for row in inputs)
    gpu_rows = [row for row in inputs if "s per 30-s window of speech" in row]
    assert [re.search(r"on an (.+?):", row).group(1) for row in gpu_rows] == ["RTX 2080 Ti", "A100 80GB", "H100 SXM"]
    assert all("https://" in row for row in gpu_rows)
    assert "M on CPU" in next(row for row in inputs if row.startswith("| large-v3-turbo: a 7.8-s clip"))
    header = next(i for i, row in enumerate(lines) if row.startswith("| levers on |"))
    table = lines[header + 2:header + 12]
    assert table[0].startswith("| none (today) |") and table[-1].startswith("| all four |")
    for row in table:  # cores h, then GPU h, node h, nodes for each of the three GPU classes
        cells = [c.strip("* ") for c in row.strip("|").split("|")[1:]]
        assert len(cells) == 10 and all(float(c.replace(",", "")) > 0 for c in cells)


def test_a_missing_section_is_one_line_naming_the_script_to_run(tmp_path, monkeypatch, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text(re.sub(r"<!-- asr-turbo-shape -->.*?<!-- /asr-turbo-shape -->\n", "",
                              pipeline.RESULTS.read_text(), flags=re.S))
    monkeypatch.setattr(pipeline, "RESULTS", results)
    with pytest.raises(SystemExit) as exc:
        pipeline.levers_projection(*pipeline.recorded_per_core_hour())
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "bench/RESULTS.md has no asr-turbo-shape figures for the projection: run python bench/asr_turbo_shape.py first"]


GPU_SECTION = """<!-- gpu -->
## GPU: batched, packed ASR and the encoder stages

_`bench/gpu.py`, 2026-12-07_

NVIDIA H100 80GB HBM3, faster-whisper float16, beam 5, word timestamps, English forced.

| model | clip | windows | batch | windows/s | clips/s | tokens per clip | memory in use (GiB) |
|---|---|---|---:|---:|---:|---:|---:|
| large-v3-turbo shape, random | 4 s | packed 30 s | 32 | 30.0 | 180.0 | 12.0 | 3.00 |
| large-v3-turbo shape, random | 7.8 s | one clip a window | 1 | 10.0 | 10.0 | 23.0 | 3.00 |
| large-v3-turbo shape, random | 7.8 s | one clip a window | 32 | 40.0 | 40.0 | 23.0 | 3.00 |
| large-v3-turbo shape, random | 7.8 s | packed 30 s | 1 | 8.0 | 24.0 | 23.3 | 3.00 |
| large-v3-turbo shape, random | 7.8 s | packed 30 s | 32 | 30.0 | 90.0 | 23.3 | 3.00 |
<!-- /gpu -->
"""


def test_a_gpu_that_bench_gpu_measured_is_a_measured_class_from_its_7_8_s_rows(tmp_path, monkeypatch):
    results = tmp_path / "RESULTS.md"
    results.write_text(pipeline.RESULTS.read_text() + "\n" + GPU_SECTION)
    monkeypatch.setattr(pipeline, "RESULTS", results)
    lines = pipeline.levers_projection(*pipeline.recorded_per_core_hour())
    assert any(row.startswith("| large-v3-turbo shape fp16 on an NVIDIA H100 80GB HBM3: GPU-s per 7.8-s clip |")
               and "**M** gpu section (bench/gpu.py), batch 32 and 1" in row for row in lines)
    header = next(row for row in lines if row.startswith("| levers on |"))
    assert header.endswith("| measured GPU h | measured node h | measured nodes |")
    rows = {row.split("|")[1].strip(): [c.strip("* ") for c in row.strip("|").split("|")] for row in lines
            if row.startswith(("| none (today) |", "| packing |", "| GPU batching |", "| all four |"))}
    clips_h = pipeline.VOXCELEB2_CLIPS / 3600  # GPU h = clips × GPU-s per clip: 1 / clips/s of the matching row
    assert float(rows["none (today)"][-3]) == pytest.approx(clips_h / 10.0, abs=0.05)
    assert float(rows["packing"][-3]) == pytest.approx(clips_h / 24.0, abs=0.05)
    assert float(rows["GPU batching"][-3]) == pytest.approx(clips_h / 40.0, abs=0.05)
    assert float(rows["all four"][-3]) == pytest.approx(clips_h / 90.0, abs=0.05)
