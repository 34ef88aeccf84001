"""The LitServe side: one `LitAPI` per task, and the batching loop its workers run.

Request path (LitServe's): HTTP handler (pydantic validation of `LabelRequest`) → the task's request queue →
`BatchLoop` gathers requests → `decode_request` resolves each request's language to a route (a 404 stays
with its own request, never fails the batch) → `predict` runs every routed request of the batch through
`Engine.run` in shared forward passes → `encode_response` answers each request, errors included, as a
`JSONResponse` with its own status and an `x-langadapt-language` header the metrics read.
"""

# No `from __future__ import annotations` here: LitServe reads `decode_request`'s and `encode_response`'s
# annotations with `inspect.signature` to build the FastAPI route, so they must be real classes, not strings.
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import litserve as ls
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, LoopResponseType

from langadapt.inference.engine import BatchStats, Engine, EngineHooks, EngineSettings, Job, TextResult
from langadapt.inference.errors import ServeError
from langadapt.inference.routing import Route
from langadapt.models.store_view import AdapterRef
from langadapt.serve.control import ControlChannel, ControlFollower
from langadapt.serve.metrics import NO_LANGUAGE, get_metrics
from langadapt.serve.schemas import (
    ClassificationResponse,
    ClassificationResult,
    EntityOut,
    LabelRequest,
    LabelScore,
    NerResponse,
    NerResult,
    StackOut,
)

log = logging.getLogger(__name__)

LANGUAGE_HEADER = "x-langadapt-language"


@dataclass(frozen=True)
class ServeSettings:
    """What every worker needs, pickled into its process by LitServe."""

    engine: EngineSettings
    runtime_dir: str
    max_batch_size: int = 16
    batch_timeout: float = 0.0
    watch_interval: float = 0.02
    preload: int = 32


class BatchLoop(BatchedLoop):
    """LitServe's batched loop, gathering differently: block for the first request, then up to `batch_timeout`.

    The stock loop polls the queue every millisecond even when idle (or spins, with a zero timeout), and counts
    its timeout from when it starts polling; this one sleeps in the queue until a request arrives, then takes
    every request already queued and, with `batch_timeout` > 0, those arriving within it of the first. On a CPU
    a zero timeout serves best (passes are cache-sized anyway, measured in bench/serve.py); on a GPU a few
    milliseconds fill larger batches.
    """

    def get_batch_requests(
        self, lit_api: ls.LitAPI, request_queue: Queue, transport: MessageTransport
    ) -> tuple[list, list]:
        """(batch of (response queue id, uid, payload), timed-out (response queue id, uid)) for one predict."""
        try:
            first = request_queue.get(timeout=1.0)
        except Empty:
            return [], []
        payloads: list[tuple[Any, str, Any]] = []
        timed_out: list[tuple[Any, str]] = []
        deadline = time.monotonic() + lit_api.batch_timeout
        item = first
        while True:
            if item == _SENTINEL_VALUE:
                raise _StopLoopError()
            response_queue_id, uid, timestamp, payload = item
            self.put_response(transport, response_queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR)
            timeout = lit_api.request_timeout
            if timeout not in (None, -1, False) and time.monotonic() - timestamp > timeout:
                timed_out.append((response_queue_id, uid))
            else:
                payloads.append((response_queue_id, uid, payload))
            if len(payloads) >= lit_api.max_batch_size:
                break
            remaining = deadline - time.monotonic()
            try:
                item = request_queue.get(timeout=remaining) if remaining > 0 else request_queue.get_nowait()
            except Empty:
                break
        return payloads, timed_out


@dataclass(frozen=True)
class Decoded:
    """A validated request and its route, or the error that will answer it."""

    request: LabelRequest
    route: Route | None
    error: ServeError | None = None


@dataclass(frozen=True)
class Answer:
    """What `predict` gives each request: its results or its error."""

    decoded: Decoded
    results: list[TextResult] | None
    error: ServeError | None = None


