"""A task model's predictions and figures on encoded examples, beside the majority baseline, and its training loss."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langadapt.models.alignment import IGNORE_INDEX, WordEncoding, merge_windows
from langadapt.training.task_encoding import EncodedClassification, EncodedTagging, batch_inputs, pad_rows

if TYPE_CHECKING:
    import torch

__all__ = [
    "OUTSIDE",
    "Predictions",
    "majority_figures",
    "predict_classification",
    "predict_tagging",
    "score_split",
    "task_loss",
]

OUTSIDE = "O"


def score_split(
    model: Any,
    head: str,
    encoded: EncodedClassification | EncodedTagging,
    labels: Sequence[str],
    pad_id: int,
    batch_size: int,
) -> dict[str, float]:
    """The task's figures (and mean loss over known labels) of the model on an encoded split."""
    from langadapt.training.metrics import classification_metrics, ner_metrics

    if isinstance(encoded, EncodedTagging):
        tagged = predict_tagging(model, head, encoded.encodings, pad_id, batch_size, encoded.gold_ids)
        figures = ner_metrics(encoded.gold, _tags(tagged.labels, labels))
        loss = tagged.loss
    else:
        predicted = predict_classification(model, head, encoded.ids, pad_id, batch_size, encoded.gold_ids)
        figures = classification_metrics(encoded.gold, [labels[k] for k in predicted.labels])
        loss = predicted.loss
    return {**figures, "loss": loss} if loss is not None else figures


def majority_figures(encoded: EncodedClassification | EncodedTagging, train_majority: str | None) -> dict[str, float]:
    """The majority baseline on an encoded split: all `O` for NER, the training majority label otherwise."""
    from langadapt.training.metrics import classification_majority_baseline, ner_majority_baseline

    if isinstance(encoded, EncodedTagging):
        return ner_majority_baseline(encoded.gold)
    if train_majority is None:
        return {}
    return classification_majority_baseline([train_majority], encoded.gold)


def _logits(model: Any, head: str, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The named head's logits for a batch."""
    return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], head=head).logits


@dataclass
class Predictions:
    """Predicted label index and probability per item (per word for NER), and the mean loss when gold was given."""

    labels: list[Any]
    scores: list[Any]
    loss: float | None = None


class _LossMeter:
    """Sums cross-entropy over labelled positions across batches."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, logits: torch.Tensor, gold: torch.Tensor) -> None:
        """Add one batch's summed loss over positions whose gold label is not -100."""
        import torch

        flat_logits, flat_gold = logits.reshape(-1, logits.size(-1)), gold.reshape(-1)
        keep = flat_gold != IGNORE_INDEX
        if bool(keep.any()):
            loss = torch.nn.functional.cross_entropy(flat_logits[keep].float(), flat_gold[keep], reduction="sum")
            self.total += float(loss)
            self.count += int(keep.sum())

    @property
    def mean(self) -> float | None:
        """The mean loss per labelled position, None when nothing was labelled."""
        return self.total / self.count if self.count else None


def predict_classification(
    model: Any,
    head: str,
    rows: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int,
    gold: Sequence[int] | None = None,
) -> Predictions:
    """Label index and probability per text (batches sorted by length); mean loss against `gold` ids if given."""
    import torch

    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    labels, scores = [0] * len(rows), [0.0] * len(rows)
    meter = _LossMeter()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            logits = _logits(model, head, batch_inputs([rows[i] for i in chunk], pad_id))
            if gold is not None:
                meter.add(logits, torch.tensor([gold[i] for i in chunk], dtype=torch.long))
            best, index = logits.float().softmax(-1).max(-1)
            for i, p, k in zip(chunk, best.tolist(), index.tolist(), strict=True):
                labels[i], scores[i] = k, p
    return Predictions(labels, scores, meter.mean)


def predict_tagging(
    model: Any,
    head: str,
    encodings: Sequence[WordEncoding],
    pad_id: int,
    batch_size: int,
    gold: Sequence[Sequence[Sequence[int]]] | None = None,
) -> Predictions:
    """Per sentence, per word: label index and probability, read from each word's owning window.

    Words the tokenizer dropped entirely get label index -1. `gold`, per sentence per window, are label ids
    laid out as `WordEncoding.labels` gives them; with it the mean loss over labelled words is returned.
    """
    import torch

    model.eval()
    flat = [(s, w) for s, enc in enumerate(encodings) for w in range(len(enc.windows))]
    order = sorted(range(len(flat)), key=lambda i: len(encodings[flat[i][0]].windows[flat[i][1]].input_ids))
    indices: list[list[list[int]]] = [[[] for _ in enc.windows] for enc in encodings]
    probs: list[list[list[float]]] = [[[] for _ in enc.windows] for enc in encodings]
    meter = _LossMeter()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = [flat[i] for i in order[start : start + batch_size]]
            rows = [encodings[s].windows[w].input_ids for s, w in chunk]
            logits = _logits(model, head, batch_inputs(rows, pad_id))
            if gold is not None:
                meter.add(logits, pad_rows([gold[s][w] for s, w in chunk], IGNORE_INDEX))
            best, index = logits.float().softmax(-1).max(-1)
            for j, (s, w) in enumerate(chunk):
                n = len(rows[j])
                indices[s][w] = index[j, :n].tolist()
                probs[s][w] = best[j, :n].tolist()
    return Predictions(
        [merge_windows(enc, indices[s], -1) for s, enc in enumerate(encodings)],
        [merge_windows(enc, probs[s], 0.0) for s, enc in enumerate(encodings)],
        meter.mean,
    )


def _tags(indices: Sequence[Sequence[int]], labels: Sequence[str]) -> list[list[str]]:
    """Label names from indices; dropped words (-1) are `O`."""
    return [[labels[k] if k >= 0 else OUTSIDE for k in sentence] for sentence in indices]


def task_loss(head: str) -> Callable[[Any, Any], torch.Tensor]:
    """Cross-entropy of the head's logits, ignoring -100 labels."""

    def loss_fn(model: Any, batch: Any) -> torch.Tensor:
        import torch

        logits = _logits(model, head, batch)
        labels = batch["labels"]
        if not bool((labels != IGNORE_INDEX).any()):
            return logits.sum() * 0.0  # nothing to learn in this batch; keeps the graph and a finite loss
        flat_logits, flat_labels = logits.reshape(-1, logits.size(-1)), labels.reshape(-1)
        return torch.nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX)

    return loss_fn
