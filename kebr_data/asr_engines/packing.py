"""Packed ASR windows: consecutive clips of a shard, joined with short silences into one window per engine call,
and the window's words handed back to their clips by their timestamps.

Whisper's encoder always sees 30 s, so a 4-s clip decoded alone wastes most of it; a packed window pays for
one encoder pass over several clips. The decoder reads the window as one sequence (its work does not shrink),
so packing gives each clip: its words (those whose middle lies nearest the clip's span; times relative to the
clip, clamped into it), its text (those words' text), its confidence (the mean log-probability of its
words: Whisper reports one average per decoded window, not per segment) and its language, which the engines
identify per clip before packing (clips are packed only with clips of their own language). Whisper decodes
a window as one sequence, so a doubtful clip (foreign speech to an English-only model, noise) can run on into
the next clip as a hallucination loop: a window in which one segment holds words of two clips, or a clip's
confidence is below `asr.pack_min_logprob`, keeps the clips before the first such clip (text runs forward
only), redoes that clip alone and puts the ones after it back at the head of the queue, where they fill the
next window with the clips that follow (not a half-empty window of their own); after a doubtful clip that
opened its window, clips are done alone while they are doubtful (a run of foreign speech costs no more lost
windows). A clip a window passed over (no words) or one that would be alone in a window is transcribed alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ClipError
from .base import ClipAudio, Packing, Transcript, Word, one_by_one


@dataclass
class Heard:
    """One word of a window as the engine decoded it: its raw text (with its leading space), times in the
    window (s) and probability."""

    text: str
    start: float
    end: float
    prob: float


@dataclass
class Said:
    """One segment Whisper decoded in a window: its words."""

    words: list[Heard]


def plan_windows(durations: Sequence[float], pack_s: float, gap_s: float) -> list[list[int]]:
    """Indices of clips grouped greedily, in order, into windows of at most `pack_s` seconds (clips joined by
    `gap_s` of silence); a clip longer than `pack_s` gets a window of its own."""
    windows: list[list[int]] = []
    length = 0.0
    for i, d in enumerate(durations):
        if windows and length + gap_s + d <= pack_s:
            windows[-1].append(i)
            length += gap_s + d
        else:
            windows.append([i])
            length = d
    return windows


def join(clips: Sequence[ClipAudio], gap_s: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips' samples joined by `gap_s` of digital silence, and each clip's (start, end) in the window (s)."""
    sr = clips[0].sample_rate
    gap = np.zeros(round(gap_s * sr), np.float32)
    parts: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    at = 0
    for k, clip in enumerate(clips):
        if k:
            parts.append(gap)
            at += gap.size
        y = np.asarray(clip.samples, np.float32)
        parts.append(y)
        spans.append((at / sr, (at + y.size) / sr))
        at += y.size
    return np.concatenate(parts), spans


def owner(word: Heard, spans: Sequence[tuple[float, float]]) -> int:
    """The clip a word belongs to: the one whose span its middle lies in, else the nearest (a word drawn into a
    gap by the aligner belongs to the clip it is closer to)."""
    mid = (word.start + word.end) / 2
    return min(range(len(spans)), key=lambda k: max(spans[k][0] - mid, mid - spans[k][1], 0.0))


def within(t: float, duration: float) -> float:
    """A time in a clip, to the millisecond, clamped into [0, duration]."""
    return min(max(round(t, 3), 0.0), duration)


def split(segments: Sequence[Said], spans: Sequence[tuple[float, float]], language: str | None,
          language_probs: Sequence[float | None], multilingual: bool, model: str, trust: float,
          keep_words: bool = True) -> tuple[list[Transcript], int | None]:
    """One Transcript per clip from a window's segments: text, words relative to the clip (kept when
    `keep_words`), confidence (the mean log-probability of its words); and the first clip not trusted (None when
    all are): one whose confidence is below `trust`, or the first of two clips a segment's words belong to.
    Whisper may carry a doubtful clip's text (a hallucination loop) on into the clips after it, never into the
    ones before, so only the transcripts before that clip stand."""
    mine: list[list[Heard]] = [[] for _ in spans]
    doubted: set[int] = set()
    for seg in segments:
        owners = sorted({owner(w, spans) for w in seg.words})
        if len(owners) > 1:
            doubted.add(owners[0])
        for w in seg.words:
            mine[owner(w, spans)].append(w)
    out = []
    for k, ((start, end), heard, prob) in enumerate(zip(spans, mine, language_probs, strict=True)):
        dur = end - start
        logps = [math.log(max(w.prob, 1e-12)) for w in heard]
        confidence = sum(logps) / len(logps) if logps else None
        if confidence is not None and confidence < trust:
            doubted.add(k)
        out.append(Transcript(
            text="".join(w.text for w in heard).strip(), language=language, language_prob=prob,
            avg_logprob=confidence,
            words=[Word(w.text.strip(), within(w.start - start, dur), within(w.end - start, dur), w.prob)
                   for w in heard] if keep_words else [],
            multilingual=multilingual, model=model))
    return out, min(doubted, default=None)


