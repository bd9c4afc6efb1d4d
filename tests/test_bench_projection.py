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
