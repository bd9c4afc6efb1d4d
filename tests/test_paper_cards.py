"""The paper cards (docs/systems/) against the ready system configs and the statements table."""

from __future__ import annotations

import dataclasses

import pytest

from kebr_model import paper_cards
from kebr_model.paper_cards import Row


def test_every_config_matches_its_card_and_every_page_is_current():
    assert paper_cards.check() == []


def test_every_system_config_has_a_card():
    cards = paper_cards.load_statements()
    assert {paper_cards.card_name(c) for c in paper_cards.system_configs()} <= set(cards)


def test_a_config_value_that_leaves_the_paper_is_reported():
    card = paper_cards.load_statements()["kebr"]
    drifted = dataclasses.replace(card, rows=card.rows + (
        Row(component="epochs", paper="Epoch 7", expect={"epochs": 7, "modalities.use": "ta"}, verdict="same"),))
    problems = paper_cards.drift(drifted)
    assert any("epochs: card says 7" in p for p in problems)
    assert any("modalities.use: card says 'ta', config has 'tav'" in p for p in problems)


def test_a_verdict_other_than_same_needs_a_reason(tmp_path):
    path = tmp_path / "statements.toml"
    path.write_text('[[group.g]]\ncomponent = "c"\npaper = "p"\nverdict = "this project\'s choice"\n'
                    '[system.kebr]\nconfig = "kebr.toml"\ntitle = "t"\npaper = "p"\nrows = ["g"]\n')
    with pytest.raises(ValueError, match="needs a reason"):
        paper_cards.load_statements(path)


def test_an_unknown_config_key_in_a_card_is_an_error():
    card = paper_cards.load_statements()["kebr"]
    bad = dataclasses.replace(card, rows=(Row(component="c", paper="p", expect={"no_such_key": 1}, verdict="same"),))
    with pytest.raises(KeyError, match="no_such_key"):
        paper_cards.drift(bad)
