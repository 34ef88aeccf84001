"""Where chunks are labelled: the `Runner` interface the job drives, and the local runner (one engine here).

The Ray Data runner (`ray_data.RayRunner`) implements the same interface with an engine per actor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langadapt.inference.engine import Engine
from langadapt.inference.routing import Route
from langadapt.inference.settings import InferenceSettings
from langadapt.label.formats import Labels, Position, Row
from langadapt.label.labeller import Labeller
from langadapt.label.options import LabelSettings
from langadapt.label.readers import Reader

__all__ = ["ChunkResult", "LocalRunner", "Runner", "adapter_record"]


@dataclass
class ChunkResult:
    """One chunk, labelled: its rows and labels, the input position after it, adapters used, blank lines seen."""

    rows: list[Row]
    labels: list[Labels]
    position: Position
    adapters: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    blank_lines: int = 0


class Runner:
    """Where chunks are labelled: here (one engine) or on Ray Data (an engine per actor)."""

    fingerprint: str
    store_root: Path
    stats: dict[str, Any]  # what the summary reports about the runner

    def resolve(self, task: str, lang: str) -> Route:
        raise NotImplementedError

    def chunks(
        self, reader: Reader, start: Position, options: LabelSettings, lang: str | None
    ) -> Iterator[ChunkResult]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the runner holds."""


def adapter_record(route: Route) -> dict[str, Any]:
    """How a checkpoint and the summary record the stack that labelled a (task, language)."""
    return {"stack": str(route.key), **route.stack_dict()}


class LocalRunner(Runner):
    """Labels chunks in this process with one engine."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.engine = Engine(settings)
        self.stats = {}
        self.fingerprint = self.engine.info.fingerprint
        self.store_root = self.engine.stores.writable.root

    def resolve(self, task: str, lang: str) -> Route:
        return self.engine.resolve(task, lang)

    def chunks(
        self, reader: Reader, start: Position, options: LabelSettings, lang: str | None
    ) -> Iterator[ChunkResult]:
        labeller = Labeller(self.engine, options.tasks, lang)
        rows: list[Row] = []
        position, blank = start, 0
        for row, position in reader.rows(start):
            rows.append(row)
            if len(rows) == options.chunk_rows:
                labels = labeller.label(rows)
                used = {k: adapter_record(r) for k, r in labeller.routes.used.items()}
                yield ChunkResult(rows, labels, position, used, reader.blank_lines - blank)
                rows, blank = [], reader.blank_lines
        labels = labeller.label(rows) if rows else []
        used = {k: adapter_record(r) for k, r in labeller.routes.used.items()}
        yield ChunkResult(rows, labels, position, used, reader.blank_lines - blank)
