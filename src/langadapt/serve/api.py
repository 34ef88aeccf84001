"""The LitServe side: one `LitAPI` for every task, and the batching loop its workers run.

One worker pool serves every task and language: each inference worker process holds one base model and one
adapter bank. `POST /v1/label` (LitServe's own route for this API) and `POST /v1/ner|sentiment|topic` (added by
`app.add_task_routes`, submitting a `TaskCall` to the same queue) feed the same workers, so one dynamic batch
may mix tasks and languages in one forward pass.

Request path: HTTP handler (pydantic validation) → the pool's request queue → `BatchLoop` gathers requests →
`decode_request` resolves each request's language and tasks to routes (a 404 stays with its own request, never
fails the batch) → `predict` runs every routed (request, task) of the batch through `Engine.run` in shared
forward passes → `encode_response` answers each request, errors included, as a `JSONResponse` with its own
status, an `x-langadapt-language` header the metrics read and an `x-langadapt-worker` header (the worker's pid).
"""

# No `from __future__ import annotations` here: LitServe reads `decode_request`'s and `encode_response`'s
# annotations with `inspect.signature` to build the FastAPI route, so they must be real classes, not strings.
import logging
import os
import time
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any

import litserve as ls
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, LoopResponseType

from langadapt.inference.auto import AutoBatch, AutoOutcome
from langadapt.inference.engine import Engine, EngineHooks, Job, TextResult
from langadapt.inference.errors import ServeError
from langadapt.inference.language_id import is_auto
from langadapt.inference.routing import Route
from langadapt.models.store_view import AdapterRef
from langadapt.serve.control import ControlChannel, ControlFollower
from langadapt.serve.language_id import auto_response
from langadapt.serve.metrics import NO_LANGUAGE, get_metrics
from langadapt.serve.schemas import (
    ClassificationResponse,
    ClassificationResult,
    EntityOut,
    LabelRequest,
    LabelScore,
    MultiTaskRequest,
    MultiTaskResponse,
    MultiTaskResult,
    NerResponse,
    NerResult,
    StackOut,
)
from langadapt.serve.settings import ServerSettings
from langadapt.serve.supervisor import guard_worker, start_failures_recorded

log = logging.getLogger(__name__)

LANGUAGE_HEADER = "x-langadapt-language"
WORKER_HEADER = "x-langadapt-worker"
LABEL_PATH = "/v1/label"
POOL = "all"  # the worker pool in reports and metric labels: every worker serves every task


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
class TaskCall:
    """A single-task request (`POST /v1/<task>`) as submitted to the shared worker pool."""

    task: str
    request: LabelRequest


@dataclass(frozen=True)
class Decoded:
    """A validated request and its route per task, or the error that will answer it.

    `single` is the task of a `/v1/<task>` request (answered in that task's response shape), None for
    `/v1/label`; `unavailable` lists tasks a `/v1/label` request left to the server that the language lacks.
    With `lang: "auto"`, `auto` holds the tasks to run and whether the client named them; routes come per text
    in `predict`, after language identification.
    """

    request: LabelRequest
    single: str | None = None
    routes: tuple[tuple[str, Route], ...] = ()
    unavailable: tuple[tuple[str, str], ...] = ()
    error: ServeError | None = None
    auto: tuple[tuple[str, ...], bool] | None = None

    @property
    def language(self) -> str:
        """The canonical language it routed to (`none` before routing)."""
        return self.routes[0][1].language if self.routes else NO_LANGUAGE


@dataclass(frozen=True)
class Answer:
    """What `predict` gives each request: its results per task, or its error."""

    decoded: Decoded
    results: dict[str, list[TextResult]] | None
    error: ServeError | None = None
    auto: list[AutoOutcome] | ServeError | None = None


