"""`run.json`: an output folder's configuration and the history of the commands run on it.

The saved configuration is the folder's truth: a later `extract` (resume), `retry-failed`, `mask`,
`status` or `report` starts from it, and `--config`/`--set` change it only where given.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Config
from ..storage.atomic import atomic_write_json, read_control_file
from ..storage.layout import OutputDir

HISTORY_KEPT = 200


def read(out: OutputDir) -> dict[str, Any]:
    """The folder's run record ({} when absent or unreadable)."""
    try:
        data = json.loads(read_control_file(out.run_json).decode("utf-8"))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):  # a symlink or FIFO is a ValueError too
        return {}
    return data if isinstance(data, dict) else {}


def saved_config(out: OutputDir) -> Config | None:
    """The configuration saved by the folder's last command, None for a new folder."""
    cfg = read(out).get("config")
    return cfg if isinstance(cfg, dict) else None


def record(out: OutputDir, cfg: Config, command: str, stages: list[str], src: Path | None,
           changed: tuple[str, ...] = (), tools: dict[str, Any] | None = None) -> None:
    """Save `cfg` as the folder's configuration and append this command to its history; `tools` replaces
    the pinned tools (`kebr_data.pipeline.pins`), which are kept when it is None."""
    old = read(out)
    history = [h for h in old.get("history", []) if isinstance(h, dict)][-(HISTORY_KEPT - 1):]
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    history.append({"command": command, "stages": stages, "changed": list(changed), "at": now,
                    "toolkit_version": __version__})
    atomic_write_json(out.run_json, {
        "toolkit_version": __version__, "command": command, "stages": stages,
        "src": str(src.resolve()) if src else old.get("src"), "config": cfg,
        "python": sys.version.split()[0], "platform": platform.platform(), "started_at": now,
        "tools": old.get("tools", {}) if tools is None else tools, "history": history})
