"""Both command lines guide a newcomer: an unknown command gets "No such command ... Did you mean",
and every command's summary in `--help` is a whole sentence at any terminal width (issue #27)."""

import pytest
from click.testing import CliRunner

from kebr_data.cli import main as data_main
from kebr_model.cli import main as train_main


def invoke(main, *args, columns: int = 80):
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("typo, meant", [("evl", "'eval'"), ("prtrain", "'pretrain'"), ("analyze", "'analyse'")])
def test_an_unknown_train_command_is_no_such_command_with_a_suggestion(typo, meant):
    result = invoke(train_main, typo, "--shards", "x")
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert f"No such command '{typo}'." in last and "Did you mean" in last and meant in last, last


def test_options_without_a_command_still_run_train():
    result = invoke(train_main, "--shards", "x")
    assert result.exit_code == 2 and "Missing option '--out'" in result.output
    assert " train --help" in result.output


def summaries(help_text: str) -> dict[str, str]:
    """The Commands section of a group's --help: each command's summary, wrapped lines joined."""
    found: dict[str, str] = {}
    name = None
    for line in help_text.split("Commands:\n", 1)[1].splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name, _, text = line.strip().partition(" ")
            found[name] = text.strip()
        elif line.strip() and name:
            found[name] += " " + line.strip()
    return found


@pytest.mark.parametrize("main", [data_main, train_main], ids=["kebr-data", "kebr-train"])
@pytest.mark.parametrize("columns", [60, 80, 200])
def test_every_command_summary_is_a_whole_sentence(main, columns):
    result = invoke(main, "--help", columns=columns)
    assert result.exit_code == 0, result.output
    found = summaries(result.output)
    assert set(found) == set(main.commands)
    for name, text in found.items():
        assert text.endswith(".") and not text.endswith("..."), (name, text)
        assert not text.endswith(("Eq.", "e.g.", "i.e.")), (name, text)


def test_kebr_train_defaults_lists_every_train_and_modalities_key_as_toml():
    import dataclasses
    import tomllib

    from kebr_data import config
    from kebr_model.config import sections

    result = invoke(train_main, "defaults")
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.output) == config.defaults(sections())  # every key, its default, valid TOML
    assert result.output.startswith("# kebr-train configuration")
    assert "mult_d = 32" in result.output  # a fusion's own settings are [train] keys
    for name, cls in sections().items():
        for f in dataclasses.fields(cls):
            line = next(x for x in result.output.splitlines() if x.startswith(f"{f.name} = "))
            assert line.endswith(f"# {f.metadata['help']}"), line


def test_a_key_typo_names_the_defaults_command_of_its_tool(tmp_path):
    from kebr_data import config
    from kebr_data.errors import ConfigError

    result = invoke(train_main, "pretrain", "--shards", tmp_path, "--out", tmp_path / "run", "--set", "bach_size=4")
    assert result.exit_code == 2 and "did you mean train.batch_size?" in result.output
    assert "`kebr-train defaults` lists every key" in result.output and "kebr-data defaults" not in result.output
    grid = tmp_path / "train.toml"
    grid.write_text("[modalities]\nvisaul = 'visual'\n")
    result = invoke(train_main, "pretrain", "--shards", tmp_path, "--out", tmp_path / "run", "--config", grid)
    assert result.exit_code == 2 and "`kebr-train defaults` lists every key" in result.output
    with pytest.raises(ConfigError, match="did you mean audio.sample_rate.*`kebr-data defaults` lists every key"):
        config.load(overrides=["audio.sampel_rate=1"])
