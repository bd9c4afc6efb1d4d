"""Sentiment-word masking: hand-computed cases for every rule, properties, and the whole VADER lexicon."""

import hashlib
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kebr_data.errors import ConfigError
from kebr_data.masking import load_lexicon
from kebr_data.masking import MASK, NoWords, mask_transcript, scale_score, split_words, stable_index, word_prob


@pytest.fixture(scope="module")
def vader():
    return load_lexicon("vader")


def tsv(tmp_path, text, name="lex.tsv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --- scaling [-4, 4] -> [-3, 3] (SKESL §4, KEBR §4.1) ------------------------------------------

@pytest.mark.parametrize("score,label", [(4.0, 3.0), (-4.0, -3.0), (0.0, 0.0), (3.2, 2.4), (-3.9, -2.925),
                                         (2.7, 2.025), (-1.8, -1.35)])
def test_vader_scaling_is_three_quarters(score, label):
    assert scale_score(score) == pytest.approx(label, abs=1e-12)


@pytest.mark.parametrize("score,label", [(0.0, -3.0), (10.0, 3.0), (5.0, 0.0), (7.5, 1.5), (2.5, -1.5)])
def test_other_declared_range(score, label):
    assert scale_score(score, 0.0, 10.0) == pytest.approx(label, abs=1e-12)


# --- the VADER lexicon, whole --------------------------------------------------------------------

def test_vader_lexicon_loads_every_entry(vader):
    assert vader.entries == 7506
    assert vader.scores["( '}{' )"] == 1.6  # spaces, quotes, braces and parentheses in one entry
    assert vader.scores["can't stand"] == -2.0 and vader.scores["fed up"] == -1.8
    assert vader.scores[":D"] == 2.3 and vader.scores["(-:O"] == 1.5
    assert vader.scores["lol"] == 1.8  # listed twice (2.9 then 1.8): the last wins, as in VADER
    assert min(vader.scores.values()) == -3.9 and max(vader.scores.values()) == 3.4


# --- choosing the word ---------------------------------------------------------------------------

def test_largest_absolute_valence_wins(vader):
    m = mask_transcript("I love this wonderful movie, it made me so happy.", vader, "c")
    assert (m.mask_index, m.mask_word, m.vader_score) == (1, "love", 3.2)
    assert m.label == pytest.approx(2.4) and m.has_sentiment_word
    assert m.masked_text == "I [MASK] this wonderful movie, it made me so happy."


def test_negative_word_beats_weaker_positive(vader):
    m = mask_transcript("a good but sad day", vader, "c")  # good 1.9, sad -2.1
    assert (m.mask_word, m.label) == ("sad", pytest.approx(-1.575))


def test_ties_go_to_the_earliest_word(tmp_path):
    lex = load_lexicon(str(tsv(tmp_path, "up\t2\ndown\t-2\n")))
    assert mask_transcript("down and up", lex, "c").mask_index == 0
    assert mask_transcript("up and down", lex, "c").mask_index == 0
    assert mask_transcript("x up up", lex, "c").mask_index == 1


def test_punctuation_is_stripped_for_lookup_and_kept_in_the_text(vader):
    m = mask_transcript("Great!!! (wonderful)", vader, "c")
    assert (m.mask_word, m.masked_text) == ("Great", "[MASK]!!! (wonderful)")
    m = mask_transcript("it was (wonderful).", vader, "c")
    assert (m.mask_word, m.masked_text, m.words) == ("wonderful", "it was ([MASK]).", ["it", "was", "(wonderful)."])


def test_case_and_apostrophes(tmp_path):
    lex = load_lexicon(str(tsv(tmp_path, "don't\t-1.0\nit's\t0.5\n")))
    m = mask_transcript("I DON’T know", lex, "c")  # typographic apostrophe, upper case
    assert (m.mask_index, m.mask_word, m.vader_score) == (1, "DON’T", -1.0)
    assert mask_transcript("It's fine", lex, "c").vader_score == 0.5


def test_unicode_normal_forms_match(tmp_path):
    lex = load_lexicon(str(tsv(tmp_path, "café\t2.0\n")))
    decomposed = unicodedata.normalize("NFD", "Le café!")
    m = mask_transcript(decomposed, lex, "c")
    assert m.vader_score == 2.0 and m.masked_text == "Le [MASK]!"


def test_hyphenated_words(vader):
    m = mask_transcript("a heart-breaking story", vader, "c")  # tried without hyphen: heartbreaking -2.0
    assert (m.mask_word, m.vader_score) == ("heart-breaking", -2.0)
    m = mask_transcript("a well-loved song", vader, "c")  # strongest part: loved 2.9
    assert (m.mask_word, m.vader_score) == ("well-loved", 2.9)
    assert mask_transcript("self-confident people", vader, "c").vader_score == vader.scores["self-confident"]


def test_multi_word_entries_become_one_masked_word(vader):
    m = mask_transcript("I am fed up, really.", vader, "c")
    assert m.words == ["I", "am", "fed up,", "really."]
    assert (m.mask_index, m.mask_word, m.masked_text) == (2, "fed up", "I am [MASK], really.")
    assert m.label == pytest.approx(-1.35)
    m = mask_transcript("I Can't Stand it", vader, "c")
    assert (m.mask_word, m.vader_score, m.masked_text) == ("Can't Stand", -2.0, "I [MASK] it")


def test_emoticons(vader):
    m = mask_transcript("nice day :)", vader, "c")  # nice 1.8 < :) 2.0
    assert (m.mask_word, m.masked_text, m.vader_score) == (":)", "nice day [MASK]", 2.0)
    m = mask_transcript("so :D", vader, "c")  # exact, case-sensitive entry
    assert m.vader_score == 2.3
    m = mask_transcript("it is ( '}{' ) ok", vader, "c")
    assert (m.mask_word, m.vader_score) == ("( '}{' )", 1.6)


# --- no sentiment word ---------------------------------------------------------------------------

def expected_index(clip_id, n, seed=0):
    return int.from_bytes(hashlib.sha256(f"kebr-mask:{seed}:{clip_id}".encode()).digest()[:8], "big") % n


def test_neutral_sentence_masks_a_stable_random_word(vader):
    text = "The meeting starts at noon."
    m = mask_transcript(text, vader, "idA/yt/00001")
    assert not m.has_sentiment_word and m.label == 0.0 and m.vader_score == 0.0
    assert m.mask_index == expected_index("idA/yt/00001", 5)
    assert mask_transcript(text, vader, "idA/yt/00001") == m
    picks = {mask_transcript(text, vader, f"clip{i}").mask_index for i in range(60)}
    assert picks == {0, 1, 2, 3, 4}  # every word can be drawn


def test_neutral_choice_skips_punctuation_only_tokens(vader):
    m = mask_transcript("-- the -- table --", vader, "c")
    assert m.words[m.mask_index] in ("the", "table")


def test_no_words_at_all(vader):
    with pytest.raises(NoWords):
        mask_transcript("... -- ...", vader, "c")
    assert split_words("   ", vader) == []


def test_stable_index_matches_its_definition():
    assert stable_index("x", 7) == expected_index("x", 7)
    assert stable_index("x", 7, seed=3) == expected_index("x", 7, 3)


# --- negation (off by default) --------------------------------------------------------------------

def test_negation_flips_as_vader_does(vader):
    assert mask_transcript("I am not happy", vader, "c").label == pytest.approx(2.025)
    m = mask_transcript("I am not happy", vader, "c", negation=True)
    assert m.vader_score == pytest.approx(2.7 * -0.74) and m.label == pytest.approx(-1.4985)
    assert mask_transcript("it isn't good", vader, "c", negation=True).vader_score == pytest.approx(-1.406)
    far = mask_transcript("not that it is so happy", vader, "c", negation=True)  # 4 words back: no flip
    assert far.vader_score == 2.7


# --- TSV lexicons ---------------------------------------------------------------------------------

def test_tsv_scores_outside_the_declared_range_fail(tmp_path):
    with pytest.raises(ConfigError, match="outside the declared range"):
        load_lexicon(str(tsv(tmp_path, "wow\t5\n", "a.tsv")))
    lex = load_lexicon(str(tsv(tmp_path, "wow\t5\n", "a.tsv")), 0.0, 5.0)
    assert mask_transcript("wow", lex, "c").label == 3.0


def test_tsv_errors_name_the_line(tmp_path):
    with pytest.raises(ConfigError, match="line 2: score 'x'"):
        load_lexicon(str(tsv(tmp_path, "a\t1\nb\tx\n", "b.tsv")))
    with pytest.raises(ConfigError, match="neither 'vader' nor an existing TSV"):
        load_lexicon("/no/such.tsv")


# --- properties ----------------------------------------------------------------------------------

WORDS = ["love", "hate", "Great!", "the", "table", "not", "fed", "up", "can't", "stand", ":)", "--", "é", "ok,",
         "well-loved", "heart-breaking", "(sad)", "DON'T", "x"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=6).filter(lambda s: "[" not in s)),
                min_size=1, max_size=40), st.text(max_size=20), st.booleans())
