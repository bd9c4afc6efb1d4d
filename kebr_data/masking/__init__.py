"""Sentiment-word masking: the lexicons (`lexicon.py`: VADER's, or a TSV of word and score) and the
masking rules over one transcript (`rules.py`), as pure functions the mask stage calls."""

from .lexicon import Lexicon, load_lexicon
from .rules import MASK, Masked, NoWords, mask_transcript, scale_score, split_words, stable_index, word_prob

__all__ = ["MASK", "Lexicon", "Masked", "NoWords", "load_lexicon", "mask_transcript", "scale_score",
           "split_words", "stable_index", "word_prob"]
