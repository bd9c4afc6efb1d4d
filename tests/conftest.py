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