def test_properties(vader, tokens, clip_id, negation):
    text = " ".join(tokens)
    try:
        m = mask_transcript(text, vader, clip_id, negation=negation)
    except NoWords:
        assert not any(ch.isalnum() for ch in text) or not text.split()
        return
    assert -3.0 <= m.label <= 3.0
    assert 0 <= m.mask_index < len(m.words)
    assert m.mask_word in m.words[m.mask_index]
    assert m.masked_text.count(MASK) == 1
    assert " ".join(m.words) == " ".join(text.split())
    assert m.has_sentiment_word == (m.vader_score != 0.0)
    assert mask_transcript(text, vader, clip_id, negation=negation) == m


def asr_words(*pairs):
    return [{"word": w, "start": 0.0, "end": 0.0, "prob": p} for w, p in pairs]


def test_word_prob_is_the_asr_probability_of_the_masked_word(vader):
    text = "It was a complete disaster, and I hated it."
    m = mask_transcript(text, vader, "c")
    assert m.mask_word == "hated"  # -3.2 beats disaster's -3.1
    heard = asr_words(("It", 0.4), ("was", 0.9), ("a", 0.95), ("complete", 0.98), ("disaster,", 0.81),
                      ("and", 0.74), ("I", 0.99), ("hated", 0.67), ("it.", 1.0))
    assert word_prob(text, m.words, m.mask_index, heard) == pytest.approx(0.67)
    assert word_prob(text, m.words, 4, heard) == pytest.approx(0.81)  # "disaster," with its comma


def test_word_prob_of_a_multi_word_entry_is_its_least_sure_word(vader):
    text = "I am fed up today"
    m = mask_transcript(text, vader, "c")
    assert m.words[m.mask_index] == "fed up"
    heard = asr_words(("I", 0.9), ("am", 0.8), ("fed", 0.7), ("up", 0.4), ("today", 0.95))
    assert word_prob(text, m.words, m.mask_index, heard) == pytest.approx(0.4)


def test_word_prob_skips_asr_words_that_do_not_line_up():
    words = ["we", "love", "it"]
    # the ASR word list disagrees with the text in one place: "luv" is not in the text and is skipped
    heard = asr_words(("we", 0.9), ("luv", 0.1), ("love", 0.6), ("it", 0.8))
    assert word_prob("we love it", words, 1, heard) == pytest.approx(0.6)
    assert word_prob("we love it", words, 1, []) is None  # no word timings: unknown, not zero
    # a short ASR word found inside a longer text word still belongs to that word's span only
    assert word_prob("a lovely day", ["a", "lovely", "day"], 1, asr_words(("a", 0.9), ("lovely", 0.3),
                                                                             ("day", 0.7))) == pytest.approx(0.3)
