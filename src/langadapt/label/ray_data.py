"""The same labelling job on Ray Data: chunks read by read tasks, labelled by an actor pool, committed here.

The driver plans the chunks (one streaming pass that records where every chunk of `--chunk-rows` rows starts,
as the checkpoint positions them), and a custom `Datasource` turns each chunk into a read task that reads it
with the same reader as a local run, so bad rows are found and numbered the same way. `map_batches` labels
each chunk on an `ActorPoolStrategy` pool, one `Engine` per actor, each chunk whole (`batch_size=None`), as the
local run batches it. With `preserve_order` the labelled chunks come back in input order and the driver commits
them through the same writer and checkpoint as a local run: same rows, same order, same labels, same resume.
Rows travel between processes pickled (Ray pickles everything it moves; nothing is read back from disk).
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from langadapt.errors import LangadaptError
from langadapt.inference.routing import Route
from langadapt.inference.settings import InferenceSettings
from langadapt.label.formats import Position
from langadapt.label.options import LabelSettings
from langadapt.label.readers import Reader
from langadapt.label.runners import ChunkResult, Runner, adapter_record

READ_CPUS = 0.25  # a read task parses text: a fraction of a CPU


@dataclass(frozen=True)
class PlannedChunk:
    """One chunk of the input: where it starts, how many rows, where it ends, blank lines skipped in it."""

    index: int
    start: Position
    rows: int
    end: Position
    blank_lines: int


def plan_chunks(reader: Reader, start: Position, chunk_rows: int) -> tuple[list[PlannedChunk], int]:
    """The chunks from `start` (as a local run would cut them) and the blank lines after the last one."""
    plan: list[PlannedChunk] = []
    count, chunk_start, blank = 0, start, reader.blank_lines
    last = start
    for last in reader.skim(start):
        count += 1
        if count == chunk_rows:
            plan.append(PlannedChunk(len(plan), chunk_start, count, last, reader.blank_lines - blank))
            count, chunk_start, blank = 0, last, reader.blank_lines
    if count:
        plan.append(PlannedChunk(len(plan), chunk_start, count, last, reader.blank_lines - blank))
        blank = reader.blank_lines
    return plan, reader.blank_lines - blank


def _read_chunk(reader: Reader, chunk: PlannedChunk) -> list[Any]:
    """A read task's block: the chunk's rows, pickled, with the chunk index."""
    import pyarrow as pa

    rows = [row for row, _ in islice(reader.rows(chunk.start), chunk.rows)]
    return [
        pa.table(
            {
                "chunk": pa.array([chunk.index] * len(rows), pa.int64()),
                "payload": pa.array([pickle.dumps(row) for row in rows], pa.binary()),
            }
        )
    ]


def chunk_source(reader: Reader, plan: list[PlannedChunk]) -> Any:
    """A Ray Data `Datasource` with one read task per planned chunk."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class ChunkSource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[Any]:
            return [
                ReadTask(
                    functools.partial(_read_chunk, reader, chunk),
                    BlockMetadata(num_rows=chunk.rows, size_bytes=None, exec_stats=None, input_files=None),
                )
                for chunk in plan
            ]

    return ChunkSource()


class LabelActor:
    """A Ray Data actor: one engine, labelling whole chunks of pickled rows."""

    def __init__(self, settings: InferenceSettings, tasks: tuple[str, ...], lang: str | None) -> None:
        from langadapt.inference.engine import Engine
        from langadapt.label.labeller import Labeller

        self.labeller = Labeller(Engine(settings), tasks, lang)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = [pickle.loads(b) for b in batch.column("payload").to_pylist()]  # noqa: S301 - our own rows
        chunks = batch.column("chunk").to_pylist()
        labels = []
        for index in dict.fromkeys(chunks):  # a batch is one chunk; were it several, each is labelled alone
            labels.extend(self.labeller.label([row for row, c in zip(rows, chunks, strict=True) if c == index]))
        used = {k: adapter_record(r) for k, r in self.labeller.routes.used.items()}
        payload = [
            pickle.dumps((row, lab, used if i == 0 else None))
            for i, (row, lab) in enumerate(zip(rows, labels, strict=True))
        ]
        sizes = [chunks.count(c) for c in chunks]  # rows of the row's chunk in this call (the chunk's size: whole)
        return pa.table(
            {
                "chunk": batch.column("chunk"),
                "payload": pa.array(payload, pa.binary()),
                "labelled_with": pa.array(sizes, pa.int64()),
            }
        )


