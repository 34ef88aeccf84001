"""NER word alignment shared by training and serving: words ↔ sub-tokens ↔ character offsets, in windows.

A tagging model predicts one label per sub-token; NER labels belong to words. Training labels the FIRST
sub-token of each word and gives every other position (special tokens, continuation pieces, padding) -100, so
the loss ignores it. Inference reads each word's label from its first sub-token, then maps words back to
character spans of the original text. "First sub-token" means the first one that carries text: where a
SentencePiece tokenizer splits a word as a bare `▁` plus pieces (7-22% of MasakhaNER words with the XLM-R
vocabulary), the `▁` is the same for every word and the label goes on the piece after it.

Words are always tokenized the same way, `is_split_into_words=True`, in training (the data's words) and at
inference (the words `split_words` finds), so the model sees the same pieces in both.

Long inputs are cut into overlapping windows of at most `max_length` tokens (`stride` tokens shared between
neighbours) instead of being truncated. Each word is read from — and trained in — exactly one window: the one
where its first sub-token is most central, i.e. farthest from a cut made by windowing (text edges are not cuts).

Word splitting for raw text (`split_words`): runs of letters, marks and digits (apostrophes inside a word
kept, as in `jama'a`, `n'ime`) are words; every other visible grapheme cluster (punctuation, hyphen, symbol, an
emoji or a flag such as 🇳🇬, which is two code points) is a word of its own, as MasakhaNER tokenizes. No word
boundary ever falls inside a grapheme cluster: a word is widened to whole clusters, and words that then
meet are one. Scripts written without spaces between words (Han, kana, Thai, Lao,
Khmer, Myanmar, Tibetan, Balinese, Javanese) have no such boundaries: a run in one of them is split where the
tokenizer starts a sub-token (snapped to grapheme boundaries), or, without a tokenizer, into grapheme
clusters. For Chinese, one piece or one character per "word" is how NER data sets in it are tagged anyway.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import regex

__all__ = [
    "IGNORE_INDEX",
    "Entity",
    "Window",
    "WordEncoding",
    "decode_entities",
    "encode_text",
    "encode_words",
    "merge_windows",
    "split_words",
    "window_stride",
    "words_to_windows",
]

IGNORE_INDEX = -100
DEFAULT_STRIDE = 32
BOUNDARY_MARKERS = "\u2581\u0120 "  # SentencePiece `▁` and byte-level BPE `Ġ`: word-start marks, no text

T = TypeVar("T")

_NO_SPACE_SCRIPTS = (
    r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}\p{Balinese}\p{Javanese}"
)
_WORD_CHAR = rf"[^\s\p{{P}}\p{{S}}{_NO_SPACE_SCRIPTS}]"
_WORD_PATTERN = regex.compile(
    rf"(?P<nospace>[{_NO_SPACE_SCRIPTS}]+)"  # a run in a script without spaces: split further below
    rf"|{_WORD_CHAR}+(?:['’]{_WORD_CHAR}+)*"  # letters, marks, digits; inner apostrophes kept
    r"|(?!\s)\X"  # any other visible grapheme cluster (punctuation, symbol, emoji, flag) is a word of its own
)
_GRAPHEME = regex.compile(r"\X")
_PUNCTUATION = regex.compile(r"\p{P}+")


@dataclass(frozen=True)
class Window:
    """One model input: special tokens around a slice of a word sequence's sub-tokens.

    `word_ids[i]` is the word of token `i` (None for special tokens); `offsets[i]` its character span, in the
    text for `encode_text` and within its own word for pre-split words ((0, 0) for special tokens);
    `token_start`/`token_end` delimit the slice of the whole sub-token sequence it holds.
    """

    input_ids: list[int]
    attention_mask: list[int]
    word_ids: list[int | None]
    offsets: list[tuple[int, int]]
    token_start: int
    token_end: int


@dataclass(frozen=True)
class WordEncoding:
    """Words as windows of sub-tokens, and where each word's prediction is read.

    `owners[w]` is `(window index, token position)` of word `w`'s first sub-token in its most central window,
    or None when the tokenizer produced no token for the word (e.g. a lone control character).
    `word_spans` are the words' character spans when the encoding came from raw text.
    """

    windows: list[Window]
    owners: list[tuple[int, int] | None]
    word_spans: list[tuple[int, int]] | None = None

    @property
    def word_count(self) -> int:
        """How many words were encoded."""
        return len(self.owners)

    def labels(
        self, tags: Sequence[str], label2id: Mapping[str, int], *, skip_unknown: bool = False
    ) -> list[list[int]]:
        """Per-window label ids: each word's tag at its owner position, IGNORE_INDEX everywhere else.

        A tag missing from `label2id` is an error, or with `skip_unknown` is left as IGNORE_INDEX.
        """
        if len(tags) != self.word_count:
            raise ValueError(f"{len(tags)} tags for {self.word_count} words")
        out = [[IGNORE_INDEX] * len(w.input_ids) for w in self.windows]
        for word, owner in enumerate(self.owners):
            if owner is None:
                continue
            tag = tags[word]
            if tag not in label2id:
                if skip_unknown:
                    continue
                raise ValueError(f"tag {tag!r} of word {word} is not in the label set {sorted(label2id)}")
            window, position = owner
            out[window][position] = label2id[tag]
        return out


def _window_size(tokenizer: Any, max_length: int, stride: int | None) -> tuple[int, int]:
    """Text tokens per window (after the special tokens) and the stride: given, else min(32, a quarter window)."""
    size = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if size < 1:
        raise ValueError(f"max_length {max_length} leaves no room for text after the special tokens")
    if stride is None:
        stride = min(DEFAULT_STRIDE, size // 4)
    if not 0 <= stride < size:
        raise ValueError(f"stride must be between 0 and {size - 1} for max_length {max_length}, not {stride}")
    return size, stride


def _require_fast(tokenizer: Any) -> None:
    """Word alignment needs the offsets and word ids only fast (Rust) tokenizers give."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: load it with use_fast=True "
            "(word alignment needs word_ids() and offsets)"
        )


