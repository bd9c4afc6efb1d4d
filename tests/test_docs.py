"""The README and the docs site: a short README whose test command is CI's, links that resolve, a strict
MkDocs build, the settings reference generated from the settings dataclasses, and a dependencies page
that names every package pyproject.toml installs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

from helpers import ROOT, readme_commands

from kebr_data.config import setting
from kebr_model import settings_doc

README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def test_the_readme_is_short_and_its_test_command_is_what_ci_runs():
    assert len(README.read_text().splitlines()) <= 300
    commands = readme_commands("# 2.")
    assert commands[-1] == "python -m pytest -q"
    assert any("--index-url https://download.pytorch.org/whl/cpu" in c for c in commands)
    assert all(len(c) < 130 for c in commands)  # one readable line each (the CPU torch line names two indexes)
    assert readme_commands("# 2.", ROOT / ".ci" / "run") == commands


def test_every_relative_link_of_the_readme_names_a_file():
    targets = [t for t in LINK.findall(README.read_text()) if "://" not in t]
    assert targets and [t for t in targets if not (ROOT / t).exists()] == []


def _build(config, site):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_docs_site_builds_strictly(tmp_path):
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "settings" / "index.html").is_file()
    # a link to a repository file outside docs/ is shown as its path, not left dangling
    page = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    assert "bench/RESULTS.md" in page and 'href="../../bench/RESULTS.md"' not in page


def test_a_broken_link_fails_the_strict_build(tmp_path):
    docs = tmp_path / "docs"
    (docs / "_hooks").mkdir(parents=True)
    (docs / "_hooks" / "repo_links.py").write_text((ROOT / "docs" / "_hooks" / "repo_links.py").read_text())
    (docs / "index.md").write_text("# Home\n\n[results](../bench/RESULTS.md)\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text("site_name: t\nhooks:\n  - docs/_hooks/repo_links.py\nexclude_docs: _hooks/\n")
    done = _build(config, tmp_path / "site")  # no bench/ beside this mkdocs.yml
    assert done.returncode == 1 and "index.md links to ../bench/RESULTS.md, which is not a file" in done.stderr


def test_the_settings_page_is_the_generated_one():
    assert (ROOT / "docs" / "settings.md").read_text() == settings_doc.render(), \
        "run python -m kebr_model.settings_doc"


@dataclass
class ToySettings:
    """A toy section."""

    mode: Literal["fast", "exact"] = setting("fast", "how | to run")
    size: int = setting(4, "items per batch", min=1, max=8)
    timeout_s: float = setting(1.5, "per item", min=0.0, runtime=True)
    names: list[str] = setting(["a"], "which ones")


class ToyEngine:
    Settings = ToySettings


@dataclass
class NoOptions:
    """A plugin without options."""


class PlainEngine:
    Settings = NoOptions


TOY_REGISTRY = {"toy": ToyEngine(), "plain": PlainEngine(), "bare": object()}


def test_a_settings_table_gives_type_default_range_and_help():
    rows = settings_doc.table(ToySettings)
    assert rows[2] == '| `mode` | "fast" \\| "exact" | `"fast"` | how \\| to run |'
    assert rows[3] == "| `size` | int | `4` | items per batch; in [1, 8] |"
    assert rows[4] == "| `timeout_s` | float | `1.5` | per item; ≥ 0.0; runtime: not part of the config hash |"
    assert rows[5] == '| `names` | list[str] | `["a"]` | which ones |'


def test_a_registered_plugin_with_settings_gets_its_table():
    found = dict(settings_doc.plugin_settings([("toy.engine", f"{__name__}:TOY_REGISTRY")]))
    assert found == {'toy.engine = "toy"': ToySettings}  # no table for a plugin without options


def test_trainer_sections_come_from_the_config_module_whether_fixed_or_composed():
    fixed = SimpleNamespace(SECTIONS={"train": ToySettings})
    composed = SimpleNamespace(SECTIONS={}, sections=lambda: {"train": ToySettings, "modalities": NoOptions})
    assert settings_doc.trainer_sections(fixed) == {"train": ToySettings}
    assert list(settings_doc.trainer_sections(composed)) == ["train", "modalities"]


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)


def test_the_dependencies_page_names_every_dependency_and_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    page = (ROOT / "docs" / "dependencies.md").read_text()
    names = {_name(r) for r in project["dependencies"]} | {
        _name(r) for reqs in project["optional-dependencies"].values() for r in reqs if not r.startswith("kebr-toolkit")}
    assert sorted(n for n in names if f"`{n}`" not in page) == []
    assert sorted(e for e in project["optional-dependencies"] if f"| `{e}` |" not in page) == []
    assert "joblib" in page and "ffmpeg-python" in page


def test_the_readme_reading_outputs_code_runs(tmp_path, monkeypatch):
    """The README's "Reading outputs" blocks, as written, on a small output folder named features/."""
    from shard_factory import make_shards

    section = README.read_text().split("## Reading outputs", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    make_shards(tmp_path / "features", n=8, shard_size=8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), scope)
    assert scope["table"].num_rows == len(scope["df"]) == len(scope["ds"]) == 8


def test_the_generator_without_torch_says_what_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from kebr_model import settings_doc; raise SystemExit(settings_doc.main(['--check']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "the settings page needs every registry importable (torch is missing): pip install -e '.[train]'"]
