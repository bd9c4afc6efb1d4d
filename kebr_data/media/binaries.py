"""Finding the external programs the stages run (ffmpeg, OpenFace's FeatureExtraction)."""

from __future__ import annotations

import os
import shutil

from ..errors import PrerequisiteError


def locate(configured: str, config_key: str, env_var: str, default: str, hint: str = "") -> str | None:
    """The configured path, else `$env_var`, else `default` on PATH (None when it is not there).

    A path given by the config or the environment must exist: a typo fails loudly instead of
    silently falling back to another binary.
    """
    for source, candidate in ((config_key, configured), (f"${env_var}", os.environ.get(env_var, ""))):
        if candidate:
            path = shutil.which(candidate)
            if path is None:
                raise PrerequisiteError(f"{candidate!r} from {source} does not exist or is not executable. "
                                        f"{hint}".strip())
            return path
    return shutil.which(default)