def window_stride(tokenizer: Any, max_length: int, stride: int | None = None) -> int:
    """The stride windows of `max_length` tokens use: `stride` if given (checked), else min(32, a quarter window)."""
    return _window_size(tokenizer, max_length, stride)[1]


def words_to_windows(
    tokenizer: Any,
    words: Sequence[str],
    max_length: int = 128,
    stride: int | None = None,
    word_spans: Sequence[tuple[int, int]] | None = None,
) -> WordEncoding:
    """Tokenize pre-split words into windows of at most `max_length` tokens, neighbours sharing `stride` tokens.

    With `word_spans`, token offsets are shifted into text coordinates (word start + offset in the word).
    """
    _require_fast(tokenizer)
    size, stride = _window_size(tokenizer, max_length, stride)
    spans = list(word_spans) if word_spans is not None else None
    if spans is not None and len(spans) != len(words):
        raise ValueError(f"{len(spans)} word spans for {len(words)} words")
    if not words:
        empty = tokenizer("", add_special_tokens=True)
        ids = list(empty["input_ids"])
        window = Window(ids, [1] * len(ids), [None] * len(ids), [(0, 0)] * len(ids), 0, 0)
        return WordEncoding([window], [], spans)

    whole = tokenizer(list(words), is_split_into_words=True, add_special_tokens=False, verbose=False)
    all_ids: list[int] = list(whole["input_ids"])
    total = len(all_ids)
    first_token = _first_tokens(whole.word_ids(), whole.tokens())

    parts = tokenizer(
        list(words),
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        verbose=False,
    )
    windows: list[Window] = []
    step = size - stride
    for k in range(len(parts["input_ids"])):
        ids = list(parts["input_ids"][k])
        special = parts["special_tokens_mask"][k]
        content = [i for i, s in zip(ids, special, strict=True) if not s]
        start = k * step
        if content != all_ids[start : start + len(content)]:
            raise RuntimeError(
                f"{type(tokenizer).__name__} cut window {k} differently from the expected {step}-token step; "
                "this tokenizer's overflow behaviour is not supported for NER windows"
            )
        word_ids = parts.word_ids(k)
        offsets = [tuple(o) for o in parts["offset_mapping"][k]]
        if spans is not None:
            offsets = [
                (spans[w][0] + a, spans[w][0] + b) if w is not None else (0, 0)
                for w, (a, b) in zip(word_ids, offsets, strict=True)
            ]
        windows.append(
            Window(
                input_ids=ids,
                attention_mask=[1] * len(ids),
                word_ids=list(word_ids),
                offsets=[(int(a), int(b)) for a, b in offsets],
                token_start=start,
                token_end=start + len(content),
            )
        )
    if not windows or windows[-1].token_end != total:
        raise RuntimeError(f"windows cover {windows[-1].token_end if windows else 0} of {total} tokens")

    owners: list[tuple[int, int] | None] = []
    for word in range(len(words)):
        if word not in first_token:
            owners.append(None)
            continue
        owners.append(_owner(windows, first_token[word], total, size, step))
    return WordEncoding(windows, owners, spans)


