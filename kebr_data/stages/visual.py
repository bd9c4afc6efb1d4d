"""The visual stage (DESIGN §4, §5): OpenFace 2.2 709-d frame features per clip.

Backends: `openface` runs the user's `FeatureExtraction` binary on the video itself (an argument
list, a per-clip timeout, output in the shard's temp folder, removed at once); `openface-csv`
ingests CSVs OpenFace wrote earlier. A pre-check with OpenCV skips clips without a face before
the expensive run. The toolkit never ships OpenFace (academic, non-commercial licence).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..errors import ClipError, ClipSkipped, PrerequisiteError
from ..features.openface import OpenFaceCsvError, parse_openface_csv
from ..media.binaries import locate
from ..media.ffmpeg import find_ffmpeg, stderr_tail
from ..media.files import check_readable, read_side_file
from ..schema import VISUAL
from .base import ClipInput, ClipStage, ShardContext

BACKENDS = ("openface", "openface-csv")
OPENFACE_FLAGS = ("-2Dfp", "-3Dfp", "-pdmparams", "-pose", "-aus", "-gaze")
DOCKER_HINT = (
    "OpenFace cannot be pip-installed (C++, academic licence): build the image in docker/ "
    "(docker build -t kebr-openface -f docker/Dockerfile .) and run kebr-data inside it, or build OpenFace 2.2 "
    "with docker/build_openface.sh and set KEBR_OPENFACE_BIN (or visual.openface_bin) to its FeatureExtraction; "
    "to use CSVs OpenFace wrote earlier, --set visual.backend=openface-csv; to leave visual features out, "
    "--stages index,audio,asr,acoustic")


def find_openface(configured: str = "") -> str:
    """Path of FeatureExtraction, or raise PrerequisiteError with the way to get one."""
    path = locate(configured, "visual.openface_bin", "KEBR_OPENFACE_BIN", "FeatureExtraction", DOCKER_HINT)
    if path is None:
        raise PrerequisiteError(f"OpenFace's FeatureExtraction was not found (visual.openface_bin, "
                                f"$KEBR_OPENFACE_BIN, PATH). {DOCKER_HINT}")
    return path


class VisualStage(ClipStage):
    """frames × 709 OpenFace features, per-frame success and confidence, and the share of tracked frames."""

    name = "visual"
    version = "1"
    schema = VISUAL
    upstream = ("plan",)
    runtime_keys = ("openface_bin", "timeout_s")

    def check(self) -> list[str]:
        backend = self.cfg["backend"]
        if backend not in BACKENDS:
            return [f"visual.backend must be one of {', '.join(BACKENDS)}, got {backend!r}"]
        problems = []
        if backend == "openface":
            try:
                find_openface(self.cfg["openface_bin"])
            except PrerequisiteError as exc:
                problems.append(str(exc))
            if self.cfg["precheck"] or self.cfg["max_fps"] > 0:
                try:
                    import cv2  # noqa: F401
                except ImportError:
                    problems.append("the visual pre-check needs opencv-python<5: pip install 'opencv-python<5'")
        elif self.cfg["csv_dir"] and not Path(self.cfg["csv_dir"]).is_dir():
            problems.append(f"visual.csv_dir {self.cfg['csv_dir']!r} is not a folder")
        return problems

    def versions(self) -> dict[str, str]:
        if self.cfg["backend"] != "openface":
            return {}
        return {"openface": find_openface(self.cfg["openface_bin"])}

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        video = clip.plan["video_path"]
        if self.cfg["backend"] == "openface-csv":
            frames, read = self._from_csv(clip.clip_id, video)
            probe_fps = 0.0
        else:
            if not video:
                raise ClipSkipped("no_video", "the clip has no video file")
            path, read = Path(video), None
            check_readable(path)
            probe_fps = self._precheck(path)
            frames = self._run_openface(clip.clip_id, path, probe_fps, ctx)
        others = f"{frames.other_faces} frame(s) of other faces ignored" if frames.other_faces else None
        message = "; ".join(m for m in (read, others) if m) or None
        return {"message": message, "backend": self.cfg["backend"], "fps": frames.fps or probe_fps,
                "num_frames": int(frames.features.shape[0]), "features": frames.features,
                "success": frames.success, "confidence": frames.confidence, "face_ratio": frames.face_ratio}

    def _precheck(self, path: Path) -> float:
        """Skip clips without a face before OpenFace; return the video's frame rate (0 when unknown)."""
        if not (self.cfg["precheck"] or self.cfg["max_fps"] > 0):
            return 0.0
        from ..media.video import probe_video

        probe = probe_video(path, int(self.cfg["precheck_frames"]))
        if probe is None:
            raise ClipError("no_frames", f"OpenCV cannot read a frame of {path} (no video stream, or corrupt)")
        if self.cfg["precheck"] and probe.with_face == 0:
            raise ClipSkipped("no_face", f"no face in the {probe.sampled} frame(s) the pre-check sampled")
        return probe.fps

    def _from_csv(self, clip_id: str, video: str | None):
        if self.cfg["csv_dir"]:
            root = Path(self.cfg["csv_dir"]).resolve()
            csv = root / f"{clip_id}.csv"
        elif video:
            csv = Path(f"{video}.csv")
            root = csv.parent
        else:
            raise ClipSkipped("no_video", "the clip has no video file and visual.csv_dir is not set")
        try:
            data, read = read_side_file(csv, root)
        except FileNotFoundError:
            raise ClipError("missing_csv", f"no OpenFace CSV at {csv}") from None
        return self._parse(data), read

    @staticmethod
    def _parse(data: bytes):
        try:
            return parse_openface_csv(data)
        except OpenFaceCsvError as exc:
            raise ClipError(exc.error, str(exc)) from None

    def _run_openface(self, clip_id: str, video: Path, fps: float, ctx: ShardContext):
        work = ctx.temp() / hashlib.sha1(clip_id.encode()).hexdigest()[:16]
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            max_fps = float(self.cfg["max_fps"])
            if max_fps > 0 and fps > max_fps:
                video = self._reencode(video, work / "input.mp4", max_fps)
            out_dir = work / "out"
            args = [find_openface(self.cfg["openface_bin"]), "-f", str(video.resolve()), "-out_dir", str(out_dir),
                    *OPENFACE_FLAGS, *self.cfg["openface_args"]]
            try:
                proc = subprocess.run(args, capture_output=True, timeout=float(self.cfg["timeout_s"]), check=False)
            except subprocess.TimeoutExpired:
                raise ClipError("timeout", f"OpenFace did not finish within {self.cfg['timeout_s']:g} s") from None
            if proc.returncode != 0:
                raise ClipError("openface_error", f"FeatureExtraction exit {proc.returncode}: "
                                                  f"{stderr_tail(proc.stderr) or stderr_tail(proc.stdout)}")
            csvs = sorted(out_dir.glob("*.csv")) if out_dir.is_dir() else []
            if len(csvs) != 1:
                raise ClipError("no_csv", f"FeatureExtraction wrote {len(csvs)} CSV file(s), expected 1: "
                                          f"{stderr_tail(proc.stderr) or stderr_tail(proc.stdout) or 'no message'}")
            return self._parse(csvs[0].read_bytes())
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _reencode(video: Path, dest: Path, fps: float) -> Path:
        """The video at a lower frame rate (visual.max_fps), for a cheaper OpenFace run."""
        args = [find_ffmpeg(), "-nostdin", "-loglevel", "error", "-i", "file:" + str(video.resolve()), "-an",
                "-vf", f"fps={fps:g}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", str(dest)]
        proc = subprocess.run(args, capture_output=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise ClipError("decode_error", f"re-encoding to {fps:g} fps failed: {stderr_tail(proc.stderr)}")
        return dest


