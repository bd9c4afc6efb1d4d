"""Finding the external programs the stages run (ffmpeg, OpenFace's FeatureExtraction)."""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import PrerequisiteError
from ..storage.atomic import file_digest


@dataclass(frozen=True)
class Tool:
    """An external program as an output folder pins it (run.json's `tools`): its bytes decide a stage's
    output although its path is a runtime setting, outside the config hash."""

    path: str
    #: how it was found: the config key, `$ENV_VAR`, `PATH`, or the wheel that bundles it
    kind: str
    version: str
    #: sha256 (16 hex) of the binary (and, for OpenFace, its model files): what two runs must share
    sha256: str
    #: the config key that selects it (named by the refusal)
    setting: str

    def describe(self) -> str:
        version = f"{self.version}; " if self.version else ""
        return f"{self.path} (from {self.kind}; {version}sha256 {self.sha256})"


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


def found_by(configured: str, config_key: str, env_var: str) -> str:
    """Where `locate` took the binary from: the config key, `$env_var`, or `PATH`."""
    return config_key if configured else f"${env_var}" if os.environ.get(env_var) else "PATH"


def binary_sha256(binary: str) -> str:
    """sha256 (16 hex) of the file `binary` resolves to, cached while its size and mtime stay the same."""
    path = Path(binary).resolve()
    st = path.stat()
    return _sha256(str(path), (st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=8)
def _sha256(path: str, stamp: tuple[int, int]) -> str:
    return file_digest(Path(path))[1][:16]
