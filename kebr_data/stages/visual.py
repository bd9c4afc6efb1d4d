"""The visual stage: OpenFace 2.2 709-d frame features per clip.

Backends: `openface` runs the user's `FeatureExtraction` binary on the videos themselves, a batch
of clips per invocation (one model load per batch, one CSV per clip, failures still per clip,
a per-clip timeout), output in the shard's temp folder, removed at once; `openface-csv` ingests
CSVs OpenFace wrote earlier. Before any work the binary is probed once on a tiny clip, and the
landmark model it can load (CE-CLM, else CLNF) is part of the config hash. A clip is
`skipped/no_face` when OpenFace tracks a face in fewer than `visual.min_face_ratio` of its
frames. A frame budget makes OpenFace cheaper: `visual.max_frames` keeps each clip's first N frames
(cut losslessly before OpenFace, so they are today's frames; the MMSA export keeps 55) and
`visual.max_fps` subsamples faster videos (docs/stages-visual.md). The toolkit never ships OpenFace
(academic, non-commercial licence).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from ..deps import CV2, missing
from ..errors import (ClipError, ClipSkipped, EnvironmentFailure, PrerequisiteError, environment_problem,
                      full_disk)
from ..features.openface import OpenFaceCsvError, OpenFaceFrames, parse_openface_csv
from ..media import openface as runner
from ..media.binaries import Tool, found_by, locate
from ..media.ffmpeg import find_ffmpeg
from ..media.files import plan_media, read_side_file
from ..schema import VISUAL, rows_to_batch, with_metadata
from ..settings import content_hash, setting
from .base import ClipInput, ClipStage, ShardContext, iter_clips, row

OPENFACE_FLAGS = runner.FLAGS
IMAGE = "kebr"
DOCKER_HINT = (
    "OpenFace cannot be pip-installed (C++, academic licence): build the image in docker/ "
    f"(docker build -t {IMAGE} -f docker/Dockerfile .) and run kebr-data inside it, or build OpenFace 2.2 "
    "with docker/build_openface.sh and set KEBR_OPENFACE_BIN (or visual.openface_bin) to its FeatureExtraction; "
    "to use CSVs OpenFace wrote earlier, --set visual.backend=openface-csv; to leave visual features out, "
    "--stages index,audio,asr,acoustic")
log = logging.getLogger("kebr_data.visual")


def find_openface(configured: str = "") -> str:
    """Path of FeatureExtraction, or raise PrerequisiteError with the way to get one."""
    path = locate(configured, "visual.openface_bin", "KEBR_OPENFACE_BIN", "FeatureExtraction", DOCKER_HINT)
    if path is None:
        raise PrerequisiteError(f"OpenFace's FeatureExtraction was not found (visual.openface_bin, "
                                f"$KEBR_OPENFACE_BIN, PATH). {DOCKER_HINT}")
    return path


@dataclass
class VisualSettings:
    """The visual stage: OpenFace 2.2 features."""

    backend: Literal["openface", "openface-csv"] = setting(
        "openface", "openface (run FeatureExtraction) | openface-csv (ingest precomputed CSVs)")
    openface_bin: str = setting("", "FeatureExtraction binary; '' = $KEBR_OPENFACE_BIN, then FeatureExtraction on "
                                    "PATH", runtime=True)
    openface_args: list[str] = setting([], "extra arguments; the model is picked by itself (CE-CLM, else CLNF) "
                                           "unless -mloc is here")
    timeout_s: float = setting(900.0, "per clip", min=1e-3, runtime=True)
    csv_dir: str = setting("", "openface-csv: <csv_dir>/<clip_id>.csv; '' = <video path>.csv beside each video")
    precheck: bool = setting(True, "OpenCV reads one frame first: unreadable files fail, audio-only ones are "
                                   "skipped")
    min_face_ratio: float = setting(0.1, "clips where OpenFace tracks a face in fewer frames are skipped (no_face); "
                                         "0 = keep all", min=0.0, max=1.0)
    batch_clips: int = setting(16, "clips per FeatureExtraction invocation (one model load each)", min=1,
                               runtime=True)
    max_fps: float = setting(0.0, "> 0: re-encode videos above this frame rate before OpenFace (0 = off, as the "
                                  "papers)", min=0.0)
    max_frames: int = setting(0, "> 0: OpenFace tracks only each clip's first N frames, cut losslessly before it "
                                 "starts (the MMSA export keeps 55: --vision-len 55); 0 = every frame", min=0,
                               hash_default=False)


class VisualStage(ClipStage):
    """frames × 709 OpenFace features, per-frame success and confidence, and the share of tracked frames."""

    name = "visual"
    version = "2"
    schema = VISUAL
    hdf5_attributes = ("backend",)
    upstream = ("plan",)
    Settings = VisualSettings
    settings: VisualSettings
    tool_names = ("openface",)
    report_plots = (("face_ratio", "Share of frames OpenFace tracked", "face ratio", 20),)

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._model: runner.ModelChoice | None = None

    # --- set-up --------------------------------------------------------------------------------

    def model(self) -> runner.ModelChoice:
        """The landmark model FeatureExtraction runs with (CE-CLM when its files are there, else CLNF)."""
        if self._model is None:
            self._model = runner.choose_model(find_openface(self.settings.openface_bin), self.settings.openface_args)
        return self._model

    def openface_args(self) -> list[str]:
        return [*self.model().args, *self.settings.openface_args]

    def config_hash(self) -> str:
        base = super().config_hash()
        if self.settings.backend != "openface":
            return base
        try:
            model = self.model().name
        except PrerequisiteError:
            model = "unresolved"
        return content_hash({"config": base, "openface_model": model})

    def check(self) -> list[str]:
        if self.settings.backend == "openface-csv":
            if self.settings.csv_dir and not Path(self.settings.csv_dir).is_dir():
                return [f"visual.csv_dir {self.settings.csv_dir!r} is not a folder"]
            return []
        try:
            binary = find_openface(self.settings.openface_bin)
        except PrerequisiteError as exc:
            return [str(exc)]
        problem = missing("cv2", None, "the visual stage", CV2)
        return [problem] if problem else self._probe(binary)

    def _probe(self, binary: str) -> list[str]:
        """Run FeatureExtraction once on a tiny clip with the chosen model: one message if it fails."""
        choice = self.model()
        with tempfile.TemporaryDirectory(prefix="kebr-openface-probe-") as tmp:
            problem = runner.probe(binary, self.openface_args(), Path(tmp), self.settings.timeout_s)
        if problem:
            return [f"{binary} fails on a probe clip ({problem}). Rebuild it with docker/build_openface.sh "
                    "(its self-check says what is missing), or pass a working model with "
                    "--set 'visual.openface_args=[\"-mloc\",\"model/main_clnf_general.txt\"]'"]
        if choice.name == "clnf":
            log.warning("visual: %s (recorded in the config hash and the markers' versions)", choice.reason)
        return []

    def versions(self) -> dict[str, str]:
        if self.settings.backend != "openface":
            return {}
        binary = find_openface(self.settings.openface_bin)
        model = self.model()
        return {"openface": binary, "openface_sha256": runner.fingerprint(binary),
                "openface_model": " ".join([model.name, *self.openface_args()])}

    def tools(self) -> dict[str, Tool]:
        if self.settings.backend != "openface":
            return {}
        binary = find_openface(self.settings.openface_bin)
        kind = found_by(self.settings.openface_bin, "visual.openface_bin", "KEBR_OPENFACE_BIN")
        return {"openface": Tool(binary, kind, "", runner.fingerprint(binary), "visual.openface_bin")}

    # --- one shard -----------------------------------------------------------------------------

    def run_shard(self, ctx: ShardContext) -> pa.Table:
        if self.settings.backend == "openface-csv":
            return super().run_shard(ctx)
        schema = with_metadata(self.schema, self.name)
        batches: list[pa.RecordBatch] = []
        rows: list[dict[str, Any] | None] = []
        pending: list[tuple[int, ClipInput, Path, float]] = []
        size = self.settings.batch_clips
        for clip in iter_clips(ctx, self.upstream):
            try:
                video, fps = self._prepare(clip)
            except ClipError as exc:
                self._not_the_machine(clip.clip_id, exc)
                ctx.log.warning("%s %s: %s", exc.status, clip.clip_id, exc)
                rows.append(row(clip.clip_id, exc.status, exc.error, exc.message))
                ctx.progress(1)
                continue
            pending.append((len(rows), clip, video, fps))
            rows.append(None)
            if len(pending) == size:
                self._run_batch(pending, rows, ctx)
                pending = []
                if len(rows) >= self.batch_rows:
                    batches.append(rows_to_batch(rows, schema))
                    rows = []
        if pending:
            self._run_batch(pending, rows, ctx)
        if rows or not batches:
            batches.append(rows_to_batch(rows, schema))
        return pa.Table.from_batches(batches, schema=schema)

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        """One clip of the `openface-csv` backend (the `openface` backend runs batches in run_shard)."""
        frames, read = self._from_csv(clip.clip_id, clip.plan["video_path"])
        return self._result(frames, 0.0, read)

    def _prepare(self, clip: ClipInput) -> tuple[Path, float]:
        """The clip's video, checked before OpenFace starts; its frame rate (0 when not probed)."""
        video = clip.plan["video_path"]
        if not video:
            raise ClipSkipped("no_video", "the clip has no video file")
        path = plan_media(clip.plan, "video")
        if not (self.settings.precheck or self.settings.max_fps > 0):
            return path, 0.0
        from ..media.video import has_video_stream, probe_video

        probe = probe_video(path)
        if probe is None:
            if has_video_stream(find_ffmpeg(), path) is False:
                raise ClipSkipped("no_video", f"{path.name} has no video stream (audio only)")
            raise ClipError("no_frames", f"OpenCV cannot read a frame of {path} (corrupt or unsupported)")
        return path, probe.fps

    def _run_batch(self, pending: list[tuple[int, ClipInput, Path, float]], rows: list[dict[str, Any] | None],
                   ctx: ShardContext) -> None:
        """Run one FeatureExtraction invocation over the pending clips; fill their rows in place."""
        work = ctx.temp() / f"batch-{uuid.uuid4().hex[:12]}"
        work.mkdir(parents=True)
        t0 = time.monotonic()
        try:
            inputs: list[Path | None] = []
            for k, (_, clip, video, fps) in enumerate(pending):
                try:
                    inputs.append(self._input(video, fps, work / "in", k))
                except ClipError as exc:
                    self._not_the_machine(clip.clip_id, exc)
                    rows[pending[k][0]] = row(clip.clip_id, exc.status, exc.error, exc.message)
                    inputs.append(None)
            ready = [(k, p) for k, p in enumerate(inputs) if p is not None]
            outcomes = runner.run_batch(find_openface(self.settings.openface_bin), [p for _, p in ready], work / "out",
                                        self.openface_args(), self.settings.timeout_s)
            for (k, _), outcome in zip(ready, outcomes, strict=True):
                index, clip, _, fps = pending[k]
                rows[index] = self._outcome_row(clip.clip_id, outcome, fps)
                if rows[index]["status"] == "failed" and (problem := full_disk(work)) is not None:
                    # OpenFace says "disk full" only by failing: the machine's fault, never the clip's row
                    raise EnvironmentFailure(f"{self.name} stopped at clip {clip.clip_id}: {problem}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        per_clip = (time.monotonic() - t0) / max(len(pending), 1)
        for index, clip, _, _ in pending:
            r = rows[index]
            if r["status"] == "ok":
                ctx.log.info("ok %s (%.3f s, batch of %d)", clip.clip_id, per_clip, len(pending))
            else:
                ctx.log.warning("%s %s: %s: %s", r["status"], clip.clip_id, r["error"], r["message"])
            ctx.progress(1)

    def _not_the_machine(self, clip_id: str, exc: ClipError) -> None:
        """Raise EnvironmentFailure when `exc` is the machine's fault (see errors.environment_problem)."""
        if (problem := environment_problem(exc)) is not None:
            raise EnvironmentFailure(f"{self.name} stopped at clip {clip_id}: {problem}") from exc

    def _input(self, video: Path, fps: float, folder: Path, k: int) -> Path:
        """The clip under a batch-unique name (a link; a cut or re-encode under the frame budget): OpenFace
        names each CSV after its input's stem, and clips of a shard may share one."""
        folder.mkdir(exist_ok=True)
        suffix = video.suffix if video.suffix[1:].isalnum() else ".mp4"
        dest = folder / f"{k:05d}{suffix}"
        cut = runner.budget_input(video, dest.with_suffix(""), fps, self.settings.max_fps, self.settings.max_frames)
        if cut is not None:
            return cut
        dest.symlink_to(video.resolve())
        return dest

    def _outcome_row(self, clip_id: str, outcome: runner.ClipOutcome, probe_fps: float) -> dict[str, Any]:
        try:
            if outcome.error:
                raise ClipError(outcome.error, outcome.message)
            frames = self._parse(outcome.csv.read_bytes(), outcome.warnings)
            return row(clip_id, **self._result(frames, probe_fps))
        except ClipError as exc:
            return row(clip_id, exc.status, exc.error, exc.message)

    def _result(self, frames: OpenFaceFrames, probe_fps: float, read: str | None = None) -> dict[str, Any]:
        """The row's columns (`read`: what side file they came from), or skipped/no_face when OpenFace
        tracked too few frames."""
        frames = frames.first(self.settings.max_frames)  # the CSV backend's budget (OpenFace's clip is cut)
        minimum = self.settings.min_face_ratio
        if frames.face_ratio < minimum:
            raise ClipSkipped("no_face", f"OpenFace tracked a face in {int(frames.success.sum())} of "
                                         f"{frames.success.size} frames ({frames.face_ratio:.0%}), below "
                                         f"visual.min_face_ratio = {minimum:g}")
        others = f"{frames.other_faces} frame(s) of other faces ignored" if frames.other_faces else None
        message = "; ".join(m for m in (read, others) if m) or None
        return {"message": message, "backend": self.settings.backend, "fps": frames.fps or probe_fps,
                "num_frames": int(frames.features.shape[0]), "features": frames.features,
                "success": frames.success, "confidence": frames.confidence, "face_ratio": frames.face_ratio}

    def _from_csv(self, clip_id: str, video: str | None) -> tuple[OpenFaceFrames, str]:
        """The frames of the clip's OpenFace CSV (read by `read_side_file`) and what was read."""
        if self.settings.csv_dir:
            root = Path(self.settings.csv_dir).resolve()
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
    def _parse(data: bytes, openface_said: str = "") -> OpenFaceFrames:
        try:
            return parse_openface_csv(data)
        except OpenFaceCsvError as exc:
            said = f" (OpenFace: {openface_said})" if openface_said else ""
            raise ClipError(exc.error, f"{exc}{said}") from None