class InferenceAPI(ls.LitAPI):
    """Every task at `/v1/label` and (through `TaskCall`s) `/v1/<task>`: routing, dynamic batching, stacks."""

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(
            max_batch_size=settings.max_batch_size,
            batch_timeout=settings.batch_timeout,
            api_path=LABEL_PATH,
            loop=BatchLoop(),
        )
        self.settings = settings
        self.engine: Engine | None = None
        self.follower: ControlFollower | None = None
        self.pid = str(os.getpid())

    # ------------------------------------------------------------------------------- worker set-up

    def setup(self, device: str) -> None:
        """Load the base model and the adapters of every task, then follow the store and the admin log."""
        guard_worker()  # group SIGTERM/Ctrl-C is the main process's to handle (it drains first); end with it
        with start_failures_recorded(self.settings.runtime()):  # why a start failed, for the main process
            self._setup(device)

    def _setup(self, device: str) -> None:
        metrics = get_metrics()

        def on_load(ref: AdapterRef, seconds: float, ok: bool) -> None:
            metrics.adapter_loads.labels(POOL, "ok" if ok else "refused").inc()
            if ok:
                metrics.adapter_load_seconds.labels(POOL).observe(seconds)

        def on_evict(kind: str, _: str) -> None:
            metrics.evictions.labels(POOL, kind).inc()

        self.engine = Engine(
            self.settings.for_worker(device), hooks=EngineHooks(metrics.observe_batch, on_load, on_evict)
        )
        self.pid = str(os.getpid())
        loaded = self.engine.preload(self.settings.preload)
        worker = int(os.environ.get("LITSERVE_WORKER_ID", "0"))
        self.follower = ControlFollower(
            self.engine,
            ControlChannel(self.settings.runtime()),
            POOL,
            worker,
            interval=self.settings.watch_interval,
            on_tick=lambda engine: metrics.cache_bytes.labels(POOL).set(engine.cache.nbytes),
        )
        self.follower.start()
        log.info(
            "worker %d (pid %s) ready on %s with %d stacks preloaded", worker, self.pid, self.engine.device, loaded
        )

    # --------------------------------------------------------------------------------- request path

    def decode_request(self, request: MultiTaskRequest) -> Decoded:
        """Resolve the request's language for each of its tasks; a routing error is kept for this request alone."""
        engine = self._engine()
        if isinstance(request, TaskCall):
            if is_auto(request.request.lang):
                return Decoded(request.request, request.task, auto=((request.task,), True))
            try:
                return Decoded(
                    request.request, request.task, ((request.task, engine.resolve(request.task, request.request.lang)),)
                )
            except ServeError as err:
                return Decoded(request.request, request.task, error=err)
        served = engine.settings.tasks
        asked = tuple(request.tasks) if request.tasks else None
        if is_auto(request.lang):  # routed per text in `predict`, once each text's language is identified
            unknown = [name for name in asked or () if name not in served]
            if unknown:
                return Decoded(request, error=_unknown_task(unknown[0], served))
            return Decoded(request, auto=(asked or served, asked is not None))
        routes: list[tuple[str, Route]] = []
        missing: dict[str, ServeError] = {}
        for task in asked or served:
            if task not in served:
                missing[task] = _unknown_task(task, served)
                continue
            try:
                routes.append((task, engine.resolve(task, request.lang)))
            except ServeError as err:
                missing[task] = err
        if not routes:
            return Decoded(request, error=next(iter(missing.values())))
        if asked and missing:
            return Decoded(request, error=_task_unavailable(engine, request.lang, routes, missing))
        unavailable = tuple((task, err.detail) for task, err in missing.items())
        return Decoded(request, None, tuple(routes), unavailable)

    def batch(self, inputs: list[Decoded]) -> list[Decoded]:
        """The batch is the list of decoded requests; `predict` packs their texts into forward passes."""
        return list(inputs)

    def predict(self, x: list[Decoded]) -> list[Answer]:
        """Label every routed (request, task) of the batch together; each request gets its results or its error."""
        jobs = [(d, task, Job(route, d.request.texts)) for d in x if d.error is None for task, route in d.routes]
        wanted = [d for d in x if d.error is None and d.auto is not None]
        auto = AutoBatch(self._engine(), [(d.request.texts, *d.auto) for d in wanted if d.auto is not None])
        outcomes = self._engine().run([job for _, _, job in jobs] + auto.jobs)
        identified = dict(zip((id(d) for d in wanted), auto.collect(outcomes[len(jobs) :]), strict=True))
        outcomes = outcomes[: len(jobs)]
        results: dict[int, dict[str, list[TextResult]]] = {}
        failed: dict[int, ServeError] = {}
        for (decoded, task, _), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, ServeError):
                failed.setdefault(id(decoded), outcome)
            else:
                results.setdefault(id(decoded), {})[task] = outcome
        answers = []
        for decoded in x:
            if id(decoded) in identified:
                answers.append(Answer(decoded, None, auto=identified[id(decoded)]))
                continue
            error = decoded.error or failed.get(id(decoded))
            answers.append(Answer(decoded, None, error) if error else Answer(decoded, results.get(id(decoded), {})))
        return answers

    def unbatch(self, output: list[Answer]) -> list[Answer]:
        """One answer per request, in order."""
        return list(output)

    def encode_response(self, output: Answer) -> MultiTaskResponse:
        """The JSON response (or error) for one request, in its route's shape, with language and worker headers."""
        decoded = output.decoded
        if output.auto is not None and decoded.auto is not None:
            status, payload, detected, extra = auto_response(
                decoded.single, decoded.auto[0], decoded.request, output.auto, result_item
            )
            auto_headers = {**extra, LANGUAGE_HEADER: detected, WORKER_HEADER: self.pid}
            return JSONResponse(payload, status_code=status, headers=auto_headers)  # type: ignore[return-value]
        language = decoded.language
        headers = {LANGUAGE_HEADER: language, WORKER_HEADER: self.pid}
        if output.error is not None:
            return JSONResponse(  # type: ignore[return-value]
                output.error.body(), status_code=output.error.status, headers={**output.error.headers, **headers}
            )
        results = output.results or {}
        if decoded.single is not None:
            body: Any = response_body(decoded.single, decoded.request, language, results[decoded.single])
        else:
            body = multi_task_response(decoded, language, results)
        return JSONResponse(body.model_dump(mode="json"), headers=headers)  # type: ignore[return-value]

    def _engine(self) -> Engine:
        if self.engine is None:
            raise HTTPException(503, "the inference worker is not set up yet")
        return self.engine