class TaskAPI(ls.LitAPI):
    """Serves one task at `/v1/<task>`: language routing, dynamic batching across requests, adapter stacks."""

    def __init__(self, task: str, settings: ServeSettings) -> None:
        super().__init__(
            max_batch_size=settings.max_batch_size,
            batch_timeout=settings.batch_timeout,
            api_path=f"/v1/{task}",
            loop=BatchLoop(),
        )
        self.task = task
        self.settings = settings
        self.engine: Engine | None = None
        self.follower: ControlFollower | None = None

    # ------------------------------------------------------------------------------- worker set-up

    def setup(self, device: str) -> None:
        """Load the base model and adapters for this task, then follow the store and the admin log."""
        metrics = get_metrics()
        task = self.task

        def on_batch(stats: BatchStats) -> None:
            metrics.batch_requests.labels(task).observe(stats.jobs)
            metrics.batch_texts.labels(task).observe(sum(stats.texts.values()))
            metrics.batch_tokens.labels(task).observe(stats.tokens)
            metrics.batch_seconds.labels(task).observe(stats.seconds)

        def on_load(ref: AdapterRef, seconds: float, ok: bool) -> None:
            metrics.adapter_loads.labels(task, "ok" if ok else "refused").inc()
            if ok:
                metrics.adapter_load_seconds.labels(task).observe(seconds)

        def on_evict(kind: str, _: str) -> None:
            metrics.evictions.labels(task, kind).inc()

        engine_settings = self.settings.engine
        if engine_settings.device == "auto":
            engine_settings = replace(engine_settings, device=device)
        engine_settings = replace(engine_settings, tasks=(task,))
        self.engine = Engine(engine_settings, hooks=EngineHooks(on_batch, on_load, on_evict))
        loaded = self.engine.preload(self.settings.preload)
        worker = int(os.environ.get("LITSERVE_WORKER_ID", "0"))
        self.follower = ControlFollower(
            self.engine,
            ControlChannel(Path(self.settings.runtime_dir)),
            task,
            worker,
            interval=self.settings.watch_interval,
            on_tick=lambda engine: metrics.cache_bytes.labels(task).set(engine.cache.nbytes),
        )
        self.follower.start()
        log.info("%s worker %d ready on %s with %d stacks preloaded", task, worker, self.engine.device, loaded)

    # --------------------------------------------------------------------------------- request path

    def decode_request(self, request: LabelRequest) -> Decoded:
        """Resolve the request's language for this task; a routing error is kept for this request alone."""
        engine = self._engine()
        try:
            return Decoded(request, engine.resolve(self.task, request.lang))
        except ServeError as err:
            return Decoded(request, None, err)

    def batch(self, inputs: list[Decoded]) -> list[Decoded]:
        """The batch is the list of decoded requests; `predict` packs their texts into forward passes."""
        return list(inputs)

    def predict(self, x: list[Decoded]) -> list[Answer]:
        """Label every routed request of the batch together; each request gets its results or its error."""
        routed = [d for d in x if d.route is not None]
        outcomes = self._engine().run([Job(d.route, d.request.texts) for d in routed if d.route is not None])
        by_id = {id(d): outcome for d, outcome in zip(routed, outcomes, strict=True)}
        answers = []
        for decoded in x:
            if decoded.error is not None:
                answers.append(Answer(decoded, None, decoded.error))
                continue
            outcome = by_id[id(decoded)]
            if isinstance(outcome, ServeError):
                answers.append(Answer(decoded, None, outcome))
            else:
                answers.append(Answer(decoded, outcome))
        return answers

    def unbatch(self, output: list[Answer]) -> list[Answer]:
        """One answer per request, in order."""
        return list(output)

    def encode_response(self, output: Answer) -> Any:
        """The JSON response (or error) for one request, with its routed language in a header."""
        language = output.decoded.route.language if output.decoded.route is not None else NO_LANGUAGE
        if output.error is not None:
            return JSONResponse(
                output.error.body(),
                status_code=output.error.status,
                headers={**output.error.headers, LANGUAGE_HEADER: language},
            )
        results = output.results or []
        if results:
            language = results[0].route.language
        body = self.response_body(output.decoded.request, language, results)
        return JSONResponse(body.model_dump(mode="json"), headers={LANGUAGE_HEADER: language})

    def response_body(self, request: LabelRequest, language: str, results: list[TextResult]) -> Any:
        """The response model for this task."""
        raise NotImplementedError

    def _engine(self) -> Engine:
        if self.engine is None:
            raise HTTPException(503, "the inference worker is not set up yet")
        return self.engine


def stack_out(route: Route) -> StackOut:
    """The response's stack description of a route."""
    return StackOut.model_validate(route.stack_dict())


class ClassificationAPI(TaskAPI):
    """Topic or sentiment: one label per text with every label's probability."""

    def encode_response(self, output: Answer) -> ClassificationResponse:  # type: ignore[override]
        """See `TaskAPI.encode_response`; the annotation gives the route its OpenAPI response model."""
        return super().encode_response(output)

    def response_body(self, request: LabelRequest, language: str, results: list[TextResult]) -> ClassificationResponse:
        """Labels, scores, windows and stack per text."""
        return classification_response(self.task, request, language, results)


class NerAPI(TaskAPI):
    """Named entities with character offsets into the original text."""

    def encode_response(self, output: Answer) -> NerResponse:  # type: ignore[override]
        """See `TaskAPI.encode_response`; the annotation gives the route its OpenAPI response model."""
        return super().encode_response(output)

    def response_body(self, request: LabelRequest, language: str, results: list[TextResult]) -> NerResponse:
        """Entities, windows and stack per text."""
        return ner_response(self.task, request, language, results)


def classification_response(
    task: str, request: LabelRequest, language: str, results: list[TextResult]
) -> ClassificationResponse:
    """A topic or sentiment response: labels, scores, windows and stack per text."""
    return ClassificationResponse(
        task=task,
        lang=request.lang,
        language=language,
        results=[
            ClassificationResult(
                label=r.label or "",
                score=r.score or 0.0,
                scores=[LabelScore(label=label, score=score) for label, score in r.scores],
                windows=r.windows,
                windowed=r.windows > 1,
                stack=stack_out(r.route),
            )
            for r in results
        ],
    )


def ner_response(task: str, request: LabelRequest, language: str, results: list[TextResult]) -> NerResponse:
    """An NER response: entities, windows and stack per text."""
    return NerResponse(
        task=task,
        lang=request.lang,
        language=language,
        results=[
            NerResult(
                entities=[
                    EntityOut(type=e.type, text=e.text, start=e.start, end=e.end, score=e.score) for e in r.entities
                ],
                windows=r.windows,
                windowed=r.windows > 1,
                stack=stack_out(r.route),
            )
            for r in results
        ],
    )


def response_body(task: str, request: LabelRequest, language: str, results: list[TextResult]) -> Any:
    """The response model of `task` for one request's results (the LitServe APIs and the Ray Serve app share it)."""
    return (ner_response if task == "ner" else classification_response)(task, request, language, results)


def api_for(task: str, settings: ServeSettings) -> TaskAPI:
    """The LitAPI serving `task`."""
    return NerAPI(task, settings) if task == "ner" else ClassificationAPI(task, settings)
