"""NER word alignment: first-sub-token labels, windows for long inputs, and exact character offsets back."""

from __future__ import annotations

import itertools
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langadapt.models.alignment import (
    IGNORE_INDEX,
    Entity,
    decode_entities,
    encode_text,
    encode_words,
    merge_windows,
    split_words,
    words_to_windows,
)

LABEL2ID = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}


@pytest.fixture(scope="module")
def unigram(tiny_xlmr_dir: Path) -> Any:
    """The tiny XLM-R-style (SentencePiece unigram, Metaspace) fast tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_xlmr_dir)


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny BERT-style WordPiece fast tokenizer (`##` continuation pieces, [CLS] … [SEP])."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    from conftest import synthetic_corpus

    trainer = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    trainer.train_from_iterator(synthetic_corpus(), vocab_size=300, show_progress=False)
    out = tmp_path_factory.mktemp("wordpiece")
    trainer.save_model(str(out))
    return BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=False, strip_accents=False)


@pytest.fixture(params=["unigram", "wordpiece"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    """Each tokenizer family in turn."""
    return request.getfixturevalue(request.param)


def first_token_positions(word_ids: list[int | None], tokens: list[str]) -> dict[int, int]:
    """Position of each word's first token that carries text (a bare `▁` boundary piece does not)."""
    seen: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in seen and tokens[position] != "▁":
            seen[word] = position
    return seen


def test_only_the_first_sub_token_of_each_word_is_labelled(tokenizer: Any) -> None:
    words = ["Adébáyọ̀", "ń", "ṣiṣẹ́", "ní", "Abuja", ",", "Ọmọ", "."]
    tags = ["B-PER", "O", "O", "O", "B-LOC", "O", "O", "O"]
    (window,) = encode_words(tokenizer, words, tags, LABEL2ID, max_length=64)
    ids, labels = window["input_ids"], window["labels"]
    encoding = tokenizer(words, is_split_into_words=True)
    assert ids == encoding["input_ids"]
    word_ids, tokens = encoding.word_ids(), encoding.tokens()
    firsts = first_token_positions(word_ids, tokens)
    assert sorted(firsts) == list(range(len(words)))
    assert len(ids) > len(words) + 2  # some words really are split into several pieces
    for position, label in enumerate(labels):
        word = word_ids[position]
        if word is not None and firsts[word] == position:
            assert label == LABEL2ID[tags[word]]
        else:
            assert label == IGNORE_INDEX  # special tokens, continuation pieces, bare `▁` boundary pieces
    assert window["attention_mask"] == [1] * len(ids)


def test_a_bare_boundary_piece_never_carries_the_label(unigram: Any) -> None:
    words = ["Ọmọ", ",", "Èkó"]
    encoding = unigram(words, is_split_into_words=True)
    tokens = encoding.tokens()
    assert tokens[1] == "▁"  # this tokenizer splits `Ọmọ` as `▁` `Ọ` ...
    (window,) = encode_words(unigram, words, ["O", "O", "B-LOC"], LABEL2ID)
    assert window["labels"][1] == IGNORE_INDEX
    assert window["labels"][2] == LABEL2ID["O"]
    assert all(tokens[i] != "▁" for i, label in enumerate(window["labels"]) if label != IGNORE_INDEX)


def test_a_long_sentence_becomes_windows_and_every_word_is_labelled_once(tokenizer: Any) -> None:
    words = [w for s in ["Adébáyọ̀ lọ sí Èkó lánàá .", "Musa ya tafi Kano jiya ."] * 8 for w in s.split()]
    tags = ["B-PER" if w in ("Adébáyọ̀", "Musa") else "B-LOC" if w in ("Èkó", "Kano") else "O" for w in words]
    windows = encode_words(tokenizer, words, tags, LABEL2ID, max_length=16, stride=4)
    assert len(windows) > 3
    assert all(len(w["input_ids"]) <= 16 for w in windows)
    labelled = [label for w in windows for label in w["labels"] if label != IGNORE_INDEX]
    assert labelled == [LABEL2ID[t] for t in tags]  # each word once, in order: nothing truncated


def test_unknown_tags_are_an_error_or_skipped(unigram: Any) -> None:
    encoding = words_to_windows(unigram, ["Musa", "Kano"])
    with pytest.raises(ValueError, match="B-ORG"):
        encoding.labels(["B-ORG", "O"], LABEL2ID)
    labels = encoding.labels(["B-ORG", "O"], LABEL2ID, skip_unknown=True)
    assert sorted(set(labels[0])) == [IGNORE_INDEX, 0]


def test_split_words_keeps_diacritics_apostrophes_and_splits_punctuation() -> None:
    text = "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba, jama'a n’ime (Abuja)."
    words = [text[a:b] for a, b in split_words(text)]
    assert words == [
        "Adébáyọ̀",
        "ń",
        "ṣiṣẹ́",
        "ní",
        "ilé",
        "-",
        "iṣẹ́",
        "ìjọba",
        ",",
        "jama'a",
        "n’ime",
        "(",
        "Abuja",
        ")",
        ".",
    ]
    decomposed = unicodedata.normalize("NFD", "Adébáyọ̀ ṣiṣẹ́")
    assert [decomposed[a:b] for a, b in split_words(decomposed)] == decomposed.split()