def _unknown_task(task: str, served: tuple[str, ...]) -> ServeError:
    """The 404 for a task this server does not serve."""
    return ServeError(
        404,
        "unknown_task",
        f"this server does not serve {task!r}",
        f"available tasks: {', '.join(served)}",
        extra={"available": list(served)},
    )


def _task_unavailable(
    engine: Engine, lang: str, routes: list[tuple[str, Route]], missing: dict[str, ServeError]
) -> ServeError:
    """The 404 for a `/v1/label` request naming a task its language lacks, with the tasks it has."""
    language = routes[0][1].language
    has = [task for task, _ in routes]
    for task in engine.settings.tasks:
        if task not in has and task not in missing:
            try:
                engine.resolve(task, lang)
                has.append(task)
            except ServeError:
                pass
    names = ", ".join(sorted(missing))
    return ServeError(
        404,
        "task_unavailable",
        f"no {names} adapter serves {language}: " + "; ".join(err.detail for err in missing.values()),
        f"{language} has: {', '.join(sorted(has))}; ask for those, or leave `tasks` out to run every task it has",
        extra={"available": sorted(has)},
    )


def multi_task_response(decoded: Decoded, language: str, results: dict[str, list[TextResult]]) -> MultiTaskResponse:
    """A `/v1/label` response: each task's result per text."""
    request = decoded.request
    per_task = {task: response_body(task, request, language, results[task]).results for task, _ in decoded.routes}
    return MultiTaskResponse(
        lang=request.lang,
        language=language,
        tasks=[task for task, _ in decoded.routes],
        unavailable=dict(decoded.unavailable),
        results=[
            MultiTaskResult(**{task: items[i] for task, items in per_task.items()}) for i in range(len(request.texts))
        ],
    )


def stack_out(result: TextResult) -> StackOut:
    """The response's description of the stack that labelled a text, and what computed it."""
    return StackOut.model_validate({**result.route.stack_dict(), "served_by": result.served_by})


def classification_result(r: TextResult) -> ClassificationResult:
    """One text's topic or sentiment result: label, scores, windows and stack."""
    return ClassificationResult(
        label=r.label or "",
        score=r.score or 0.0,
        scores=[LabelScore(label=label, score=score) for label, score in r.scores],
        windows=r.windows,
        windowed=r.windows > 1,
        stack=stack_out(r),
    )


def ner_result(r: TextResult) -> NerResult:
    """One text's NER result: entities, windows and stack."""
    return NerResult(
        entities=[EntityOut(type=e.type, text=e.text, start=e.start, end=e.end, score=e.score) for e in r.entities],
        windows=r.windows,
        windowed=r.windows > 1,
        stack=stack_out(r),
    )


def result_item(task: str, r: TextResult) -> NerResult | ClassificationResult:
    """One text's result in its task's shape."""
    return ner_result(r) if task == "ner" else classification_result(r)


def classification_response(
    task: str, request: LabelRequest, language: str, results: list[TextResult]
) -> ClassificationResponse:
    """A topic or sentiment response: labels, scores, windows and stack per text."""
    return ClassificationResponse(
        task=task, lang=request.lang, language=language, results=[classification_result(r) for r in results]
    )


def ner_response(task: str, request: LabelRequest, language: str, results: list[TextResult]) -> NerResponse:
    """An NER response: entities, windows and stack per text."""
    return NerResponse(task=task, lang=request.lang, language=language, results=[ner_result(r) for r in results])


def response_body(task: str, request: LabelRequest, language: str, results: list[TextResult]) -> Any:
    """The response model of `task` for one request's results (the LitServe APIs and the Ray Serve app share it)."""
    return (ner_response if task == "ner" else classification_response)(task, request, language, results)
