"""ffmpeg as a subprocess: an argument list (never a shell), a timeout, stderr kept for the row.

The binary is `audio.ffmpeg` from the config, else `$KEBR_FFMPEG`, else `ffmpeg` on PATH, else
the static build shipped by the `imageio-ffmpeg` wheel, so a plain `pip install` is enough.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import numpy as np

from ..errors import ClipError, ClipSkipped, PrerequisiteError
from .binaries import Tool, binary_sha256, found_by, locate

STDERR_TAIL = 600
_POINTER = re.compile(r" @ 0x[0-9a-fA-F]+")


def find_ffmpeg(configured: str = "") -> str:
    """Path of the ffmpeg binary to use, or raise PrerequisiteError saying how to get one."""
    return _find(configured)[0]


def _find(configured: str) -> tuple[str, str]:
    """(path, where it was found) of the ffmpeg to use."""
    path = locate(configured, "audio.ffmpeg", "KEBR_FFMPEG", "ffmpeg")
    if path:
        return path, found_by(configured, "audio.ffmpeg", "KEBR_FFMPEG")
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe(), "imageio-ffmpeg"
    except (ImportError, RuntimeError) as exc:
        raise PrerequisiteError("no ffmpeg found: install Debian's ffmpeg (apt-get install ffmpeg) or "
                                f"pip install imageio-ffmpeg, or set audio.ffmpeg ({exc})") from exc


def ffmpeg_tool(configured: str = "") -> Tool:
    """The ffmpeg to use as an output folder pins it: path, where it was found, version and sha256."""
    path, kind = _find(configured)
    version = ffmpeg_version(path).split(" Copyright")[0]
    return Tool(path, kind, version, binary_sha256(path), "audio.ffmpeg")


@functools.lru_cache(maxsize=8)
def ffmpeg_version(binary: str) -> str:
    """First line of `ffmpeg -version` (recorded in done markers)."""
    out = subprocess.run([binary, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.splitlines() or ["unknown"])[0]


def _input_arg(path: Path) -> str:
    """`file:` + absolute path, so names like `concat:x` or `-y.mp4` are never read as protocols or options."""
    return "file:" + str(path.resolve())


def stderr_tail(stderr: bytes) -> str:
    """The end of ffmpeg's stderr as one line, without its pointer values (`[in#0 @ 0x55e9...]`),
    so that the same bad file always gives the same message and reruns stay byte-identical."""
    text = _POINTER.sub("", stderr.decode("utf-8", errors="replace"))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines)[-STDERR_TAIL:]


def decode_audio(binary: str, path: Path, sample_rate: int, timeout_s: float,
                 max_duration_s: float) -> tuple[np.ndarray, str]:
    """Decode the first audio track of `path` to mono int16 PCM at `sample_rate`.

    Returns (samples, warnings). Raises ClipSkipped for a file without audio track or with
    audio longer than `max_duration_s`, and ClipError for undecodable input or a timeout.
    """
    limit = max_duration_s + 1.0
    args = [binary, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", _input_arg(path),
            "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sample_rate),
            "-t", f"{limit:.3f}", "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ClipError("timeout", f"ffmpeg did not finish within {timeout_s:g} s "
                                   "(raise audio.timeout_s for very long files)") from None
    err = stderr_tail(proc.stderr)
    if proc.returncode != 0:
        if "matches no streams" in err or "does not contain any stream" in err:
            raise ClipSkipped("no_audio_track", "the file has no audio stream")
        raise ClipError("decode_error", f"ffmpeg exit {proc.returncode}: {err or 'no message'}")
    samples = np.frombuffer(proc.stdout, dtype="<i2")
    if samples.size > max_duration_s * sample_rate:
        raise ClipSkipped("too_long", f"audio is longer than audio.max_duration_s={max_duration_s:g} s")
    return samples, err