class RayRunner(Runner):
    """Labels chunks on Ray Data; this process plans, resolves routes (no model here) and commits."""

    def __init__(self, settings: InferenceSettings, *, address: str | None, actors: int) -> None:
        try:
            import ray
        except ImportError:
            raise LangadaptError("--ray needs Ray Data", "install it: pip install 'langadapt[ray]'") from None
        from langadapt.inference.routing import Router
        from langadapt.models.base import resolve_base_model
        from langadapt.models.store_view import store_view

        info = resolve_base_model(settings.base)
        stores = store_view(settings.store, settings.defaults)
        self.router = Router(stores, info.fingerprint, fallbacks=settings.fallback, tasks=settings.tasks)
        self.fingerprint = info.fingerprint
        self.store_root = stores.writable.root
        self.settings = settings.model_copy(update={"threads": settings.threads or 1})  # one CPU per actor
        self.actors = max(1, actors)
        self.stats = {"ray_actors": self.actors, "ray_split_chunks": 0}  # chunks labelled in pieces: none expected
        self._started = False
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            self._started = True

    def resolve(self, task: str, lang: str) -> Route:
        return self.router.resolve(task, lang)

    def chunks(
        self, reader: Reader, start: Position, options: LabelSettings, lang: str | None
    ) -> Iterator[ChunkResult]:
        import ray

        plan, trailing_blank = plan_chunks(reader, start, options.chunk_rows)
        if plan:
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            quiet = logging.getLogger("ray.data")
            quiet.setLevel(logging.ERROR)  # turning the progress bars off is itself announced as a warning
            context.enable_progress_bars = False  # ours is the job's bar
            quiet.setLevel(logging.WARNING)
            # The actors share the cluster's CPUs (one each at most) and leave some to the read tasks: actors
            # holding every CPU would starve the reads and the job would wait forever.
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            actor_cpus = min(1.0, max(0.05, (cpus - READ_CPUS) / self.actors))
            # One block per chunk (Ray would split the read output into more, smaller blocks otherwise), and
            # batch_size=None: each actor call labels one whole chunk, batched as a local run batches it.
            source = chunk_source(reader, plan)
            dataset = ray.data.read_datasource(source, num_cpus=READ_CPUS, override_num_blocks=len(plan)).map_batches(
                LabelActor,
                fn_constructor_kwargs={"settings": self.settings, "tasks": options.tasks, "lang": lang},
                compute=ray.data.ActorPoolStrategy(size=self.actors),
                batch_size=None,
                batch_format="pyarrow",
                num_cpus=actor_cpus,
            )
            pending: ChunkResult | None = None
            expected = 0
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                columns = (batch["chunk"].to_pylist(), batch["payload"].to_pylist(), batch["labelled_with"].to_pylist())
                for index, blob, labelled_with in zip(*columns, strict=True):
                    if index != expected:
                        raise RuntimeError(f"Ray Data returned chunk {index} while chunk {expected} was expected")
                    chunk = plan[index]
                    if pending is None:
                        pending = ChunkResult([], [], chunk.end, {}, chunk.blank_lines)
                        self.stats["ray_split_chunks"] += labelled_with != chunk.rows
                    row, labels, used = pickle.loads(blob)  # noqa: S301 - rows this job pickled
                    pending.rows.append(row)
                    pending.labels.append(labels)
                    pending.adapters.update(used or {})
                    if len(pending.rows) == chunk.rows:
                        yield pending
                        pending, expected = None, expected + 1
            if expected != len(plan):
                raise RuntimeError(f"Ray Data returned {expected} of {len(plan)} chunks")
        end = plan[-1].end if plan else start
        yield ChunkResult([], [], end, {}, trailing_blank)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
