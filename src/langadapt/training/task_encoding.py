"""Task examples as the model reads them: token ids of texts, windows of tagged words, and padded batches."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langadapt.models.alignment import IGNORE_INDEX, WordEncoding, encode_words, words_to_windows

if TYPE_CHECKING:
    import torch

__all__ = [
    "EncodedClassification",
    "EncodedTagging",
    "batch_inputs",
    "collate_rows",
    "encode_classification",
    "encode_split",
    "encode_tagging",
    "pad_rows",
    "training_rows",
]


@dataclass
class EncodedClassification:
    """Token ids of classification texts with their gold labels (and label ids, -100 where unknown)."""

    ids: list[list[int]]
    gold: list[str]
    gold_ids: list[int]
    truncated: int


@dataclass
class EncodedTagging:
    """Windows of tagged sentences with their gold tags (and per-window label ids, -100 where unknown)."""

    encodings: list[WordEncoding]
    gold: list[list[str]]
    gold_ids: list[list[list[int]]]
    windows: int


def encode_classification(
    tokenizer: Any, texts: Sequence[str], labels: Sequence[str], max_length: int, label2id: Mapping[str, int]
) -> EncodedClassification:
    """Token ids truncated to `max_length`, counting the texts that were cut."""
    if not texts:
        return EncodedClassification([], [], [], 0)
    full = tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]
    cut = tokenizer(list(texts), truncation=True, max_length=max_length, verbose=False)["input_ids"]
    truncated = sum(len(a) > len(b) for a, b in zip(full, cut, strict=True))
    gold_ids = [label2id.get(label, IGNORE_INDEX) for label in labels]
    return EncodedClassification([list(ids) for ids in cut], list(labels), gold_ids, truncated)


def encode_tagging(
    tokenizer: Any,
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]],
    max_length: int,
    stride: int,
    label2id: Mapping[str, int],
) -> EncodedTagging:
    """Each sentence's words in windows (no truncation), with its gold tags."""
    encodings = [words_to_windows(tokenizer, words, max_length, stride) for words in sentences]
    gold_ids = [enc.labels(t, label2id, skip_unknown=True) for enc, t in zip(encodings, tags, strict=True)]
    return EncodedTagging(encodings, [list(t) for t in tags], gold_ids, sum(len(e.windows) for e in encodings))


def encode_split(
    tokenizer: Any,
    task: str,
    examples: Sequence[Any],
    label2id: Mapping[str, int],
    max_length: int,
    stride: int,
) -> EncodedClassification | EncodedTagging:
    """Encode a split's examples for evaluation: texts for classification, windows of words for NER."""
    if task == "ner":
        tokens, tags = [e.tokens for e in examples], [e.tags for e in examples]
        return encode_tagging(tokenizer, tokens, tags, max_length, stride, label2id)
    texts, labels = [e.text for e in examples], [e.label for e in examples]
    return encode_classification(tokenizer, texts, labels, max_length, label2id)


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad integer rows into one tensor."""
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def batch_inputs(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Padded input ids and attention mask."""
    return {"input_ids": pad_rows(rows, pad_id), "attention_mask": pad_rows([[1] * len(r) for r in rows], 0)}


def collate_rows(pad_id: int) -> Callable[[Sequence[Any], Any], dict[str, torch.Tensor]]:
    """Batch (input ids, label or per-token labels) rows, padding ids with `pad_id` and labels with -100."""

    def collate(rows: Sequence[Any], gen: Any) -> dict[str, torch.Tensor]:
        batch = batch_inputs([r[0] for r in rows], pad_id)
        labels = [r[1] for r in rows]
        batch["labels"] = (
            pad_rows([labels], IGNORE_INDEX)[0] if isinstance(labels[0], int) else pad_rows(labels, IGNORE_INDEX)
        )
        return batch

    return collate


def training_rows(
    tokenizer: Any, task: str, examples: Sequence[Any], label2id: Mapping[str, int], max_length: int, stride: int
) -> tuple[list[tuple[list[int], Any]], int]:
    """Training rows, plus how many texts were cut (classification) or read in more than one window (NER).

    Rows are (input ids, label id) per text, or (input ids, per-token label ids) per NER window with a label.
    """
    if task != "ner":
        encoded = encode_classification(
            tokenizer, [e.text for e in examples], [e.label for e in examples], max_length, label2id
        )
        return list(zip(encoded.ids, encoded.gold_ids, strict=True)), encoded.truncated
    rows: list[tuple[list[int], Any]] = []
    windowed = 0
    for ex in examples:
        windows = encode_words(tokenizer, ex.tokens, ex.tags, label2id, max_length, stride)
        windowed += len(windows) > 1
        for window in windows:
            if any(label != IGNORE_INDEX for label in window["labels"]):
                rows.append((window["input_ids"], window["labels"]))
    return rows, windowed
