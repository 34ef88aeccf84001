"""Task figures as plain dicts of floats: accuracy and macro-F1, strict-IOB2 entity scores, majority baselines.

Classification figures come from scikit-learn; macro-F1 averages over every label that occurs in the gold
labels or the predictions (scikit-learn's default), so a label the model never predicts still counts, as 0.
Entity figures come from seqeval in strict mode with the IOB2 scheme: an entity counts only when its type and
its exact word span match, and an `I-X` that does not follow `B-X`/`I-X` starts no entity. Undefined ratios
(no predicted or no gold entities) are 0, never a warning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from seqeval.metrics import accuracy_score as seqeval_accuracy
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score as seqeval_precision
from seqeval.metrics import recall_score as seqeval_recall
from seqeval.scheme import IOB2
from sklearn.metrics import accuracy_score, f1_score

from langadapt.models.kinds import TASKS

__all__ = [
    "OUTSIDE",
    "SELECTION_METRICS",
    "classification_majority_baseline",
    "classification_metrics",
    "majority_label",
    "ner_majority_baseline",
    "ner_metrics",
    "selection_metric",
]

OUTSIDE = "O"
# The validation figure each task's best checkpoint is chosen by (higher is better for all of them).
SELECTION_METRICS = {t.name: t.selection_metric for t in TASKS.values() if t.selection_metric is not None}


def selection_metric(task: str) -> str:
    """The metric the best checkpoint of `task` is chosen by."""
    try:
        return SELECTION_METRICS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(SELECTION_METRICS)}") from None


def _check_pairs(gold: Sequence[object], predicted: Sequence[object], what: str) -> None:
    """Refuse empty or mismatched gold/prediction lists, which would give meaningless figures."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold {what} but {len(predicted)} predictions")
    if not gold:
        raise ValueError(f"no {what} to score")


def classification_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of predicted labels against gold labels."""
    _check_pairs(gold, predicted, "labels")
    return {
        "accuracy": float(accuracy_score(list(gold), list(predicted))),
        "macro_f1": float(f1_score(list(gold), list(predicted), average="macro", zero_division=0)),
    }


def ner_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity F1, precision and recall (seqeval, strict IOB2, micro-averaged) plus token accuracy."""
    _check_pairs(gold, predicted, "sentences")
    for i, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")
    y_true = [list(s) for s in gold]
    y_pred = [list(s) for s in predicted]
    strict = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    return {
        "f1": float(seqeval_f1(y_true, y_pred, **strict)),
        "precision": float(seqeval_precision(y_true, y_pred, **strict)),
        "recall": float(seqeval_recall(y_true, y_pred, **strict)),
        "accuracy": float(seqeval_accuracy(y_true, y_pred)),
    }


def majority_label(train_labels: Sequence[str]) -> str:
    """The most frequent training label; ties go to the label seen first."""
    if not train_labels:
        raise ValueError("no training labels to take the majority of")
    return Counter(train_labels).most_common(1)[0][0]


def classification_majority_baseline(train_labels: Sequence[str], gold: Sequence[str]) -> dict[str, float]:
    """The figures of always predicting the most frequent TRAINING label on `gold`."""
    label = majority_label(train_labels)
    return classification_metrics(gold, [label] * len(gold))


def ner_majority_baseline(gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """The figures of tagging every word `O` (the majority tag): entity scores 0, token accuracy the `O` share."""
    return ner_metrics(gold, [[OUTSIDE] * len(sentence) for sentence in gold])
