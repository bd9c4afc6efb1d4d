"""The audio stage: ffmpeg decodes each clip's audio track to mono PCM, stored as FLAC.

Reads the audio file of a clip when it has one (VoxCeleb's m4a/wav), else its video. No audio
track is `skipped`; a zero-byte, missing, truncated or undecodable file is `failed` with ffmpeg's
message; a stuck ffmpeg is killed after `audio.timeout_s`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ClipSkipped, PrerequisiteError
from ..media.binaries import Tool
from ..media.ffmpeg import decode_audio, ffmpeg_tool, ffmpeg_version, find_ffmpeg
from ..media.files import plan_media
from ..media.flac import encode_flac
from ..schema import AUDIO
from ..settings import setting
from .base import ClipInput, ClipStage, ShardContext


@dataclass
class AudioSettings:
    """The audio stage: ffmpeg decodes each clip's audio track."""

    sample_rate: int = setting(22050, "Hz, mono; what every released feature recipe of this line of work uses",
                               min=1000)
    timeout_s: float = setting(120.0, "per clip; a stuck ffmpeg becomes a failed row", min=1e-3, runtime=True)
    max_duration_s: float = setting(600.0, "longer audio is skipped (reason too_long) without decoding it all",
                                    min=1e-3)
    ffmpeg: str = setting("", "path to ffmpeg; '' = $KEBR_FFMPEG, then PATH, then imageio-ffmpeg's binary",
                          runtime=True)


class AudioStage(ClipStage):
    """Decode audio with ffmpeg into FLAC bytes at `audio.sample_rate`."""

    name = "audio"
    version = "1"
    schema = AUDIO
    upstream = ("plan",)
    Settings = AudioSettings
    settings: AudioSettings
    tool_names = ("ffmpeg",)
    export_drop = ("flac",)
    report_plots = (("duration_s", "Clip durations", "seconds", 30),)

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._ffmpeg: str | None = None

    @property
    def ffmpeg(self) -> str:
        if self._ffmpeg is None:
            self._ffmpeg = find_ffmpeg(self.settings.ffmpeg)
        return self._ffmpeg

    def check(self) -> list[str]:
        try:
            find_ffmpeg(self.settings.ffmpeg)
        except PrerequisiteError as exc:
            return [str(exc)]
        return []

    def versions(self) -> dict[str, str]:
        return {"ffmpeg": ffmpeg_version(self.ffmpeg)}

    def tools(self) -> dict[str, Tool]:
        return {"ffmpeg": ffmpeg_tool(self.settings.ffmpeg)}

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        if not (clip.plan["audio_path"] or clip.plan["video_path"]):
            raise ClipSkipped("no_media", "the plan has neither an audio nor a video path")
        path = plan_media(clip.plan, "audio" if clip.plan["audio_path"] else "video")
        sr = self.settings.sample_rate
        samples, warnings = decode_audio(self.ffmpeg, path, sr, self.settings.timeout_s,
                                         self.settings.max_duration_s)
        if samples.size == 0:
            raise ClipSkipped("empty_audio", f"the audio track decodes to no samples{': ' + warnings if warnings else ''}")
        return {
            "message": f"decoded with warnings: {warnings}" if warnings else None,
            "sample_rate": sr,
            "num_samples": int(samples.size),
            "duration_s": samples.size / sr,
            "flac": encode_flac(samples, sr),
        }
