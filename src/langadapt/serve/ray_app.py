"""The HTTP API of `langadapt serve` as a Ray Serve application, with labelers multiplexed by adapter stack.

Two deployments (`build` binds them; `serve run langadapt.serve.ray_app:build base=embedded` runs them):

- `LangadaptIngress` (FastAPI, built on each replica): the LitServe server's label routes `POST /v1/{task}` with
  the same request and response models (`langadapt.serve.schemas`), the same error bodies (its
  `install_error_handlers`) and the same `Gateway` middleware (API keys, body size, queue depth, request metrics),
  plus `/health`, `/ready` and `/metrics`. It resolves each request's language to a route with its own `Router`
  over the store, and a known route to its adapter stack id (`str(StackKey)`, e.g.
  `yor_Latn-mlm-seq_bn@v1+yor_Latn-ner@v1`), then calls
- `Labeler` through `handle.options(multiplexed_model_id=<stack id>)`: one `Engine` per replica. Its
  `@serve.multiplexed` loader activates the stack in that engine (a `HeldStack`; Ray's LRU unload evicts it again),
  and replicas report the stack ids they hold, so Ray routes a stack's requests to a replica that already holds it.
  `@serve.batch` gathers concurrent requests (Ray splits batches by stack id) into one `Engine.run`.

A request whose language has no route never reaches a labeler: the ingress answers the LitServe server's 404
`unknown_language` body. Both deployments follow the store's generation counter, so publishing a new adapter
version needs no restart. Responses carry `x-langadapt-stack` (the stack that labelled them), `x-langadapt-replica`
(the labeler replica) and `x-langadapt-replica-stacks` (the stack ids that replica holds) besides the server's
`x-langadapt-language`; the JSON bodies are the LitServe server's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import Field, field_validator
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from langadapt.errors import SettingsError
from langadapt.inference.cache import AdapterLoadError
from langadapt.inference.engine import Engine, Job, TextResult
from langadapt.inference.errors import ServeError, error_body
from langadapt.inference.language_id import is_auto
from langadapt.inference.routing import Router, StackKey
from langadapt.models.base import resolve_base_model
from langadapt.models.kinds import TAGGING, TASK_HEAD_TYPES
from langadapt.models.store_view import store_view
from langadapt.serve.api import LANGUAGE_HEADER, response_body
from langadapt.serve.app import install_error_handlers
from langadapt.serve.auth import ApiKeys
from langadapt.serve.gateway import RETRY_AFTER_S, Gateway, InFlight
from langadapt.serve.metrics import NO_LANGUAGE, get_metrics
from langadapt.serve.schemas import ClassificationResponse, ErrorBody, LabelRequest, NerResponse
from langadapt.serve.settings import ServingSettings, WatchInterval

log = logging.getLogger(__name__)

INGRESS, LABELER = "LangadaptIngress", "Labeler"
STACK_HEADER = "x-langadapt-stack"
REPLICA_HEADER = "x-langadapt-replica"
HELD_HEADER = "x-langadapt-replica-stacks"
READY_TIMEOUT_S = 10.0


def stack_id(key: StackKey) -> str:
    """The multiplexed model id of an adapter stack: its key as the engine prints it."""
    return str(key)


# ------------------------------------------------------------------------------------------ settings


class RaySettings(ServingSettings):
    """The serving settings plus replicas and placement: the application builder's arguments, pickled into replicas.

    Arguments come as `serve run ... key=value` or under `args:` in a Serve config file; unknown keys are refused.
    """

    # Replicas across a cluster poll a store on a shared volume: once a second keeps that load low, and a newly
    # published version still goes live within about a second.
    watch_interval: WatchInterval = 1.0
    max_stacks_per_replica: int = Field(default=32, ge=1, description="Stacks a labeler replica holds (Ray LRU).")
    labeler_replicas: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default=1, description='Labeler replicas, or "auto" (Ray Serve autoscaling).'
    )
    labeler_cpus: float = Field(default=1.0, ge=0, description="CPUs each labeler replica reserves.")
    labeler_gpus: float = Field(default=0.0, ge=0, description="GPUs each labeler replica reserves.")
    labeler_max_ongoing_requests: int = Field(default=32, ge=1, description="Requests a labeler replica takes at once.")
    ingress_replicas: int = Field(default=1, ge=1, description="HTTP ingress replicas.")
    ingress_cpus: float = Field(default=0.5, ge=0, description="CPUs each ingress replica reserves.")

    @field_validator("lid_threshold")
    @classmethod
    def _no_language_id(cls, value: float | None) -> float | None:
        """The app answers `lang: "auto"` with a 422 (`LangadaptIngress.label`): a threshold would do nothing."""
        if value is not None:
            raise SettingsError(
                'the Ray Serve app does not identify languages (lang "auto" answers 422), so it has no lid_threshold',
                "leave lid_threshold out; `langadapt serve --lid-threshold` serves lang auto",
            )
        return value


# ------------------------------------------------------------------------------------------ labeler


@dataclass(frozen=True)
class LabelCall:
    """One request as the ingress passes it on: task, the language code as sent, the texts."""

    task: str
    lang: str
    texts: tuple[str, ...]


@dataclass(frozen=True)
class LabelReply:
    """A labeler's answer: results or an error, the stack that served, and what the replica holds."""

    results: list[TextResult] | None
    error: ServeError | None
    stack: str
    replica: str
    held: tuple[str, ...]


