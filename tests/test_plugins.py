"""Stage plugins through real `kebr_data.stages` entry points (a dist-info folder on PYTHONPATH, read by
importlib.metadata in a `kebr-data` subprocess): a broken one is reported once and left out, and one
named like a built-in is refused instead of replacing it."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import ROOT, run_cli
from shard_factory import make_shards


def plugin_site(site: Path, dist: str, module: str, code: str, entry: str) -> Path:
    """Install `module` (source `code`) as distribution `dist` with one kebr_data.stages entry point."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(code)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[kebr_data.stages]\n{entry}\n")
    return site


def with_site(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_a_broken_plugin_is_reported_once_and_status_still_works(tmp_path):
    site = plugin_site(tmp_path / "site", "kebr-broken", "kebr_broken_plugin",
                       "raise ImportError('needs libfoo')\n", "broken = kebr_broken_plugin:Stage")
    out = make_shards(tmp_path / "f", n=3, shard_size=2)
    done = run_cli("status", "--out", str(out), env=with_site(site))
    assert done.returncode == 0, done.stderr
    assert "3 clips in 2 shard(s)" in done.stdout
    assert done.stderr.count("cannot be loaded") == 1, done.stderr
    assert "broken = kebr_broken_plugin:Stage (from kebr-broken 0.1)" in done.stderr
    assert "needs libfoo" in done.stderr and "Traceback" not in done.stderr


def test_a_plugin_named_like_a_built_in_stage_is_refused_naming_both(tmp_path):
    code = "from kebr_data.stages.audio import AudioStage\n\nclass MyAudio(AudioStage):\n    version = '99'\n"
    site = plugin_site(tmp_path / "site", "kebr-dup", "kebr_dup_plugin", code, "myaudio = kebr_dup_plugin:MyAudio")
    out = make_shards(tmp_path / "f", n=3, shard_size=2)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    ran = run_cli("extract", "--out", str(out), "--stages", "audio", "--workers", "1", env=with_site(site))
    assert ran.returncode == 2, ran.stderr
    assert "built-in kebr_data.stages.audio:AudioStage" in ran.stderr
    assert "entry point myaudio = kebr_dup_plugin:MyAudio (from kebr-dup 0.1)" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert run_cli("status", "--out", str(out), env=with_site(site)).returncode == 0


def test_register_at_run_time_refuses_a_taken_name():
    import pytest

    from kebr_data import stages
    from kebr_data.stages.audio import AudioStage

    class Shadow(AudioStage):
        pass

    with pytest.raises(stages.DuplicateStage, match="by built-in kebr_data.stages.audio:AudioStage and by "):
        stages.register(Shadow)
    assert stages.registry()["audio"] is AudioStage and stages.register(AudioStage) is AudioStage
