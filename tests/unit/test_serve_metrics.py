"""Server metrics of one engine batch: real and padded tokens, tasks, requests (issue 13's padded/real ratio)."""

from __future__ import annotations

from collections import Counter

import pytest

from langadapt.inference.engine import BatchStats
from langadapt.serve.metrics import MIXED, Metrics


@pytest.fixture(autouse=True)
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def test_observe_batch_counts_padded_and_real_tokens_per_task() -> None:
    metrics = Metrics()
    metrics.observe_batch(BatchStats(jobs=2, texts=Counter(ner=3), rows=3, tokens=30, padded_tokens=42, seconds=0.1))
    metrics.observe_batch(BatchStats(jobs=1, texts=Counter(ner=1), rows=1, tokens=8, padded_tokens=8, seconds=0.01))
    sample = metrics.registry.get_sample_value
    assert sample("langadapt_padded_tokens_total", {"task": "ner"}) == 50
    assert sample("langadapt_batch_tokens_sum", {"task": "ner"}) == 38
    assert sample("langadapt_batch_requests_sum", {"task": "ner"}) == 3


def test_a_batch_of_several_tasks_is_labelled_mixed() -> None:
    metrics = Metrics()
    metrics.observe_batch(BatchStats(jobs=2, texts=Counter(ner=1, topic=2), tokens=20, padded_tokens=24))
    sample = metrics.registry.get_sample_value
    assert sample("langadapt_padded_tokens_total", {"task": MIXED}) == 24
    assert sample("langadapt_batch_texts_sum", {"task": "topic"}) == 2
    assert sample("langadapt_batch_tasks_sum", {}) == 2
    assert "langadapt_padded_tokens_total" in metrics.render()[0].decode()