def test_split_words_never_splits_a_grapheme_cluster() -> None:
    """A flag is two code points, a thumbs-up with a skin tone two, a family five: each is one word."""
    text = "Mo wa ni 🇳🇬 loni 👍🏽 👨‍👩‍👧! a🏽b"
    words = [text[a:b] for a, b in split_words(text)]
    assert words == ["Mo", "wa", "ni", "🇳🇬", "loni", "👍🏽", "👨‍👩‍👧", "!", "a🏽", "b"]


def test_split_words_on_scripts_without_spaces(unigram: Any) -> None:
    text = "今天天气很好 in Lagos น้ำภาษาไทย"
    by_graphemes = [text[a:b] for a, b in split_words(text)]
    assert by_graphemes[:6] == list("今天天气很好")
    assert by_graphemes[6:8] == ["in", "Lagos"]
    assert "".join(by_graphemes[8:]) == "น้ำภาษาไทย"
    assert by_graphemes[8] == "น้ำ"  # tone mark and vowel sign stay on their consonant: one grapheme
    assert all(unicodedata.category(w[0]) != "Mn" for w in by_graphemes)

    by_pieces = split_words(text, unigram)
    assert "".join(text[a:b] for a, b in by_pieces) == text.replace(" ", "")
    pieces = [text[a:b] for a, b in by_pieces]
    assert "Lagos" in pieces
    assert all(unicodedata.category(w[0]) != "Mn" for w in pieces)
    encoded = unigram("今天天气很好", add_special_tokens=False, return_offsets_mapping=True)
    starts = sorted({a for a, b in encoded["offset_mapping"] if b > a} | {0})
    assert [a for a, _ in by_pieces if a < 6] == starts  # one word per sub-token start


def test_encode_text_offsets_point_into_the_text(tokenizer: Any) -> None:
    text = "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja."
    encoding = encode_text(tokenizer, text, max_length=64)
    assert encoding.word_spans is not None
    (window,) = encoding.windows
    for position, word in enumerate(window.word_ids):
        if word is None:
            continue
        start, end = window.offsets[position]
        w_start, w_end = encoding.word_spans[word]
        assert w_start <= start <= end <= w_end
    for word, owner in enumerate(encoding.owners):
        assert owner is not None
        assert window.offsets[owner[1]][0] == encoding.word_spans[word][0]  # read at the word's first piece


def test_long_text_windows_read_each_word_from_its_most_central_window(tokenizer: Any) -> None:
    text = " ".join(["Adébáyọ̀ ń ṣiṣẹ́ ní Abuja, Musa ya tafi Kano jiya."] * 6)
    encoding = encode_text(tokenizer, text, max_length=24, stride=8)
    assert encoding.word_spans is not None
    assert len(encoding.windows) > 4
    # Each window reports, per token, its word id; merging must give back each word's own index.
    merged = merge_windows(encoding, [w.word_ids for w in encoding.windows], default=None)
    assert merged == list(range(len(encoding.word_spans)))
    total = encoding.windows[-1].token_end
    for word, owner in enumerate(encoding.owners):
        assert owner is not None
        chosen, position = owner
        window = encoding.windows[chosen]
        token = window.token_start + sum(1 for w in window.word_ids[:position] if w is not None)

        def centrality(win: Any, tok: int = token) -> float:
            left = tok - win.token_start if win.token_start > 0 else float("inf")
            right = win.token_end - 1 - tok if win.token_end < total else float("inf")
            return min(left, right)

        holders = [k for k, w in enumerate(encoding.windows) if w.token_start <= token < w.token_end]
        best = max(centrality(encoding.windows[k]) for k in holders)
        assert chosen == min(k for k in holders if centrality(encoding.windows[k]) == best)  # ties: the earliest
        assert window.offsets[position][0] == encoding.word_spans[word][0]


def test_decode_entities_round_trips_to_character_offsets(unigram: Any) -> None:
    text = "Ọmọ Adébáyọ̀ Musa lọ sí ilé-ìwé ní Èkó"  # the last entity ends the text
    spans = split_words(text, unigram)
    words = [text[a:b] for a, b in spans]
    tags = ["O", "B-PER", "I-PER", "O", "O", "O", "O", "O", "O", "B-LOC"]
    assert len(words) == len(tags)
    scores = [0.5, 0.9, 0.7, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.8]
    entities = decode_entities(text, spans, tags, scores)
    assert entities == [
        Entity("PER", "Adébáyọ̀ Musa", 4, 4 + len("Adébáyọ̀ Musa"), pytest.approx(0.8)),
        Entity("LOC", "Èkó", len(text) - 3, len(text), 0.8),
    ]
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text


