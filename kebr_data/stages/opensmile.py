"""The opensmile stage: eGeMAPSv02 or ComParE_2016 low-level descriptors (or functionals) of the
audio stage's FLAC, computed by the `opensmile` package.

Frame size and step: the package's feature sets frame the signal twice (60 ms for pitch and voice
quality, 20 ms for energy and spectra), both with a 10 ms step, and `opensmile.Smile` takes no
option for either. A non-zero `opensmile.frame_s` / `opensmile.step_s` therefore writes a derived
copy of the package's config folder in which every `cFramer` section's `frameSize` / `frameStep`
line is replaced (nothing else changes), and the stage runs
`opensmile.Smile(feature_set=<derived .conf>)`. The copy is written into the shard's temp folder
and removed when the shard ends. With 0 / 0 the package's own feature set runs unchanged.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ..deps import missing
from ..errors import ClipError, ClipSkipped, EnvironmentFailure, full_disk
from ..media.flac import decode_flac
from ..schema import ANY_WIDTH, COMMON, frame_field
from ..settings import setting
from .base import AudioClipStage, ClipInput, ShardContext

#: (feature set, level) -> width, as `len(opensmile.Smile(...).feature_names)` (checked by the tests)
WIDTHS = {("eGeMAPSv02", "lld"): 25, ("eGeMAPSv02", "functionals"): 88,
          ("ComParE_2016", "lld"): 65, ("ComParE_2016", "functionals"): 6373}
CONF = {"eGeMAPSv02": "egemaps/v02/eGeMAPSv02.conf", "ComParE_2016": "compare/ComParE_2016.conf"}
LEVEL = {"lld": "lld", "functionals": "func"}
_FRAMER = re.compile(r"^\[[^\]]+:cFramer\]\s*$")


def opensmile_schema(width: int) -> pa.Schema:
    return pa.schema(COMMON + [
        pa.field("feature_set", pa.string()),
        pa.field("frame_rate", pa.float32()),
        pa.field("num_frames", pa.int32()),
        frame_field("features", width),
    ])


def derive_config(dest: Path, frame_s: float, step_s: float) -> Path:
    """Copy the package's config folder to `dest`, with every cFramer's frameSize/frameStep replaced
    (0 keeps the package's value). Returns `dest`."""
    import opensmile

    shutil.copytree(Path(opensmile.__file__).parent / "core" / "config", dest)
    for inc in dest.rglob("*.inc"):
        lines, inside, changed = inc.read_text().splitlines(keepends=True), False, False
        for i, line in enumerate(lines):
            if line.startswith("["):
                inside = bool(_FRAMER.match(line))
            elif inside and frame_s and re.match(r"frameSize\s*=", line):
                lines[i], changed = f"frameSize = {frame_s:g}\n", True
            elif inside and step_s and re.match(r"frameStep\s*=", line):
                lines[i], changed = f"frameStep = {step_s:g}\n", True
        if changed:
            inc.write_text("".join(lines))
    return dest


def smile(feature_set: str, level: str, frame_s: float, step_s: float, config_dir: Path) -> Any:
    """An `opensmile.Smile` for the settings. A derived config folder is written to `config_dir`, which must
    outlive the Smile (openSMILE reads the config at every call); a copy that fails on a full disk is an
    EnvironmentFailure."""
    import opensmile

    if not frame_s and not step_s:
        return opensmile.Smile(opensmile.FeatureSet[feature_set], opensmile.FeatureLevel(LEVEL[level]))
    try:
        root = derive_config(config_dir, frame_s, step_s)
    except OSError as exc:
        problem = full_disk(config_dir.parent)
        if problem is None:
            raise
        raise EnvironmentFailure(f"opensmile could not copy its config folder: {problem}") from exc
    return opensmile.Smile(str(root / CONF[feature_set]), LEVEL[level])


@dataclass
class OpensmileSettings:
    """The opensmile stage: eGeMAPSv02 / ComParE_2016 descriptors from the opensmile package."""

    feature_set: Literal["eGeMAPSv02", "ComParE_2016"] = setting("eGeMAPSv02", "the package's feature set")
    level: Literal["lld", "functionals"] = setting("lld", "lld: frames x descriptors; functionals: one row per clip")
    frame_s: float = setting(0.06, "every framer's window in seconds (0 = the package's own: 60 ms pitch, 20 ms "
                                   "spectra)", min=0.0, max=1.0)
    step_s: float = setting(0.02, "every framer's step in seconds (0 = the package's 10 ms)", min=0.0, max=1.0)


class OpensmileStage(AudioClipStage):
    """frames × 25 (eGeMAPSv02) or × 65 (ComParE_2016) float32 per clip, or 1 × 88 / 6373 functionals."""

    name = "opensmile"
    version = "1"
    schema = opensmile_schema(ANY_WIDTH)
    hdf5_attributes = ("feature_set",)
    Settings = OpensmileSettings
    settings: OpensmileSettings
    extract_default = False

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.schema = opensmile_schema(WIDTHS[self.settings.feature_set, self.settings.level])
        self._smile: Any = None

    def run_shard(self, ctx: ShardContext) -> pa.Table:
        """The clips with one Smile per shard; a derived config folder lives in the shard's temp folder and is
        removed when the shard ends, however it ends (once, a 392 KB copy per worker stayed in TMPDIR)."""
        config_dir = ctx.temp() / "opensmile-config"
        try:
            s = self.settings
            self._smile = smile(s.feature_set, s.level, s.frame_s, s.step_s, config_dir)
            return super().run_shard(ctx)
        finally:
            self._smile = None
            shutil.rmtree(config_dir, ignore_errors=True)

    def check(self) -> list[str]:
        problem = missing("opensmile", "encoders", "the opensmile stage")
        return [problem] if problem else []

    def versions(self) -> dict[str, str]:
        import opensmile

        return {"opensmile": opensmile.__version__}

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        y, sr = decode_flac(clip.upstream["audio"]["flac"])
        window = self.settings.frame_s or 0.06
        if len(y) < window * sr:
            raise ClipSkipped("too_short", f"{len(y) / sr:.3f} s, shorter than one {window:g} s frame")
        frames = self._smile.process_signal(y, sr)
        features = np.ascontiguousarray(frames.to_numpy(np.float32))
        if not np.isfinite(features).all():
            raise ClipError("non_finite", "openSMILE returned NaN or infinity")
        rate = 0.0 if self.settings.level == "functionals" else 1.0 / (self.settings.step_s or 0.01)
        return {"feature_set": self.settings.feature_set, "frame_rate": rate, "num_frames": len(features),
                "features": features}