def by_language(languages: Sequence[str | None]) -> dict[str | None, list[int]]:
    """Clip indices grouped by language, each group in clip order."""
    groups: dict[str | None, list[int]] = {}
    for i, lang in enumerate(languages):
        groups.setdefault(lang, []).append(i)
    return groups


Detected = tuple[str | None, float | None]

#: a clip redone alone decodes at most this many tokens a second of it, plus `TOKENS_EXTRA`: speech runs 3 to 6
#: (timestamps included; `bench/asr_packing_profile.py`), a hallucination loop ~50 (224 tokens in a 4-s clip)
TOKENS_PER_S = 10
TOKENS_EXTRA = 20


def token_bound(seconds: float) -> int:
    """The most tokens a clip of `seconds` (at most 30: the bound is per pass) done alone in packed mode decodes:
    generous for speech, it stops a hallucination loop early (such a clip is doubtful either way)."""
    return min(400, math.ceil(TOKENS_PER_S * seconds) + TOKENS_EXTRA)


def transcribe_packed(clips: Sequence[ClipAudio], packing: Packing,
                      detect: Callable[[ClipAudio], tuple[str, float | None]],
                      decode: Callable[[list[np.ndarray], str], list[list[Said]]],
                      alone: Callable[[ClipAudio, Detected, int], Transcript], multilingual: bool,
                      model: str, keep_words: bool = True, batch: int = 1) -> list[Transcript | ClipError]:
    """The clips' transcripts, decoding packed windows: `detect` gives each clip's language (and probability),
    `decode` the segments of windows in one language (times in each window; `batch` windows per call, so a GPU
    engine batches them), `alone` transcribes a clip unpacked (given its detected language and `token_bound`
    of it). Clips are packed with clips of their own language only, in order; a clip longer than `pack_s`, or
    one left alone in a window, is transcribed alone, and so is a clip the window skipped (no words). In a
    window `split` does not trust, the clips before the first doubtful one stand, that clip is redone alone and
    the ones after it go back to the head of the queue (each window settles at least one clip, so this ends).
    When the doubtful clip opened its window (the whole decode was lost), doubtful clips may come in a run (a
    foreign speaker): the clips after it are done alone while they are doubtful, then packing resumes. When
    decoding fails, the windows' clips are done one by one, so only a bad clip fails."""
    out: list[Transcript | ClipError | None] = [None] * len(clips)
    detected: list[Detected] = []
    for i, clip in enumerate(clips):
        try:
            detected.append(detect(clip))
        except ClipError as exc:
            out[i] = exc
            detected.append((None, None))

    def by_itself(i: int) -> bool:
        """Transcribe clip i alone (a failure as its result); whether it is doubtful."""
        bound = token_bound(min(clips[i].samples.size / clips[i].sample_rate, 30.0))  # the bound is per 30-s pass
        r = out[i] = one_by_one([clips[i]], lambda clip: alone(clip, detected[i], bound))[0]
        return isinstance(r, ClipError) or not r.text or (r.avg_logprob or 0.0) < packing.min_logprob

    groups = by_language([lang if out[i] is None else None for i, (lang, _) in enumerate(detected)])
    for lang, members in groups.items():
        if lang is None:
            continue
        seconds = {i: clips[i].samples.size / clips[i].sample_rate for i in members}
        queue: list[int] = []
        for i in members:
            if seconds[i] > packing.pack_s:
                by_itself(i)
            else:
                queue.append(i)
        probing = False
        while queue:
            if probing:
                probing = by_itself(queue.pop(0))
                continue
            windows = [[queue[k] for k in w]
                       for w in plan_windows([seconds[i] for i in queue], packing.pack_s, packing.gap_s)[:batch]]
            queue = queue[sum(map(len, windows)):]
            for w in windows:
                if len(w) == 1:
                    by_itself(w[0])
            windows = [w for w in windows if len(w) > 1]
            if not windows:
                continue
            joined = [join([clips[i] for i in idx], packing.gap_s) for idx in windows]
            try:
                heard = decode([samples for samples, _ in joined], lang)
            except ClipError:
                for idx in windows:
                    for i in idx:
                        by_itself(i)
                continue
            back: list[int] = []
            for idx, (_, spans), segments in zip(windows, joined, heard, strict=True):
                results, bad = split(segments, spans, lang, [detected[i][1] for i in idx], multilingual, model,
                                     packing.min_logprob, keep_words)
                for i, r in zip(idx[:bad], results[:bad]):
                    if r.text:
                        out[i] = r
                    else:
                        by_itself(i)  # a clip the window skipped: heard alone, as unpacked
                if bad is not None:
                    by_itself(idx[bad])
                    back += idx[bad + 1:]
                    probing = probing or bad == 0
            queue = back + queue
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]