def _first_tokens(word_ids: Sequence[int | None], tokens: Sequence[str]) -> dict[int, int]:
    """Index of each word's first sub-token that carries text: a bare word-boundary piece (`▁`) is skipped.

    SentencePiece tokenizers often split a word as `▁` + pieces (`▁` `Ọ` `mọ`, `▁` `,`); the bare `▁` says only
    "a word starts here", the same for every word, so a label on it could not be learned from the word.
    """
    first: dict[int, int] = {}
    bare: dict[int, int] = {}
    for index, (word, token) in enumerate(zip(word_ids, tokens, strict=True)):
        if word is None or word in first:
            continue
        if token.strip(BOUNDARY_MARKERS):
            first[word] = index
        else:
            bare.setdefault(word, index)
    return bare | first  # a word made of boundary pieces only keeps its first one


def _owner(windows: Sequence[Window], token: int, total: int, size: int, step: int) -> tuple[int, int]:
    """The (window, position) where global token `token` is farthest from a windowing cut (ties: earliest).

    Window k starts at token k * step and holds at most `size`, so only the few windows around token // step are
    looked at (scanning them all made a 20,000-character text cost words × windows: 2.4 s of its 2.7 s encode).
    """
    best: tuple[float, int, int] | None = None
    first, last = max(0, (token - size) // step), min(len(windows) - 1, token // step)
    for k in range(first, last + 1):
        window = windows[k]
        if not window.token_start <= token < window.token_end:
            continue
        left = token - window.token_start if window.token_start > 0 else math.inf
        right = window.token_end - 1 - token if window.token_end < total else math.inf
        score = min(left, right)
        if best is None or score > best[0]:
            position = _position_of(window, token - window.token_start)
            best = (score, k, position)
    if best is None:  # pragma: no cover - every token lies in some window by construction
        raise RuntimeError(f"token {token} is in no window")
    return best[1], best[2]


def _position_of(window: Window, content_index: int) -> int:
    """Position in `window.input_ids` of its `content_index`-th non-special token."""
    seen = -1
    for position, word in enumerate(window.word_ids):
        if word is not None:
            seen += 1
            if seen == content_index:
                return position
    raise IndexError(f"window has no content token {content_index}")


def encode_words(
    tokenizer: Any,
    tokens: Sequence[str],
    tags: Sequence[str],
    label2id: Mapping[str, int],
    max_length: int = 128,
    stride: int | None = None,
) -> list[dict[str, list[int]]]:
    """Training inputs for one tagged sentence: per window `input_ids`, `attention_mask` and `labels`.

    Each word's tag sits on its first sub-token in the one window that owns it; all else is IGNORE_INDEX.
    A sentence longer than `max_length` tokens gives several windows rather than losing its tail.
    """
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    encoding = words_to_windows(tokenizer, tokens, max_length, stride)
    labels = encoding.labels(tags, label2id)
    return [
        {"input_ids": w.input_ids, "attention_mask": w.attention_mask, "labels": window_labels}
        for w, window_labels in zip(encoding.windows, labels, strict=True)
    ]


def split_words(text: str, tokenizer: Any | None = None) -> list[tuple[int, int]]:
    """Character spans `(start, end)` of the words of raw text (see the module notes for the rules)."""
    spans: list[tuple[int, int]] = []
    for match in _WORD_PATTERN.finditer(text):
        start, end = match.span()
        if match.group("nospace") is None:
            spans.append((start, end))
            continue
        spans.extend(_split_no_space_run(text, start, end, tokenizer))
    return _whole_graphemes(text, spans)


def _whole_graphemes(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans widened to whole grapheme clusters (`a` + an emoji modifier is one), merged where they then meet.

    Whitespace always bounds a span, so a mark that follows a space stays a word of its own.
    """
    bounds = {m.start() for m in _GRAPHEME.finditer(text)} | {len(text)}
    bounds |= {i for i, ch in enumerate(text) if ch.isspace()} | {i + 1 for i, ch in enumerate(text) if ch.isspace()}
    out: list[tuple[int, int]] = []
    for start, end in spans:
        while start not in bounds:
            start -= 1
        while end not in bounds:
            end += 1
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _split_no_space_run(text: str, start: int, end: int, tokenizer: Any | None) -> list[tuple[int, int]]:
    """Split a run of a script without spaces at sub-token starts (or graphemes), never inside a grapheme."""
    run = text[start:end]
    graphemes = [m.start() for m in _GRAPHEME.finditer(run)]
    if tokenizer is None:
        cuts = graphemes
    else:
        _require_fast(tokenizer)
        encoded = tokenizer(run, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        starts = {int(a) for a, b in encoded["offset_mapping"] if b > a}
        allowed = set(graphemes)
        cuts = sorted({0} | (starts & allowed))
    bounds = [*cuts, len(run)]
    return [(start + a, start + b) for a, b in itertools.pairwise(bounds) if b > a]


def encode_text(
    tokenizer: Any,
    text: str,
    max_length: int = 128,
    stride: int | None = None,
) -> WordEncoding:
    """Split raw text into words and encode them in windows; offsets are character spans of `text`."""
    spans = split_words(text, tokenizer)
    words = [text[a:b] for a, b in spans]
    return words_to_windows(tokenizer, words, max_length, stride, word_spans=spans)


def merge_windows(encoding: WordEncoding, window_values: Sequence[Sequence[T]], default: T) -> list[T]:
    """One value per word, read at its owner position from per-window, per-token values (e.g. logits rows).

    Words the tokenizer produced no token for get `default`.
    """
    if len(window_values) != len(encoding.windows):
        raise ValueError(f"{len(window_values)} value rows for {len(encoding.windows)} windows")
    return [default if owner is None else window_values[owner[0]][owner[1]] for owner in encoding.owners]


@dataclass(frozen=True)
class Entity:
    """A named entity in the text: its type, exact surface text, character span and score."""

    type: str
    text: str
    start: int
    end: int
    score: float


def decode_entities(
    text: str,
    word_spans: Sequence[tuple[int, int]],
    word_tags: Sequence[str],
    word_scores: Sequence[float] | None = None,
) -> list[Entity]:
    """Entities from per-word IOB2 tags; `text[e.start:e.end] == e.text` always holds.

    `B-X` starts an entity; `I-X` continues an open `X` entity. An `I-X` with no open `X` entity (at the
    start, after `O`, or after another type) starts a new `X` entity: seqeval's strict mode would not count it,
    but at inference a model's slightly-off first tag should not lose the entity. A tag with no `B-`/`I-`
    prefix is read as `I-` (the IO scheme). Punctuation tagged `O` between words of one entity, where the next
    word continues it (`I-X`), is inside the entity: the dots of `डी. सी. आई` or the hyphen of `ilé-iṣẹ́`, which
    `split_words` makes words of their own, never cut an entity the model tagged as one. The score of an entity
    is the mean of its words' scores.
    """
    if len(word_spans) != len(word_tags):
        raise ValueError(f"{len(word_spans)} word spans but {len(word_tags)} tags")
    scores = list(word_scores) if word_scores is not None else [1.0] * len(word_tags)
    if len(scores) != len(word_tags):
        raise ValueError(f"{len(scores)} scores for {len(word_tags)} tags")
    entities: list[Entity] = []
    open_type: str | None = None
    open_words: list[int] = []
    pending: list[int] = []  # punctuation tagged O after an open entity: inside it if the entity goes on

    def close() -> None:
        if open_type is not None and open_words:
            start, end = word_spans[open_words[0]][0], word_spans[open_words[-1]][1]
            score = sum(scores[i] for i in open_words) / len(open_words)
            entities.append(Entity(open_type, text[start:end], start, end, float(score)))

    for index, tag in enumerate(word_tags):
        start, end = word_spans[index]
        if not 0 <= start <= end <= len(text):
            raise ValueError(f"word span {(start, end)} is outside the text of length {len(text)}")
        if tag == "O":
            if open_type is not None and _PUNCTUATION.fullmatch(text, start, end):
                pending.append(index)
                continue
            close()
            open_type, open_words, pending = None, [], []
            continue
        prefix, entity_type = (tag[:2], tag[2:]) if tag[:2] in ("B-", "I-") else ("I-", tag)
        if prefix == "B-" or entity_type != open_type:
            close()
            open_type, open_words = entity_type, [index]
        else:
            open_words += [*pending, index]
        pending = []
    close()
    return entities