class HeldStack:
    """A multiplexed "model": one adapter stack active in its replica's engine; unloading it evicts the stack."""

    def __init__(self, stack: str, key: StackKey, engine: Engine, registry: dict[str, HeldStack]) -> None:
        self.stack = stack
        self.key = key
        self.engine = engine
        self.registry = registry
        self.released = False

    def release(self) -> None:
        """Evict the stack from the engine and forget it (once; a stack loaded again is another `HeldStack`)."""
        if self.released:
            return
        self.released = True
        if self.registry.get(self.stack) is self:
            del self.registry[self.stack]
        self.engine.cache.evict(self.key)

    def __del__(self) -> None:
        """Ray's multiplexer calls this when its LRU unloads the stack (and the collector may, later: a no-op)."""
        try:
            self.release()
        except Exception:  # never raise from a finaliser (e.g. at interpreter exit)
            log.debug("releasing %s failed", self.stack, exc_info=True)


@serve.deployment(name=LABELER, max_ongoing_requests=RaySettings().labeler_max_ongoing_requests)
class Labeler:
    """One engine per replica; stacks load through `@serve.multiplexed`, requests of one stack run batched."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self.engine = Engine(settings)
        context = serve.get_replica_context()
        self.replica = str(getattr(context.replica_id, "unique_id", context.replica_id))
        self.held: dict[str, HeldStack] = {}
        self._keys: dict[str, StackKey] = {}
        self.batches = 0
        self.largest_batch = 0
        self._stacks: Callable[[str], Awaitable[HeldStack]] = serve.multiplexed(
            max_num_models_per_replica=settings.max_stacks_per_replica
        )(self._loader())
        batcher: Any = self._run_batch  # `@serve.batch` adds the setters; its type hints do not say so
        batcher.set_max_batch_size(settings.max_batch_size)
        batcher.set_batch_wait_timeout_s(settings.batch_timeout)
        self._stop = threading.Event()
        self._follower = threading.Thread(target=self._follow_store, name="langadapt-store", daemon=True)
        self._follower.start()
        log.info("labeler replica %s ready on %s", self.replica, self.engine.device)

    def _loader(self) -> Callable[[str], Awaitable[HeldStack]]:
        """The multiplexed loader (a plain function: Ray keeps its LRU cache as an attribute of it)."""

        async def load_stack(stack: str) -> HeldStack:
            key = self._keys[stack]
            await asyncio.to_thread(self.engine.cache.activate, key)
            held = HeldStack(stack, key, self.engine, self.held)
            self.held[stack] = held
            return held

        return load_stack

    def _follow_store(self) -> None:
        """Hot loading: follow the store's generation (the engine preloads changed routes, then switches)."""
        while not self._stop.wait(self.settings.watch_interval):
            try:
                self.engine.refresh()
            except Exception:  # keep following; the next tick retries
                log.exception("store refresh failed")

    async def label(self, call: LabelCall) -> LabelReply:
        """Label one request under its stack: the multiplexed stack is loaded (or found held) first."""
        try:
            route = self.engine.resolve(call.task, call.lang)
        except ServeError as err:  # the store moved between the ingress's resolution and this one
            return self._reply(None, err, "")
        stack = stack_id(route.key)  # this replica's own view wins if the ingress's table was older
        self._keys[stack] = route.key
        try:
            await self._stacks(stack)
        except AdapterLoadError as err:  # `Engine.run` refuses it and re-routes, or answers 503
            log.warning("cannot activate %s: %s", stack, err.reason)
        outcome = await self._run_batch(Job(route, call.texts))
        if isinstance(outcome, ServeError):
            return self._reply(None, outcome, stack)
        served = stack_id(outcome[0].route.key) if outcome else stack
        return self._reply(outcome, None, served)

    @serve.batch  # sized from the settings in __init__
    async def _run_batch(self, jobs: list[Job]) -> list[list[TextResult] | ServeError]:
        """Concurrent requests of one stack in shared forward passes (Ray splits batches by multiplexed id)."""
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        return await asyncio.to_thread(self.engine.run, jobs)

    def _reply(self, results: list[TextResult] | None, error: ServeError | None, stack: str) -> LabelReply:
        return LabelReply(results, error, stack, self.replica, tuple(self.held))

    def status(self) -> dict[str, Any]:
        """This replica: its id, the stacks it holds for Ray, and its engine's cache."""
        engine = self.engine.status()
        return {
            "replica": self.replica,
            "stacks": list(self.held),
            "device": str(self.engine.device),
            "generation": engine["generation"],
            "active": [slot["stack"] for slot in engine["active"]],
            "cache_bytes": engine["cache_bytes"],
            "budget_bytes": engine["budget_bytes"],
            "batches": self.batches,
            "largest_batch": self.largest_batch,
        }

    def __del__(self) -> None:
        """Stop following the store."""
        self._stop.set()