def test_decode_entities_iob2_edge_cases() -> None:
    text = "a b c d e"
    spans = split_words(text)

    def types(tags: list[str]) -> list[tuple[str, str]]:
        return [(e.type, e.text) for e in decode_entities(text, spans, tags)]

    # An I- with no open entity of its type starts one (seqeval strict would not count it).
    assert types(["I-PER", "I-PER", "O", "I-LOC", "O"]) == [("PER", "a b"), ("LOC", "d")]
    # B- always starts a new entity; a type change splits.
    assert types(["B-PER", "B-PER", "I-LOC", "I-LOC", "I-PER"]) == [
        ("PER", "a"),
        ("PER", "b"),
        ("LOC", "c d"),
        ("PER", "e"),
    ]
    # Tags without a prefix read as the IO scheme.
    assert types(["PER", "PER", "O", "LOC", "O"]) == [("PER", "a b"), ("LOC", "d")]
    assert decode_entities(text, spans, ["O"] * 5) == []
    with pytest.raises(ValueError, match="tags"):
        decode_entities(text, spans, ["O"])


def test_an_entity_tagged_as_one_keeps_its_inner_punctuation() -> None:
    """Dotted Devanagari initials are words and dots apart; dots the model tags O stay inside the entity."""
    text = "डी. सी. सी. आई. ने कहा"
    spans = split_words(text)
    assert [text[a:b] for a, b in spans] == ["डी", ".", "सी", ".", "सी", ".", "आई", ".", "ने", "कहा"]
    for first in ("B-ORG", "I-ORG"):
        tags = [first, "O", "I-ORG", "O", "I-ORG", "O", "I-ORG", "O", "O", "O"]
        assert [(e.type, e.text) for e in decode_entities(text, spans, tags)] == [("ORG", "डी. सी. सी. आई")]
    # The model's own boundaries still count: a B- after the dot, or a word tagged O, ends the entity.
    tags = ["B-ORG", "O", "B-ORG", "O", "O", "O", "I-ORG", "O", "O", "O"]
    assert [e.text for e in decode_entities(text, spans, tags)] == ["डी", "सी", "आई"]
    hyphen = "ní ilé-iṣẹ́ Dangote"
    spans = split_words(hyphen)
    tags = ["O", "B-ORG", "O", "I-ORG", "I-ORG"]
    assert [e.text for e in decode_entities(hyphen, spans, tags)] == ["ilé-iṣẹ́ Dangote"]


def test_a_flag_is_one_entity() -> None:
    text = "Mo wa ni 🇳🇬 loni"
    spans = split_words(text)
    entities = decode_entities(text, spans, ["O", "O", "O", "B-LOC", "O"])
    assert [(e.type, e.text, e.start, e.end) for e in entities] == [("LOC", "🇳🇬", 9, 11)]


def test_empty_input_still_gives_a_model_input(unigram: Any) -> None:
    encoding = encode_text(unigram, "   ", max_length=16)
    assert encoding.owners == []
    assert len(encoding.windows) == 1
    assert encoding.windows[0].input_ids  # the special tokens alone
    assert decode_entities("   ", [], []) == []


TEXT_ALPHABET = st.sampled_from(
    list("abcxyzÀéọ̀ṣ́ǹ")
    + list("今天气好公园")
    + list("ภาษาไทย")
    + list("ሰላምእንዴት")
    + list(" ,.-'’()!?\t")
    + ["\u200b", "1", "2", "🇳", "🇬", "👍", "🏽", "\u200d", "ड", "ी", "ि"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(TEXT_ALPHABET, max_size=60), data=st.data())
def test_spans_and_entities_always_match_the_text(unigram: Any, text: str, data: st.DataObject) -> None:
    for tokenizer in (None, unigram):
        spans = split_words(text, tokenizer)
        assert all(0 <= a < b <= len(text) for a, b in spans)
        assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(spans))  # ordered, disjoint
        covered = {i for a, b in spans for i in range(a, b)}
        assert covered == {i for i, ch in enumerate(text) if not ch.isspace()}  # every visible character
        clusters = {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}
        spaces = {i for i, ch in enumerate(text) if ch.isspace()}
        for a, b in spans:  # no span starts or ends inside a grapheme cluster (a mark on a space aside)
            assert a in clusters or a - 1 in spaces, (text, a)
            assert b in clusters or b in spaces, (text, b)
        tags = data.draw(
            st.lists(st.sampled_from(["O", "B-PER", "I-PER", "I-LOC"]), min_size=len(spans), max_size=len(spans))
        )
        for entity in decode_entities(text, spans, tags):
            assert text[entity.start : entity.end] == entity.text
            assert entity.text.strip() == entity.text
    encoding = encode_text(unigram, text, max_length=12, stride=3)
    assert all(len(w.input_ids) <= 12 for w in encoding.windows)
    assert encoding.word_spans == split_words(text, unigram)
