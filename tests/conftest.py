"""Shared fixtures: the real ffmpeg and the bundled demo clips."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import DEMO

from kebr_data.media.ffmpeg import find_ffmpeg


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return find_ffmpeg()


@pytest.fixture(scope="session")
def demo_src() -> Path:
    assert DEMO.is_dir(), "demo clips missing: run python demo/make_demo.py"
    return DEMO


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """The path of a tiny random BERT folder with the real MiniLM tokenizer (see helpers.tiny_text_encoder)."""
    pytest.importorskip("transformers")
    from helpers import tiny_text_encoder

    return str(tiny_text_encoder(tmp_path_factory.mktemp("tiny-bert")))
