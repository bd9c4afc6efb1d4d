"""Sentiment-word masking (SKESL §3.2, KEBR §4.1): pure functions over one transcript.

The word with the largest |valence| is masked (ties: the earliest); its label is the valence
scaled linearly from the lexicon's range to [-3, 3]. A transcript without a lexicon word gets
one random word masked, chosen by a hash of the clip id (identical on every rerun and machine),
with label 0.0.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from vaderSentiment.vaderSentiment import N_SCALAR, negated

from .lexicon import Lexicon, normalise, split_punct, strip_punct

MASK = "[MASK]"
TARGET_LOW, TARGET_HIGH = -3.0, 3.0
NEGATION_WINDOW = 3


def scale_score(score: float, low: float = -4.0, high: float = 4.0) -> float:
    """Map a lexicon score linearly from [low, high] to [-3, 3].

    SKESL §4 / KEBR §4.1: "we linearly scale the score [from -4..+4] to [-3, +3]"; for VADER
    this is score × 3/4.
    """
    mid, target_mid = (low + high) / 2, (TARGET_LOW + TARGET_HIGH) / 2
    return target_mid + (score - mid) * (TARGET_HIGH - TARGET_LOW) / (high - low)


def split_words(text: str, lexicon: Lexicon) -> list[str]:
    """Whitespace words, with consecutive words that form a multi-word lexicon entry (`fed up`) joined."""
    tokens = text.split()
    phrases = lexicon.phrases
    low = normalise(text)
    if not any(first in low for first in phrases):  # a substring test rules most texts out at C speed
        return tokens
    keys = low.split()  # NFC and lower() never add or remove whitespace
    if len(keys) != len(tokens):  # pragma: no cover - defensive
        keys = [normalise(t) for t in tokens]
    cores = [strip_punct(k) for k in keys]
    words, i = [], 0
    while i < len(tokens):
        n = 1
        for first in (keys[i], cores[i]):
            for phrase in phrases.get(first, ()):
                m = len(phrase)
                if all(j < len(tokens) and phrase[j - i] in (keys[j], cores[j]) for j in range(i, i + m)):
                    n = m
                    break
            if n > 1:
                break
        words.append(" ".join(tokens[i:i + n]))
        i += n
    return words


def stable_index(clip_id: str, n: int, seed: int = 0) -> int:
    """A uniform choice in [0, n) from the clip id: the same on every run, machine and Python."""
    digest = hashlib.sha256(f"kebr-mask:{seed}:{clip_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def is_negated(preceding: list[str]) -> bool:
    """VADER's negation test on the words just before the masked one ("not", "never", "-n't"...)."""
    return bool(preceding) and negated([normalise(w) for w in preceding])


@dataclass(frozen=True)
class Masked:
    """The mask stage's columns for one transcript (the stage-table schema)."""

    words: list[str]
    mask_index: int
    mask_word: str
    masked_text: str
    vader_score: float
    label: float
    has_sentiment_word: bool


class NoWords(ValueError):
    """The transcript has no word that could be masked."""


def mask_transcript(text: str, lexicon: Lexicon, clip_id: str, negation: bool = False, seed: int = 0) -> Masked:
    """Mask the most salient sentiment word of `text` (or a stable random word when there is none)."""
    words = split_words(text, lexicon)
    best_word, best_score = None, 0.0
    for w in dict.fromkeys(words):  # distinct words in order of first appearance: ties stay earliest
        score = lexicon.lookup(w)
        if score is not None and abs(score) > abs(best_score):
            best_word, best_score = w, score
    if best_word is not None:
        best = words.index(best_word)
        if negation and is_negated(words[max(0, best - NEGATION_WINDOW):best]):
            best_score *= N_SCALAR
        index, score, label, found = best, best_score, scale_score(best_score, lexicon.low, lexicon.high), True
    else:
        eligible = [i for i, w in enumerate(words) if any(ch.isalnum() for ch in w)]
        if not eligible:
            raise NoWords("the transcript has no word to mask")
        index, score, label, found = eligible[stable_index(clip_id, len(eligible), seed)], 0.0, 0.0, False
    word = words[index]
    lead, core, trail = split_punct(word)
    if not any(ch.isalnum() for ch in core):  # an emoticon: mask the whole token
        lead, core, trail = "", word, ""
    masked = words[:index] + [lead + MASK + trail] + words[index + 1:]
    return Masked(words, index, core, " ".join(masked), score, label, found)


def word_prob(text: str, words: list[str], index: int, asr_words: Iterable[dict]) -> float | None:
    """The ASR probability of masked word `words[index]` of `text`: the lowest probability among the
    ASR words whose characters overlap it (a multi-word entry is as sure as its least sure word).

    `words` is `split_words(text)`; `asr_words` are the asr table's `{word, prob}` entries in order,
    located in `text` one after another. None when no ASR word lines up (e.g. no word timings).
    """
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    first = sum(len(w.split()) for w in words[:index])
    last = first + len(words[index].split()) - 1
    if last >= len(spans):
        return None
    start, end = spans[first][0], spans[last][1]
    probs, cursor = [], 0
    for w in asr_words:
        token = (w.get("word") or "").strip()
        pos = text.find(token, cursor) if token else -1
        if pos < 0:
            continue
        cursor = pos + len(token)
        if pos < end and cursor > start and w.get("prob") is not None:
            probs.append(float(w["prob"]))
    return min(probs) if probs else None
