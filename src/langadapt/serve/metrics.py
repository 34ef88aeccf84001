"""Prometheus metrics, correct across LitServe's processes (prometheus-client multiprocess mode).

LitServe forks its HTTP servers and spawns its inference workers; each process writes its own samples into
`PROMETHEUS_MULTIPROC_DIR`, and `GET /metrics` merges them all. `configure_multiprocess` sets that directory
up before any worker starts (the `serve` command calls it first). Without it (in-process tests, the engine
alone), metrics stay in this process's own registry.

Label values are bounded: tasks the server serves (`label` for `/v1/label`; `mixed` for an engine batch that
mixed tasks; `all` for the worker pool's cache and loads, since every worker serves every task), canonical
language codes it routed, `none` before routing, and HTTP status codes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langadapt.inference.engine import BatchStats

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
NO_LANGUAGE = "none"
MIXED = "mixed"  # the task label of an engine batch that mixed tasks
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)
LOAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


def configure_multiprocess(directory: Path) -> Path:
    """Empty `directory` and point prometheus-client's multiprocess mode at it, for this process and its children.

    Call it before metrics are created. prometheus-client picks its value class when it is imported, so if it
    was imported already in single-process mode, the choice is made again here.
    """
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    return directory


def multiprocess_dir() -> Path | None:
    """The multiprocess directory in use, if any."""
    raw = os.environ.get(MULTIPROC_ENV)
    return Path(raw) if raw else None


@dataclass
class Metrics:
    """Every metric the server exposes; one instance per process (`get_metrics`)."""

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "langadapt_requests", "HTTP requests answered", ["task", "language", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "langadapt_request_seconds",
            "HTTP request latency, first byte in to response out",
            ["task", "language", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "langadapt_queue_depth",
            "Inference requests admitted and not yet answered",
            ["task"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.batch_texts = Histogram(
            "langadapt_batch_texts", "Texts per engine batch", ["task"], buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tasks = Histogram(
            "langadapt_batch_tasks",
            "Distinct tasks per engine batch (above 1: the batch mixed tasks in shared passes)",
            buckets=(1, 2, 3, 4),
            registry=r,
        )
        self.batch_requests = Histogram(
            "langadapt_batch_requests", "Requests per engine batch", ["task"], buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "langadapt_batch_tokens",
            "Real (unpadded) tokens per engine batch",
            ["task"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.padded_tokens = Counter(
            "langadapt_padded_tokens",
            "Tokens in engine passes, padding included (over langadapt_batch_tokens_sum: padded per real token)",
            ["task"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "langadapt_batch_seconds", "Engine time per batch", ["task"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.adapter_loads = Counter(
            "langadapt_adapter_loads", "Adapter versions loaded from the store", ["task", "result"], registry=r
        )
        self.adapter_load_seconds = Histogram(
            "langadapt_adapter_load_seconds",
            "Time to verify, read and parse one adapter version",
            ["task"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "langadapt_adapter_evictions",
            "Cache evictions (stacks from the bank, parsed adapters)",
            ["task", "kind"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "langadapt_worker_restarts",
            "Inference workers started again after one died (or failed to start)",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "langadapt_cache_bytes",
            "Bytes the adapter caches hold (parsed adapters plus bank share), summed over live workers",
            ["task"],
            multiprocess_mode="livesum",
            registry=r,
        )

    def observe_batch(self, stats: BatchStats) -> None:
        """Record one engine batch: its tasks, requests, texts, real and padded tokens, and time."""
        tasks = sorted(stats.texts)
        which = tasks[0] if len(tasks) == 1 else MIXED
        self.batch_tasks.observe(len(tasks))
        self.batch_requests.labels(which).observe(stats.jobs)
        for task, count in stats.texts.items():
            self.batch_texts.labels(task).observe(count)
        self.batch_tokens.labels(which).observe(stats.tokens)
        self.padded_tokens.labels(which).inc(stats.padded_tokens)
        self.batch_seconds.labels(which).observe(stats.seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text (merged over processes in multiprocess mode) and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if multiprocess_dir() is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return generate_latest(merged), CONTENT_TYPE_LATEST


_METRICS: Metrics | None = None


def get_metrics() -> Metrics:
    """This process's metrics, created on first use (after `configure_multiprocess`, when serving)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = Metrics()
    return _METRICS


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges from the merged view."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
