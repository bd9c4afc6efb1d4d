"""Speed of sentiment-word masking per transcript, next to one VADER `polarity_scores` pass.

Transcripts are drawn from the VADER lexicon's words and common filler words, at the lengths a
VoxCeleb utterance has (8-40 words) and far beyond (200 and 2,000 words).

    python bench/mask.py
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from kebr_data.masking import load_lexicon  # noqa: E402
from kebr_data.masking import mask_transcript  # noqa: E402

FILLER = "the a and to of in it is that i you was for on with as this be at we so they have but not".split()


def corpus(lexicon_words: list[str], length: int, n: int, rng: random.Random) -> list[str]:
    texts = []
    for _ in range(n):
        words = [rng.choice(lexicon_words) if rng.random() < 0.08 else rng.choice(FILLER) for _ in range(length)]
        texts.append(" ".join(words).capitalize() + ".")
    return texts


def per_text(fn, texts: list[str], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i, t in enumerate(texts):
            fn(t, i)
        best = min(best, (time.perf_counter() - t0) / len(texts))
    return best


def main() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    lex = load_lexicon("vader")
    words = [w for w in lex.scores if w.isalpha()]
    analyzer = SentimentIntensityAnalyzer()
    rng = random.Random(0)
    lines = ["| words per transcript | transcripts | mask µs/clip | VADER polarity_scores µs/clip | ratio |",
             "|---:|---:|---:|---:|---:|"]
    for length, n in ((8, 4000), (20, 4000), (40, 2000), (200, 500), (2000, 50)):
        texts = corpus(words, length, n, rng)
        ours = per_text(lambda t, i: mask_transcript(t, lex, f"clip{i}"), texts)
        peer = per_text(lambda t, i: analyzer.polarity_scores(t), texts)
        lines.append(f"| {length} | {n} | {ours * 1e6:.1f} | {peer * 1e6:.1f} | {peer / ours:.1f}× faster |")
    text = ("One core, best of 3. Masking looks every word up once (plus multi-word entries); a VADER "
            "pass over the same text is the natural yardstick.\n\n" + "\n".join(lines))
    write_section("mask", "Mask stage: time per transcript", text)


if __name__ == "__main__":
    main()
