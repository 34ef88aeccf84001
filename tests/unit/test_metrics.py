"""Task metrics against hand-computed values: macro-F1, strict IOB2 entity scores, majority baselines."""

from __future__ import annotations

import pytest

from langadapt.training.metrics import (
    classification_majority_baseline,
    classification_metrics,
    majority_label,
    ner_majority_baseline,
    ner_metrics,
    selection_metric,
)


def test_classification_metrics_by_hand() -> None:
    gold = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", "a"]
    # a: P 1/2 R 1/2 F 1/2; b: P 1/2 R 1 F 2/3; c: never predicted, F 0.
    figures = classification_metrics(gold, pred)
    assert figures == {"accuracy": 0.5, "macro_f1": pytest.approx((0.5 + 2 / 3 + 0.0) / 3)}
    assert all(type(v) is float for v in figures.values())


def test_macro_f1_counts_a_predicted_label_absent_from_gold() -> None:
    # "z" is predicted once but never gold: it joins the average with F1 0.
    figures = classification_metrics(["a", "a"], ["a", "z"])
    assert figures["accuracy"] == 0.5
    assert figures["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_ner_metrics_are_strict_iob2() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "I-LOC"]]
    # Strict mode: an I-LOC that starts an entity is no entity, so only PER is found.
    figures = ner_metrics(gold, pred)
    assert figures["precision"] == 1.0
    assert figures["recall"] == 0.5
    assert figures["f1"] == pytest.approx(2 / 3)
    assert figures["accuracy"] == 0.75


def test_ner_metrics_need_exact_span_and_type() -> None:
    gold = [["B-PER", "I-PER", "O"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O"], ["B-LOC", "O"]]  # span too short; wrong type
    figures = ner_metrics(gold, pred)
    assert figures["f1"] == 0.0
    assert figures["precision"] == 0.0
    assert figures["recall"] == 0.0
    assert figures["accuracy"] == pytest.approx(3 / 5)


def test_majority_label_takes_the_first_seen_on_ties() -> None:
    assert majority_label(["b", "a", "a", "b", "c"]) == "b"
    assert majority_label(["x", "y", "y"]) == "y"


def test_classification_majority_uses_the_training_majority() -> None:
    # Train says "x"; the test split's own majority ("y") must not leak into the baseline.
    figures = classification_majority_baseline(["x", "x", "y"], ["y", "y", "x"])
    assert figures["accuracy"] == pytest.approx(1 / 3)
    # x: P 1/3 R 1 F 1/2; y: F 0.
    assert figures["macro_f1"] == pytest.approx(0.25)


def test_ner_majority_is_all_outside() -> None:
    gold = [["B-PER", "O", "O"], ["O", "B-LOC", "I-LOC", "O"]]
    figures = ner_majority_baseline(gold)
    assert figures == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "accuracy": pytest.approx(4 / 7)}


def test_selection_metrics_and_bad_inputs() -> None:
    assert selection_metric("topic") == "macro_f1"
    assert selection_metric("sentiment") == "macro_f1"
    assert selection_metric("ner") == "f1"
    with pytest.raises(ValueError, match="unknown task"):
        selection_metric("mlm")
    with pytest.raises(ValueError, match="predictions"):
        classification_metrics(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no labels"):
        classification_metrics([], [])
    with pytest.raises(ValueError, match="sentence 0"):
        ner_metrics([["O", "O"]], [["O"]])
