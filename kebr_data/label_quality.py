"""Label quality: how far the mask labels can be trusted when they come from ASR transcripts.

Per shard and in total, from the asr and mask markers' stats: the share of masked clips with a
sentiment word, the histogram of the masked sentiment word's ASR probability, the histogram of the
language-identification probability, the clips the `mask.min_word_prob` gate skipped or flagged,
and, where the dataset has reference transcripts, how often masking the ASR transcript gives the
same label as masking the reference. `kebr-data status` prints it; `kebr-data report` shows it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from .storage.store import Store

PROB_BINS = tuple(f"{b / 10:.1f}" for b in range(10))  # [0.0, 0.1), ..., [0.9, 1.0]


def prob_hist(values: list[float | None]) -> dict[str, int]:
    """Counts of probabilities in ten bins of width 0.1, keyed by each bin's lower edge (1.0 goes in 0.9)."""
    counts = collections.Counter(PROB_BINS[min(9, max(0, int(v * 10)))] for v in values if v is not None)
    return {k: counts.get(k, 0) for k in PROB_BINS}


@dataclass
class QualityRow:
    """One shard's (or the total's) label-quality numbers."""

    shard: str
    masked: int = 0
    sentiment: int = 0
    low_word_prob: int = 0
    ref_total: int = 0
    ref_agree: int = 0
    word_prob_hist: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROB_BINS, 0))
    language_prob_hist: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROB_BINS, 0))

    def add(self, other: QualityRow) -> None:
        for name in ("masked", "sentiment", "low_word_prob", "ref_total", "ref_agree"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("word_prob_hist", "language_prob_hist"):
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] = mine.get(k, 0) + v

    def cells(self) -> list[str]:
        """The row as text: shard, masked, sentiment share, word p, gated, language p, reference agreement."""
        share = f"{self.sentiment / self.masked:.1%}" if self.masked else "-"
        return [self.shard, str(self.masked), share, hist_text(self.word_prob_hist), str(self.low_word_prob),
                hist_text(self.language_prob_hist),
                f"{self.ref_agree}/{self.ref_total} ({self.ref_agree / self.ref_total:.0%})" if self.ref_total else "-"]


HEADERS = ["shard", "masked", "with sentiment word", "masked-word p <0.5 / 0.5-0.9 / ≥0.9", "low-p gated",
           "language p <0.5 / 0.5-0.9 / ≥0.9", "label = reference's"]


def hist_text(hist: dict[str, int]) -> str:
    """A ten-bin histogram folded into three counts: below 0.5, 0.5 to 0.9, 0.9 and above ("-" when empty)."""
    if not any(hist.values()):
        return "-"
    low = sum(v for k, v in hist.items() if float(k) < 0.5)
    high = hist.get("0.9", 0)
    return f"{low} / {sum(hist.values()) - low - high} / {high}"


def _stats(store: Store, stage: str, shard: int) -> dict[str, Any] | None:
    marker = store.marker(stage, shard)
    return marker.stats if marker is not None else None


def quality_rows(store: Store) -> list[QualityRow]:
    """One row per shard that has a done mask or asr marker, then the total; [] when neither has any."""
    rows, total = [], QualityRow("total")
    for shard in range(store.plan.num_shards):
        mask, asr = _stats(store, "mask", shard), _stats(store, "asr", shard)
        if mask is None and asr is None:
            continue
        row = QualityRow(f"{shard:05d}")
        if mask:
            row.masked, row.sentiment = mask.get("ok", 0), mask.get("sentiment", 0)
            row.low_word_prob = mask.get("low_word_prob", 0)
            row.ref_total, row.ref_agree = mask.get("ref_total", 0), mask.get("ref_agree", 0)
            row.word_prob_hist.update(mask.get("word_prob_hist", {}))
        if asr:
            row.language_prob_hist.update(asr.get("language_prob_hist", {}))
        rows.append(row)
        total.add(row)
    return [*rows, total] if rows else []
