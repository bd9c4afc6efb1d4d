"""The mask stage: mask the most salient sentiment word of each transcript.

Text comes from the asr stage or from the plan's given transcript (MMSA label.csv, manifests).
Cheap and meant to be re-run with other options: `kebr-data mask` replaces `mask/` when its
options change. See `kebr_data.masking` for the rules.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from ..display import beside
from ..errors import ClipSkipped, ConfigError
from ..label_quality import prob_hist
from ..masking import Lexicon, load_lexicon
from ..masking import NoWords, mask_transcript, stable_index, word_prob
from ..schema import MASK
from ..settings import content_hash, setting
from .base import ClipInput, ClipStage, ShardContext

TEXT_SOURCES = ("asr", "given")


def resolve_text_source(section: dict[str, Any], asr_available: bool) -> dict[str, Any]:
    """The resolved `[mask]` section (before the stage is built) with `text_source = auto` made asr (when its
    outputs exist or are being made) or given."""
    if section["text_source"] != "auto":
        return section
    return {**section, "text_source": "asr" if asr_available else "given"}


@dataclass
class MaskSettings:
    """The mask stage: sentiment-word masking."""

    lexicon: str = setting("vader", "vader (vaderSentiment's bundled lexicon) | path to a word<TAB>score TSV")
    scale_from: list[float] = setting([-4.0, 4.0], "the lexicon's score range, mapped linearly onto [-3, 3]",
                                      check=lambda v: None if len(v) == 2 and v[0] < v[1] else
                                      f"must be [low, high] with low < high, got {v!r}")
    text_source: Literal["auto", "asr", "given"] = setting(
        "auto", "auto (asr when the asr stage has run, else given) | asr | given")
    negation: bool = setting(False, "a negator up to 3 words before the masked word flips its score (x -0.74, as "
                                    "VADER)")
    max_neutral_fraction: float = setting(1.0, "at most this share of no-sentiment sentences per shard; 1.0 = keep "
                                               "all", min=0.0, max=1.0)
    seed: int = setting(0, "mixed into the clip-id hash that picks the random word of neutral sentences")
    min_word_prob: float = setting(0.0, "ASR probability below which a masked sentiment word is distrusted (0 = off; "
                                        "given transcripts are exempt)", min=0.0, max=1.0)
    low_word_prob: Literal["skip", "flag"] = setting(
        "skip", "skip (status skipped, error low_word_prob) | flag (kept ok, the message says so)")


class MaskStage(ClipStage):
    """Sentiment-word masking with a lexicon, labels scaled to [-3, 3]."""

    name = "mask"
    version = "1"
    schema = MASK
    Settings = MaskSettings
    settings: MaskSettings
    extract_default = False
    report_plots = (("label", "Masked word intensity (scaled to [-3, 3])", "label", [x / 4 for x in range(-13, 14)]),)

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        if self.settings.text_source not in TEXT_SOURCES:
            raise ConfigError("mask.text_source must be resolved to asr or given before the stage runs")
        self.upstream = ("plan", "asr") if self.settings.text_source == "asr" else ("plan",)

    @property
    def lexicon(self) -> Lexicon:
        low, high = self.settings.scale_from
        return load_lexicon(self.settings.lexicon, low, high)

    def config_hash(self) -> str:
        """Includes the lexicon's content, so an edited TSV makes old masks stale."""
        return content_hash({"base": super().config_hash(), "lexicon": self.lexicon.digest})

    def check(self) -> list[str]:
        low, high = self.settings.scale_from
        try:
            load_lexicon(self.settings.lexicon, low, high)
        except Exception as exc:  # ConfigError or the missing vaderSentiment extra
            return [str(exc)]
        return []

    def versions(self) -> dict[str, str]:
        return {"lexicon": f"{self.lexicon.name} {self.lexicon.digest} ({self.lexicon.entries} entries)"}

    def input_columns(self) -> dict[str, list[str] | None]:
        return {"asr": ["clip_id", "status", "error", "text", "engine", "words"]}

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        asr = clip.upstream.get("asr")
        text = asr["text"] if asr is not None else clip.plan["given_text"]
        if text is None or not text.strip():
            raise ClipSkipped("empty_text", "the transcript is empty")
        negation, seed = self.settings.negation, self.settings.seed
        try:
            m = mask_transcript(text, self.lexicon, clip.clip_id, negation, seed)
        except NoWords as exc:
            raise ClipSkipped("no_words", str(exc)) from None
        heard = asr is not None and asr["engine"] != "given"  # given transcripts were not heard: exempt
        prob = word_prob(text, m.words, m.mask_index, asr["words"] or []) if heard else None
        row = {"text": text, "masked_text": m.masked_text, "words": m.words, "mask_index": m.mask_index,
               "mask_word": m.mask_word, "vader_score": m.vader_score, "label": m.label,
               "has_sentiment_word": m.has_sentiment_word, "lexicon": self.lexicon.name, "mask_word_prob": prob,
               "ref_label": self._ref_label(clip) if heard else None}
        min_prob = self.settings.min_word_prob
        if m.has_sentiment_word and prob is not None and prob < min_prob:
            why = (f"the sentiment word {m.mask_word!r} was heard with p={beside(prob, min_prob)} < "
                   f"mask.min_word_prob {min_prob:g}")
            if self.settings.low_word_prob == "skip":
                return {**row, "status": "skipped", "error": "low_word_prob", "message": why}
            row["message"] = f"low_word_prob: {why}"
        return row

    def _ref_label(self, clip: ClipInput) -> float | None:
        """The label the dataset's reference transcript gives, for the label-quality report (None without one)."""
        ref = clip.plan.get("given_text")
        if not ref or not ref.strip():
            return None
        try:
            return mask_transcript(ref, self.lexicon, clip.clip_id, self.settings.negation,
                                   self.settings.seed).label
        except NoWords:
            return None

    def run_shard(self, ctx: ShardContext) -> pa.Table:
        return self._cap_neutral(super().run_shard(ctx))

    def _cap_neutral(self, table: pa.Table) -> pa.Table:
        """Keep at most `max_neutral_fraction` of no-sentiment rows among the shard's ok rows.

        Which neutral rows stay is decided by a hash of the clip id, so it is deterministic.
        """
        frac = self.settings.max_neutral_fraction
        if frac >= 1.0:
            return table
        rows = table.to_pylist()
        ok = [r for r in rows if r["status"] == "ok"]
        neutral = [r for r in ok if not r["has_sentiment_word"]]
        sentiment = len(ok) - len(neutral)
        keep = int(frac * sentiment / (1.0 - frac) + 1e-9)  # neutral / (sentiment + neutral) <= frac
        ranked = sorted(neutral, key=lambda r: stable_index(r["clip_id"], 2**62, self.settings.seed))
        for r in ranked[keep:]:
            r.update(status="skipped", error="neutral_capped",
                     message=f"no sentiment word; dropped by max_neutral_fraction={frac:g}")
        return self.table(rows)

    def shard_stats(self, table: pa.Table) -> dict[str, Any]:
        ok = table.filter(pc.equal(table["status"], "ok"))
        labels = ok["label"].to_pylist()
        hist = collections.Counter(str(int(max(-3, min(3, round(x))))) for x in labels)
        sentiment = sum(ok["has_sentiment_word"].to_pylist())
        errors = table["error"].to_pylist()
        return {"ok": ok.num_rows, "sentiment": sentiment, "neutral": ok.num_rows - sentiment,
                "neutral_capped": errors.count("neutral_capped"),
                "label_hist": {k: hist.get(k, 0) for k in ("-3", "-2", "-1", "0", "1", "2", "3")},
                **label_quality_stats(table)}

    @staticmethod
    def format_stats(stats: dict[str, Any]) -> str:
        ok = stats.get("ok", 0)
        if not ok:
            return "no masked clips"
        hist = " ".join(f"{k}:{v}" for k, v in sorted(stats["label_hist"].items(), key=lambda kv: int(kv[0])))
        capped = f", {stats['neutral_capped']} neutral dropped by the cap" if stats.get("neutral_capped") else ""
        low = f"; {stats['low_word_prob']} sentiment words heard with low confidence" if stats.get("low_word_prob") \
            else ""
        ref = (f"; label agrees with the reference transcript's in {stats['ref_agree']}/{stats['ref_total']}"
               if stats.get("ref_total") else "")
        return (f"sentiment word in {stats['sentiment'] / ok:.1%} of {ok} masked clips{capped}; "
                f"rounded labels {hist}{low}{ref}")


def label_quality_stats(table: pa.Table) -> dict[str, Any]:
    """Per-shard counts for the label-quality report: masked-word probabilities of sentiment words
    (ok rows and rows the gate skipped or flagged), the gate's count, and agreement with the reference."""
    rows = table.select(["status", "error", "message", "has_sentiment_word", "mask_word_prob", "label",
                         "ref_label"]).to_pylist()
    judged = [r for r in rows if r["status"] == "ok" or r["error"] == "low_word_prob"]
    probs = [r["mask_word_prob"] for r in judged if r["has_sentiment_word"]]
    low = sum(1 for r in judged if r["error"] == "low_word_prob" or (r["message"] or "").startswith("low_word_prob"))
    refs = [r for r in judged if r["status"] == "ok" and r["ref_label"] is not None]
    return {"word_prob_hist": prob_hist(probs), "low_word_prob": low, "ref_total": len(refs),
            "ref_agree": sum(1 for r in refs if abs(r["label"] - r["ref_label"]) < 1e-6)}
