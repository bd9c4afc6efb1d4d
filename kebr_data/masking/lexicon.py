"""Sentiment lexicons for the mask stage: VADER's bundled `vader_lexicon.txt`, or any `word<TAB>score` TSV.

Entries are read by splitting on tabs only, so entries with spaces (`can't stand`, `fed up`),
parentheses and emoticons (`( '}{' )`, `:-(`) load intact; a duplicated entry keeps its last value,
as VADER itself does. Multi-word entries are matched over consecutive words.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..deps import require
from ..errors import ConfigError

#: characters folded before lookup, so a typographic apostrophe matches the lexicon's ASCII one
_FOLD = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'"})


def normalise(token: str) -> str:
    """NFC, folded apostrophes, lower case: the form lexicon keys are compared in."""
    return unicodedata.normalize("NFC", token).translate(_FOLD).lower()


@functools.lru_cache(maxsize=1)
def punctuation() -> str:
    """Every Unicode punctuation character of the BMP, plus ASCII symbols VADER strips (for str.strip)."""
    return "".join(ch for ch in map(chr, range(0x10000)) if unicodedata.category(ch)[0] == "P") + "`^|~<>=+$"


def strip_punct(token: str) -> str:
    """`token` without surrounding punctuation."""
    return token.strip(punctuation())


def split_punct(token: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation) of a whitespace token."""
    p = punctuation()
    start = len(token) - len(token.lstrip(p))
    core = token[start:].rstrip(p)
    return token[:start], core, token[start + len(core):]


@dataclass(frozen=True)
class Lexicon:
    """word -> score, plus multi-word entries keyed by their first word."""

    name: str
    scores: dict[str, float]
    low: float
    high: float
    #: first normalised word -> tuples of normalised words of the multi-word entries starting with it
    phrases: dict[str, tuple[tuple[str, ...], ...]]
    digest: str
    #: distinct entries in the file (VADER: 7,506)
    entries: int

    def lookup(self, word: str) -> float | None:
        """Score of one word: exact entry (emoticons like `:D`), lower-cased, then without surrounding
        punctuation; a hyphenated word not in the lexicon is tried without its hyphens, then takes
        its strongest part's score (`well-loved` -> `loved`)."""
        key = normalise(word)
        return self.lookup_keys(word, key, strip_punct(key))

    def lookup_keys(self, word: str, key: str, core: str) -> float | None:
        """`lookup` with the normalised form and its punctuation-free core already computed."""
        scores = self.scores
        if word in scores:
            return scores[word]
        if key in scores:
            return scores[key]
        if core in scores:
            return scores[core]
        if "-" not in core:
            return None
        if core.replace("-", "") in scores:  # heart-breaking -> heartbreaking
            return scores[core.replace("-", "")]
        parts = [scores[p] for p in core.split("-") if p in scores]
        if parts:
            return max(parts, key=abs)
        return None


def _parse(name: str, text: str, low: float, high: float, vader_format: bool) -> Lexicon:
    scores: dict[str, float] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ConfigError(f"lexicon {name} line {line_no}: expected word<TAB>score, got {line!r}")
        word = fields[0] if vader_format else fields[0].strip()
        try:
            score = float(fields[1])
        except ValueError:
            raise ConfigError(f"lexicon {name} line {line_no}: score {fields[1]!r} is not a number") from None
        if not low <= score <= high:
            raise ConfigError(f"lexicon {name} line {line_no}: score {score} of {word!r} is outside the declared "
                              f"range [{low:g}, {high:g}] (set --scale-from)")
        scores[word] = score  # last one wins, as in VADER
    lowered = {normalise(k): v for k, v in scores.items()}
    merged = {**lowered, **scores}
    phrases: dict[str, list[tuple[str, ...]]] = {}
    for key in scores:
        parts = tuple(normalise(key).split())
        if len(parts) > 1:
            phrases.setdefault(parts[0], []).append(parts)
    return Lexicon(name, merged, low, high,
                   {k: tuple(sorted(v, key=len, reverse=True)) for k, v in phrases.items()},
                   hashlib.sha256(text.encode()).hexdigest()[:16], len(scores))


def vader_lexicon_path() -> Path:
    """The `vader_lexicon.txt` that ships inside the vaderSentiment package."""
    module = require("vaderSentiment", None, "the vader lexicon", "vaderSentiment>=3.3")
    return Path(module.__file__).resolve().parent / "vader_lexicon.txt"


@functools.lru_cache(maxsize=8)
def load_lexicon(spec: str, low: float = -4.0, high: float = 4.0) -> Lexicon:
    """`vader` or the path of a TSV lexicon whose scores lie in [low, high]; cached per process."""
    if low >= high:
        raise ConfigError(f"scale-from range [{low:g}, {high:g}] is empty")
    if spec == "vader":
        path = vader_lexicon_path()
        return _parse("vader", path.read_text(encoding="utf-8"), low, high, vader_format=True)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"lexicon {spec!r} is neither 'vader' nor an existing TSV file (word<TAB>score)")
    return _parse(f"tsv:{path.name}", path.read_text(encoding="utf-8"), low, high, vader_format=False)
