"""`given`: the dataset's own transcript (the plan's given_text, else a sidecar .txt beside the media)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ClipError
from ..media.files import read_side_file
from .base import AsrEngine, ClipAudio, Transcript


def sidecar_text(plan: dict[str, Any]) -> tuple[str, str] | None:
    """The transcript in `<media>.txt` or `<media stem>.txt` beside the clip's audio or video file, and
    a line saying what was read (see `read_side_file`: regular files in the media's folder tree only)."""
    for media in (plan.get("audio_path"), plan.get("video_path")):
        if not media:
            continue
        for candidate in (Path(media).with_suffix(".txt"), Path(f"{media}.txt")):
            try:
                data, what = read_side_file(candidate, Path(media).parent)
            except FileNotFoundError:
                continue
            try:
                return data.decode("utf-8"), what
            except UnicodeDecodeError as exc:
                raise ClipError("bad_transcript", f"{candidate}: {exc}") from None
    return None


class Given(AsrEngine):
    """Reads, does not listen: no audio upstream, no language or confidence filters."""

    name = "given"
    listens = False
    empty_message = "the given transcript is empty"

    def transcribe(self, clip: ClipAudio, settings: Any) -> Transcript:
        text = clip.plan.get("given_text")
        source, what = "plan", None
        if text is None:
            found = sidecar_text(clip.plan)
            if found is None:
                raise ClipError("no_transcript", "no given transcript in the plan and no sidecar .txt beside the media")
            (text, what), source = found, "sidecar"
        return Transcript(text=" ".join(text.split()), language=None, language_prob=None, avg_logprob=None,
                          model=source, note=what)
