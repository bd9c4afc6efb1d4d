"""The faces stage: the clip's main face track as 128×128 JPEG crops at `faces.fps`.

Detector: OpenCV's Haar cascade `haarcascade_frontalface_default.xml`, which the opencv-python
wheel ships (`cv2.data.haarcascades`); YuNet (`cv2.FaceDetectorYN`) needs an ONNX file that no
wheel carries and MediaPipe's wheel carries no face model either, so nothing is fetched at run
time. Frames are sampled at `faces.fps`, faces linked into tracks by IoU, one track chosen
(`largest`, or `speaker`: the face whose mouth region moves with the audio energy, a stand-in
for TalkNet, which has no offline weights) and cropped square around its smoothed box (centre
and scale alignment; Haar gives no landmarks, so in-plane rotation is not corrected).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ..deps import CV2, missing
from ..errors import ClipError, ClipSkipped
from ..features import face_tracks as ft
from ..media.files import plan_media
from ..schema import COMMON
from ..settings import setting
from .base import ClipInput, ClipStage, ShardContext, row

CASCADE = "haarcascade_frontalface_default.xml"
SIZE = 128
MOUTH = (32, 16)  # mouth patches are compared at this size (w, h)

FACES = pa.schema(COMMON + [
    pa.field("detector", pa.string()),
    pa.field("selection", pa.string()),
    pa.field("fps", pa.float32()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("num_sampled", pa.int32()),
    pa.field("num_tracks", pa.int32()),
    pa.field("start_s", pa.float32()),
    pa.field("num_frames", pa.int32()),
    pa.field("crops", pa.list_(pa.binary())),
    pa.field("boxes", pa.list_(pa.list_(pa.int32(), 3))),
    pa.field("detected", pa.list_(pa.bool_())),
    pa.field("face_ratio", pa.float32()),
    pa.field("speaker_corr", pa.float32()),
])


@functools.lru_cache(maxsize=1)
def cascade() -> Any:
    """The bundled frontal-face cascade, loaded once per worker process."""
    import cv2

    path = Path(cv2.data.haarcascades) / CASCADE
    detector = cv2.CascadeClassifier(str(path))
    if detector.empty():
        raise RuntimeError(f"OpenCV cannot load its bundled {path}")
    return detector


def detect(gray: np.ndarray, scale_factor: float, min_neighbors: int, min_size: int) -> np.ndarray:
    """Face boxes (n × 4, x y w h) in a grayscale frame, sorted by position for a fixed order."""
    boxes = cascade().detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                       minSize=(min_size, min_size))
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return boxes[np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0]))] if len(boxes) else boxes


def crop(frame: np.ndarray, cx: float, cy: float, side: float, size: int = SIZE) -> np.ndarray:
    """The size × size square of side `side` centred on (cx, cy), edges replicated outside the frame."""
    import cv2

    s = size / side
    m = np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class FacesSettings:
    """The faces stage: a face track per clip as 128×128 crops."""

    fps: float = setting(10.0, "frames sampled (and cropped) per second", min=0.1, max=60.0)
    selection: Literal["largest", "speaker"] = setting(
        "largest", "largest: the track with the largest sum of box areas (big and present long); speaker: the "
                   "track whose mouth motion correlates with the audio energy (a TalkNet stand-in; falls back "
                   "to largest without audio)")
    min_face_ratio: float = setting(0.1, "clips where the chosen face is detected in fewer sampled frames are "
                                         "skipped (no_face)", min=0.0, max=1.0)
    scale_factor: float = setting(1.1, "Haar detectMultiScale scaleFactor", min=1.01)
    min_neighbors: int = setting(5, "Haar detectMultiScale minNeighbors", min=0)
    min_face: float = setting(0.1, "smallest face side as a share of the frame's shorter side", min=0.0, max=1.0)
    iou_min: float = setting(0.3, "a detection continues a track when their boxes overlap this much (IoU)",
                             min=0.0, max=1.0)
    max_gap: int = setting(5, "sampled frames a track may miss before it ends", min=0)
    smooth: int = setting(5, "frames of the centred moving average over the crop box", min=1)
    scale: float = setting(1.25, "crop side = scale × the face box's larger side", min=0.5, max=4.0)
    jpeg_quality: int = setting(90, "JPEG quality of the stored crops", min=1, max=100)
    max_duration_s: float = setting(600.0, "longer videos are skipped (too_long)", min=0.0)


class FacesStage(ClipStage):
    """The chosen face track per clip: JPEG crops, their boxes, and the share of frames with the face."""

    name = "faces"
    version = "1"
    schema = FACES
    upstream = ("plan", "audio")
    Settings = FacesSettings
    settings: FacesSettings
    extract_default = False
    #: JPEG bytes are for the video encoder, not for HDF5/Parquet readers
    export_drop = ("crops",)
    report_plots = (("face_ratio", "Share of sampled frames with the chosen face", "face ratio", 20),)

    def versions(self) -> dict[str, str]:
        import cv2

        return {"opencv": cv2.__version__, "cascade": CASCADE}

    def check(self) -> list[str]:
        problem = missing("cv2", None, "the faces stage", CV2)
        if problem:
            return [problem]
        try:
            cascade()
        except RuntimeError as exc:
            return [str(exc)]
        return []

    def input_columns(self) -> dict[str, list[str] | None]:
        audio = ["clip_id", "status", "error"] + (["flac"] if self.settings.selection == "speaker" else [])
        return {"audio": audio}

    def _clip_row(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        """Like ClipStage's, but a clip without audio is still cropped: only `speaker` uses the audio."""
        t0 = time.monotonic()
        try:
            result = row(clip.clip_id, **self.process(clip, ctx))
        except ClipError as exc:
            ctx.log.warning("%s %s: %s", exc.status, clip.clip_id, exc)
            return row(clip.clip_id, exc.status, exc.error, exc.message)
        ctx.log.info("ok %s (%.3f s)", clip.clip_id, time.monotonic() - t0)
        return result

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        from ..media.video_frames import SampledVideo

        video = clip.plan["video_path"]
        if not video:
            raise ClipSkipped("no_video", "the clip has no video file")
        path = plan_media(clip.plan, "video")
        fps = self.settings.fps
        src = SampledVideo(path, fps)
        if not src.ok:
            from ..media.ffmpeg import find_ffmpeg
            from ..media.video import has_video_stream

            if has_video_stream(find_ffmpeg(), path) is False:
                raise ClipSkipped("no_video", f"{path.name} has no video stream (audio only)")
            raise ClipError("no_frames", f"OpenCV cannot read a frame of {path} (corrupt or unsupported)")
        if src.src_fps <= 0:
            raise ClipError("no_frames", f"OpenCV reads no frame rate from {path}")
        if self.settings.max_duration_s and src.duration_s > self.settings.max_duration_s:
            raise ClipSkipped("too_long", f"{src.duration_s:.1f} s of video, above faces.max_duration_s = "
                                          f"{self.settings.max_duration_s:g}")
        audio = clip.upstream.get("audio")
        speaker = self.settings.selection == "speaker" and audio is not None and audio["status"] == "ok"
        linker, motion, n = self._track(src, speaker)
        if not linker.tracks:
            raise ClipSkipped("no_face", f"no face detected in {n} sampled frame(s)")
        chosen, corr, message = self._choose(linker.tracks, motion, audio if speaker else None, fps, n)
        if self.settings.selection == "speaker" and not speaker:
            message = "no audio: the largest face was chosen"
        track = linker.tracks[chosen]
        ratio = len(track.frames) / n
        if ratio < self.settings.min_face_ratio:
            raise ClipSkipped("no_face", f"the chosen face is detected in {len(track.frames)} of {n} sampled "
                                         f"frames ({ratio:.0%}), below faces.min_face_ratio = "
                                         f"{self.settings.min_face_ratio:g}")
        first, geo, detected = ft.crop_boxes(track, self.settings.smooth, self.settings.scale)
        crops = self._crops(src, first, geo)
        boxes = np.stack([np.round(geo[:, 0] - geo[:, 2] / 2), np.round(geo[:, 1] - geo[:, 2] / 2),
                          np.round(geo[:, 2])], axis=1).astype(np.int32)
        return {"message": message, "detector": f"opencv-haar:{CASCADE}", "selection": self.settings.selection,
                "fps": fps, "width": src.width, "height": src.height, "num_sampled": n,
                "num_tracks": len(linker.tracks), "start_s": first / fps, "num_frames": len(crops),
                "crops": crops, "boxes": boxes, "detected": detected, "face_ratio": ratio, "speaker_corr": corr}

    def _track(self, src: Any, speaker: bool) -> tuple[ft.TrackLinker, dict[int, dict[int, float]], int]:
        """Detect and link faces over the sampled frames; with `speaker`, each track's mouth motion."""
        import cv2

        min_size = max(1, int(round(self.settings.min_face * min(src.width, src.height))))
        linker = ft.TrackLinker(self.settings.iou_min, self.settings.max_gap)
        mouths: dict[int, tuple[int, np.ndarray]] = {}
        motion: dict[int, dict[int, float]] = {}
        n = 0
        for k, frame in src.frames():
            n = k + 1
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            boxes = detect(gray, self.settings.scale_factor, self.settings.min_neighbors, min_size)
            owners = linker.add(k, boxes)
            if not speaker:
                continue
            for box, i in zip(boxes, owners, strict=True):
                x0, y0, x1, y1 = ft.mouth_box(box)
                patch = gray[max(y0, 0):y1, max(x0, 0):x1]
                if patch.size == 0:
                    continue
                patch = cv2.resize(patch, MOUTH, interpolation=cv2.INTER_AREA).astype(np.float32)
                prev = mouths.get(i)
                if prev is not None and prev[0] == k - 1:
                    motion.setdefault(i, {})[k] = float(np.abs(patch - prev[1]).mean())
                mouths[i] = (k, patch)
        return linker, motion, n

    def _choose(self, tracks: list[ft.Track], motion: dict[int, dict[int, float]], audio: dict[str, Any] | None,
                fps: float, n: int) -> tuple[int, float | None, str | None]:
        """(track index, speaker correlation or None, message)."""
        if audio is None:
            return ft.largest(tracks), None, None
        from ..media.flac import decode_flac

        samples, sr = decode_flac(audio["flac"])
        best = ft.speaker(motion, ft.frame_energy(samples, sr, fps, n))
        if best is None:
            return ft.largest(tracks), None, "no track with 3 frames of mouth motion: the largest face was chosen"
        return best[0], best[1], None

    def _crops(self, src: Any, first: int, geo: np.ndarray) -> list[bytes]:
        """JPEG bytes of the crop of each frame in the track's span (a second pass over the video)."""
        import cv2

        last = first + len(geo) - 1
        params = [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality]
        out: list[bytes] = []
        for k, frame in src.frames(lambda j: first <= j <= last):
            cx, cy, side = geo[k - first]
            ok, data = cv2.imencode(".jpg", crop(frame, cx, cy, side), params)
            if not ok:
                raise ClipError("encode_error", "OpenCV could not JPEG-encode a crop")
            out.append(data.tobytes())
            if k == last:
                break
        if len(out) != len(geo):
            raise ClipError("decode_error", f"the video gave {len(out)} of the track's {len(geo)} frames on the "
                                            "second read")
        return out

    def shard_stats(self, table: pa.Table) -> dict[str, Any]:
        frames = [v for v in table.column("num_frames").to_pylist() if v]
        return {"crops": int(sum(frames))}

    @staticmethod
    def format_stats(stats: dict[str, Any]) -> str:
        return f"{stats.get('crops', 0)} face crops" if stats else ""
