"""`given`: the dataset's own transcript (the plan's given_text, else a sidecar .txt beside the media)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ClipError
from .base import AsrEngine, ClipAudio, Transcript


def sidecar_text(plan: dict[str, Any]) -> str | None:
    """The transcript in `<media>.txt` or `<media stem>.txt` beside the clip's audio or video file."""
    for media in (plan.get("audio_path"), plan.get("video_path")):
        if not media:
            continue
        for candidate in (Path(media).with_suffix(".txt"), Path(f"{media}.txt")):
            try:
                return candidate.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as exc:
                raise ClipError("bad_transcript", f"{candidate}: {exc}") from None
    return None


class Given(AsrEngine):
    """Reads, does not listen: no audio upstream, no language or confidence filters."""

    name = "given"
    listens = False
    empty_message = "the given transcript is empty"

    def transcribe(self, clip: ClipAudio, cfg: dict[str, Any]) -> Transcript:
        text = clip.plan.get("given_text")
        source = "plan"
        if text is None:
            text, source = sidecar_text(clip.plan), "sidecar"
        if text is None:
            raise ClipError("no_transcript", "no given transcript in the plan and no sidecar .txt beside the media")
        return Transcript(text=" ".join(text.split()), language=None, language_prob=None, avg_logprob=None,
                          model=source)