# ------------------------------------------------------------------------------------------ ingress


async def _resolved(response: Any) -> Any:
    """Await a `DeploymentResponse` (as a coroutine, for `asyncio.wait_for`)."""
    return await response


@serve.deployment(name=INGRESS, max_ongoing_requests=256)
@serve.ingress()
class LangadaptIngress:
    """The HTTP API: validation, auth and limits as the LitServe server does them, routing to stacks, encoding."""

    def __init__(self, labeler: DeploymentHandle, settings: RaySettings) -> None:
        self.labeler = labeler
        self.settings = settings
        os.environ.update(settings.limits.to_env())  # the request schema reads the limits from the environment
        # No admin API here: admin routes stay closed whatever the host (the store is the way to publish).
        self.keys = ApiKeys.load()
        self.info = resolve_base_model(settings.base)
        stores = store_view(settings.store, settings.defaults)
        self.router = Router(stores, self.info.fingerprint, fallbacks=settings.fallback, tasks=settings.tasks)
        self._checked = time.monotonic()

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The FastAPI app, built on the replica (Ray calls this after `__init__`)."""
        return build_asgi_app(self)

    def _follow_store(self) -> None:
        """Install a new routing table when the store's generation moved (checked at most every interval)."""
        now = time.monotonic()
        if now - self._checked < self.settings.watch_interval:
            return
        self._checked = now
        table = self.router.stage()
        if table is not None:
            self.router.install(table)

    async def label(self, task: str, request: LabelRequest) -> JSONResponse:
        """Resolve, call the labeler multiplexed by stack, and answer as the LitServe server does."""
        self._follow_store()
        if is_auto(request.lang):  # replicas are multiplexed by stack: the stack must be known before the call
            unsupported = ServeError(
                422,
                "language_id_unsupported",
                'lang "auto" is served by `langadapt serve`, not by the Ray Serve app (its replicas are chosen by '
                "adapter stack, so the language must be known first)",
                "send lang with the texts' language code",
            )
            return _error_response(unsupported, NO_LANGUAGE)
        try:
            route = self.router.resolve(task, request.lang)
        except ServeError as err:
            return _error_response(err, NO_LANGUAGE)
        stack = stack_id(route.key)
        call = LabelCall(task, request.lang, tuple(request.texts))
        response = self.labeler.options(multiplexed_model_id=stack).label.remote(call)
        try:
            reply: LabelReply = await asyncio.wait_for(_resolved(response), self.settings.timeout)
        except TimeoutError:
            response.cancel()
            timeout = ServeError(
                504,
                "timeout",
                f"the request took longer than {self.settings.timeout:g} s",
                "retry, or raise the application's timeout",
            )
            return _error_response(timeout, route.language)
        except BackPressureError:
            full = ServeError(
                429,
                "queue_full",
                f"every {task} labeler replica has its queue full",
                "retry after the Retry-After delay, or send fewer concurrent requests",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            return _error_response(full, route.language)
        replica = {STACK_HEADER: reply.stack, REPLICA_HEADER: reply.replica, HELD_HEADER: ",".join(reply.held)}
        if reply.error is not None:
            return _error_response(reply.error, route.language, replica)
        results = reply.results or []
        language = results[0].route.language if results else route.language
        body = response_body(task, request, language, results)  # as the LitServe APIs encode it
        return JSONResponse(body.model_dump(mode="json"), headers={LANGUAGE_HEADER: language, **replica})

    async def ready(self) -> JSONResponse:
        """Ready when a labeler replica answers and the store offers at least one route."""
        table = self.router.table
        routes = sum(len(table.languages(task)) for task in self.settings.tasks)
        try:
            labeler = await asyncio.wait_for(_resolved(self.labeler.status.remote()), READY_TIMEOUT_S)
        except Exception:  # any failure means "not ready" (logged)
            log.warning("no labeler replica answered the readiness check", exc_info=True)
            labeler = None
        body = {
            "ready": labeler is not None and routes >= 1,
            "base": self.info.id,
            "routes": routes,
            "labeler": labeler,
        }
        if body["ready"]:
            return JSONResponse(body)
        hint = "wait for the labeler replicas to start" if labeler is None else "publish a task adapter into the store"
        return JSONResponse(
            {**error_body("not_ready", "the application cannot answer requests yet", hint), **body}, status_code=503
        )


def _error_response(error: ServeError, language: str, extra: Mapping[str, str] | None = None) -> JSONResponse:
    """The server's JSON error, with its status and headers, and the routed language for the metrics."""
    headers = {**error.headers, LANGUAGE_HEADER: language, **(extra or {})}
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def build_asgi_app(ingress: LangadaptIngress) -> FastAPI:
    """The label routes of the LitServe server, its error handlers and its gateway, over one ingress replica."""
    settings = ingress.settings
    app = FastAPI(
        title="langadapt (Ray Serve)",
        description="NER, sentiment and topic labelling by language code, adapters multiplexed over replicas.",
    )
    app.add_middleware(
        Gateway,
        keys=ingress.keys,
        limits=settings.limits,
        tasks=settings.tasks,
        in_flight=InFlight(),
        ready=None,
    )
    install_error_handlers(app, settings.tasks)
    errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 404, 413, 422, 429, 504)}
    for task in settings.tasks:
        model = NerResponse if TASK_HEAD_TYPES[task] == TAGGING else ClassificationResponse
        app.post(f"/v1/{task}", response_model=model, responses=errors, tags=["label"])(_label_route(ingress, task))

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["health"], responses={503: {"model": ErrorBody}})
    async def ready() -> JSONResponse:
        """Readiness: a labeler replica answers and at least one route exists."""
        return await ingress.ready()

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        """Prometheus metrics of this ingress replica (requests and latency by task, language and status)."""
        payload, content_type = get_metrics().render()
        return Response(payload, media_type=content_type)

    @app.api_route("/v1/adapters", methods=["GET", "POST"], tags=["admin"], include_in_schema=False)
    @app.api_route(
        "/v1/adapters/{path:path}", methods=["GET", "POST", "DELETE"], tags=["admin"], include_in_schema=False
    )
    def admin(path: str = "") -> JSONResponse:
        """The admin API is the LitServe server's alone; here adapters come and go through the store."""
        return JSONResponse(
            error_body(
                "not_implemented",
                "the Ray Serve application has no admin API",
                "publish adapter versions into the store: every replica follows its generation",
            ),
            status_code=501,
        )

    return app


def _label_route(ingress: LangadaptIngress, task: str) -> Callable[[LabelRequest], Awaitable[JSONResponse]]:
    async def label(request: LabelRequest) -> JSONResponse:
        return await ingress.label(task, request)

    label.__name__ = f"label_{task}"
    label.__doc__ = f"Label texts in one language with the {task} adapter stack for that language."
    return label


# ------------------------------------------------------------------------------------------ builder


def build(args: Mapping[str, Any] | RaySettings | None = None) -> Application:
    """The application: `serve run langadapt.serve.ray_app:build base=embedded store=/srv/adapters`."""
    settings = args if isinstance(args, RaySettings) else RaySettings.model_validate(dict(args or {}))
    labeler = (
        cast(Deployment, Labeler)
        .options(
            num_replicas=settings.labeler_replicas,
            max_ongoing_requests=settings.labeler_max_ongoing_requests,
            ray_actor_options={"num_cpus": settings.labeler_cpus, "num_gpus": settings.labeler_gpus},
        )
        .bind(settings)
    )
    return (
        cast(Deployment, LangadaptIngress)
        .options(num_replicas=settings.ingress_replicas, ray_actor_options={"num_cpus": settings.ingress_cpus})
        .bind(labeler, settings)
    )
