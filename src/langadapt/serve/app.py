"""The server: one `LitServer` over one LitAPI for every task, plus admin, health, readiness and metrics routes.

`build_server(settings, keys)` returns a ready-to-run `LitServer` whose FastAPI app (`server.app`) carries:

- `POST /v1/label` (LitServe) and `POST /v1/{task}`: labels in one language, several tasks or one; every route
  feeds the same worker pool (each worker: one base model, every task and language); see `langadapt.serve.api`.
- `GET /v1/adapters`, `POST /v1/adapters/load`, `DELETE /v1/adapters/{id}`, `POST /v1/adapters/{id}/pin|unpin`:
  admin, executed by every worker through the runtime directory's admin log (`langadapt.serve.control`).
- `GET /`: a page to try it in a browser (`langadapt.serve.page`).
- `GET /health` (the HTTP process is alive), `GET /ready` (every worker loaded the base, ≥1 stack active),
  `GET /metrics` (Prometheus, merged over processes).
- JSON errors `{error, detail, hint}` for validation (400/413/422), HTTP errors and anything unexpected.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing as mp
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from litserve.server import RegularRequestHandler
from starlette.exceptions import HTTPException as StarletteHTTPException

from langadapt.errors import LangadaptError, LanguageCodeError, StoreUnwritableError
from langadapt.inference.errors import ServeError, error_body
from langadapt.inference.routing import RouteTable
from langadapt.models.base import BaseModelInfo, resolve_base_model
from langadapt.models.kinds import ADAPTER_CONFIG, LANGUAGE_TASK, LID_TASK, TAGGING, TASK_HEAD_TYPES
from langadapt.models.language import canonical_language
from langadapt.models.manifest import Manifest
from langadapt.models.manifest import adapter_id as conventional_id
from langadapt.models.store import MANIFEST_FILE, AdapterStore, read_manifest
from langadapt.models.store_view import AdapterRef, LayeredStore, store_view
from langadapt.serve.api import POOL, InferenceAPI, TaskCall
from langadapt.serve.auth import AllowedHosts, ApiKeys
from langadapt.serve.control import ControlChannel
from langadapt.serve.gateway import Gateway, InFlight
from langadapt.serve.metrics import get_metrics
from langadapt.serve.page import add_page
from langadapt.serve.schemas import (
    SIZE_ERRORS,
    AdaptersResponse,
    AdminResult,
    ClassificationResponse,
    ErrorBody,
    LabelRequest,
    LoadRequest,
    NerResponse,
    StoreState,
    WorkerView,
)
from langadapt.serve.settings import ServerSettings
from langadapt.serve.supervisor import SupervisedServer

log = logging.getLogger(__name__)

ERROR_SLUGS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "queue_full",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


def build_server(settings: ServerSettings, keys: ApiKeys | None = None) -> ls.LitServer:
    """The LitServer with one LitAPI for every task, the gateway middleware and the langadapt routes."""
    limits = settings.limits
    os.environ.update(limits.to_env())  # request schemas read them, in this process and its forks
    channel = ControlChannel(settings.runtime())
    in_flight = InFlight(mp.Value("i", 0))
    info = resolve_base_model(settings.base)
    stores = store_view(settings.store, settings.defaults)
    problem = stores.writable.write_problem()
    if problem:
        log.warning(
            "the adapter store cannot be written (%s): serving what it holds; publishing fails until it can", problem
        )
    holder: dict[str, SupervisedServer] = {}
    gateway_options = {
        "keys": keys or ApiKeys(),
        "limits": limits,
        "tasks": settings.tasks,
        "in_flight": in_flight,
        "ready": lambda: holder["server"].pool_ready(),
        "hosts": AllowedHosts.for_bind(settings.host, settings.allowed_hosts),
        "draining": lambda: holder["server"].draining(),
    }
    api = InferenceAPI(settings)
    server = SupervisedServer(  # replaces dead workers and answers their requests; drains on SIGTERM
        api,
        runtime_dir=settings.runtime(),
        drain_timeout=settings.drain_timeout,
        in_flight=in_flight,
        accelerator=settings.accelerator,  # type: ignore[arg-type]
        workers_per_device=settings.workers or 1,  # set by its validator
        timeout=settings.timeout,
        middlewares=[(Gateway, gateway_options)],
        fast_queue=settings.fast_queue,
        model_metadata={"base": info.id, "fingerprint": info.fingerprint, "backend": settings.backend},
    )
    holder["server"] = server
    _replace_health(server.app)
    install_error_handlers(server.app, settings.tasks)
    add_task_routes(server, api, settings.tasks)
    add_routes(server.app, settings, channel, stores, info, server)
    add_page(server.app, stores, info.fingerprint, settings.tasks, settings.fallback)
    return server


def add_task_routes(server: ls.LitServer, api: InferenceAPI, tasks: tuple[str, ...]) -> None:
    """`POST /v1/<task>` for each served task, submitting to the same worker pool as `/v1/label`."""
    handler = RegularRequestHandler(api, server)
    errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 422)}
    errors.update({code: {"model": ErrorBody} for code in (429, 503)})
    for task in tasks:
        server.app.add_api_route(
            f"/v1/{task}",
            _task_endpoint(handler, task),
            methods=["POST"],
            response_model=NerResponse if TASK_HEAD_TYPES[task] == TAGGING else ClassificationResponse,
            responses=errors,
            summary=f"Label texts in one language with the {task} adapter stack",
            tags=["inference"],
        )


def _task_endpoint(handler: RegularRequestHandler, task: str) -> Callable[[LabelRequest], Awaitable[Response]]:
    """The handler of `/v1/<task>`: the validated body, as a `TaskCall`, into the shared queue."""

    async def label_task(request: LabelRequest) -> Response:
        return await handler.handle_request(TaskCall(task, request), TaskCall)

    return label_task


def _replace_health(app: FastAPI) -> None:
    """Drop LitServe's own `/health` (it means "all workers ready", which is `/ready` here)."""
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/health"]


# ------------------------------------------------------------------------------------------ errors


def install_error_handlers(app: FastAPI, tasks: tuple[str, ...]) -> None:
    """Answer every error as `{error, detail, hint}`; never echo the request's input back."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        kinds = {str(e.get("type", "")) for e in errors}
        if "json_invalid" in kinds:
            status, slug, hint = 400, "invalid_json", 'send a JSON object like {"lang": "yo", "texts": ["..."]}'
        elif kinds & SIZE_ERRORS:
            status, slug, hint = 413, "payload_too_large", "split the request into smaller ones"
            errors = [e for e in errors if e.get("type") in SIZE_ERRORS]
        else:
            status, slug, hint = 422, "invalid_request", "fix the fields named in detail; the schema is at /docs"
        detail = "; ".join(_describe(e) for e in errors[:10]) or "the request body is not valid"
        return JSONResponse(error_body(slug, detail, hint), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if isinstance(exc.detail, dict) and "error" in exc.detail:
            return JSONResponse(exc.detail, status_code=exc.status_code, headers=headers)
        if exc.status_code == 404 and request.url.path.startswith("/v1/"):
            name = request.url.path.removeprefix("/v1/").split("/")[0]
            return JSONResponse(
                error_body(
                    "unknown_task",
                    f"this server does not serve {name!r}",
                    f"available tasks: {', '.join(tasks)}; admin routes are under /v1/adapters",
                    available=list(tasks),
                ),
                status_code=404,
            )
        slug = ERROR_SLUGS.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        hint = {
            400: "send a UTF-8 JSON body",
            404: "see /docs for the routes",
            405: "see /docs for the methods each route takes",
            500: "the server logs have the traceback; report it if it persists",
            504: "the request waited too long in the queue: retry, or raise --timeout",
        }.get(exc.status_code, "")
        if exc.status_code == 400 and "parsing the body" in detail:
            slug, detail = "invalid_body", "the body is not valid UTF-8 JSON"
        return JSONResponse(error_body(slug, detail, hint), status_code=exc.status_code, headers=headers)

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", "the server failed to answer this request", "see the server logs"),
            status_code=500,
        )


def _describe(error: Mapping[str, Any]) -> str:
    """`field.path: message` for one pydantic error, without the offending input."""
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


# ------------------------------------------------------------------------------------------ routes


def add_routes(
    app: FastAPI,
    settings: ServerSettings,
    channel: ControlChannel,
    stores: LayeredStore,
    info: BaseModelInfo,
    server: ls.LitServer | None = None,
) -> None:
    """Health, readiness, metrics and the admin API."""
    tasks = settings.tasks
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 503)
    }

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness: the HTTP process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["health"], responses={503: {"model": ErrorBody}})
    def ready() -> JSONResponse:
        """Readiness: every worker loaded the base model, and at least one adapter stack is active."""
        reports = channel.reports()
        expected = settings.workers or 1
        status = getattr(server, "workers_setup_status", None)
        if status is not None:
            with contextlib.suppress(OSError, EOFError):
                expected = len(dict(status)) or expected
        ready_workers = [r for r in reports if r.get("ready")]
        stacks = sum(len(r.get("active", [])) for r in ready_workers)
        body = {
            "ready": len(ready_workers) >= expected and stacks >= 1,
            "base": info.id,
            "workers": {"ready": len(ready_workers), "expected": expected},
            "stacks": stacks,
        }
        if body["ready"]:
            return JSONResponse(body)
        hint = (
            "wait for the workers to load"
            if len(ready_workers) < expected
            else "publish a task adapter, or POST /v1/adapters/load"
        )
        return JSONResponse(
            {**error_body("not_ready", "the server cannot answer requests yet", hint), **body}, status_code=503
        )

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        """Prometheus metrics of every process."""
        payload, content_type = get_metrics().render()
        return Response(payload, media_type=content_type)

    @app.get("/v1/adapters", tags=["admin"], response_model=AdaptersResponse, responses=errors)
    def list_adapters() -> AdaptersResponse:
        """Adapters the store view offers (writable store, then packaged defaults) and what each worker holds."""
        table = RouteTable(stores.candidates(), info.fingerprint, tasks=tasks)
        available = [
            {
                **c.ref.as_dict(),
                "language": c.manifest.language,
                "task": c.manifest.task,
                "kind": c.manifest.kind,
                "labels": list(c.manifest.labels),
                "compatible": c.manifest.base_fingerprint == info.fingerprint,
                "servable": table.servable(c),
            }
            for c in table.candidates
        ]
        problem = stores.writable.write_problem()
        return AdaptersResponse(
            available=available,
            pinned=list(channel.read().pins),
            workers=[_worker_view(r) for r in channel.reports()],
            store=StoreState(root=str(stores.writable.root), writable=problem is None, problem=problem),
        )

    @app.post("/v1/adapters/load", tags=["admin"], response_model=AdminResult, responses=errors)
    def load_adapter(body: LoadRequest) -> JSONResponse:
        """Load an adapter in every worker (by id), or publish a server-side folder into the store first (path)."""
        published: Manifest | None = None
        if body.path is not None:
            published = _publish(stores.writable, body, info)
            adapter_id = published.id
        else:
            adapter_id = str(body.id)
        manifest = _latest(stores, adapter_id)
        return _run_op(channel, "load", adapter_id, _tasks_of(manifest, tasks), body.wait_s, published)

    @app.delete("/v1/adapters/{adapter_id}", tags=["admin"], response_model=AdminResult, responses=errors)
    def unload_adapter(adapter_id: str, wait_s: float = 30.0) -> JSONResponse:
        """Unload an adapter from every worker (it stays in the store and loads again on demand)."""
        manifest = _latest(stores, adapter_id)
        return _run_op(channel, "unload", adapter_id, _tasks_of(manifest, tasks), _wait(wait_s))

    @app.post("/v1/adapters/{adapter_id}/pin", tags=["admin"], response_model=AdminResult, responses=errors)
    def pin_adapter(adapter_id: str, wait_s: float = 30.0) -> JSONResponse:
        """Load an adapter everywhere and keep it from eviction."""
        manifest = _latest(stores, adapter_id)
        return _run_op(channel, "pin", adapter_id, _tasks_of(manifest, tasks), _wait(wait_s))

    @app.post("/v1/adapters/{adapter_id}/unpin", tags=["admin"], response_model=AdminResult, responses=errors)
    def unpin_adapter(adapter_id: str, wait_s: float = 30.0) -> JSONResponse:
        """Let an adapter be evicted again when the cache needs room."""
        manifest = _latest(stores, adapter_id)
        return _run_op(channel, "unpin", adapter_id, _tasks_of(manifest, tasks), _wait(wait_s))


def _wait(wait_s: float) -> float:
    if not 0 <= wait_s <= 300:
        raise ServeError(422, "invalid_request", "wait_s must be between 0 and 300 seconds", "pass e.g. ?wait_s=10")
    return wait_s


def _latest(stores: LayeredStore, adapter_id: str) -> Manifest:
    """The newest visible version's manifest, or a 404 listing the ids."""
    versions = [c for c in stores.candidates() if c.ref.id == adapter_id]
    if not versions:
        ids = sorted({c.ref.id for c in stores.candidates()})
        raise ServeError(
            404,
            "unknown_adapter",
            f"no adapter {adapter_id!r} in the store",
            'publish it with POST /v1/adapters/load {"path": ...}; GET /v1/adapters lists the ids',
            extra={"available": ids},
        )
    return max(versions, key=lambda c: (c.ref.source == "store", c.ref.version)).manifest


def _tasks_of(manifest: Manifest, served: tuple[str, ...]) -> list[str]:
    """The workers an operation on this adapter concerns: the one pool, when the server serves its task."""
    if manifest.task not in (LANGUAGE_TASK, LID_TASK) and manifest.task not in served:
        raise ServeError(
            409,
            "task_not_served",
            f"{manifest.id} is a {manifest.task} adapter and this server does not serve {manifest.task}",
            f"start the server with --tasks including {manifest.task}",
        )
    return [POOL]


def _worker_view(report: Mapping[str, Any]) -> WorkerView:
    return WorkerView(
        task=str(report.get("task", "")),
        worker=int(report.get("worker", 0)),
        pid=int(report.get("pid", 0)),
        ready=bool(report.get("ready")),
        applied=int(report.get("applied", 0)),
        generation=int(report.get("generation", 0)),
        active=list(report.get("active", [])),
        registered=list(report.get("registered", [])),
        refused=dict(report.get("refused", {})),
        cache_bytes=int(report.get("cache_bytes", 0)),
        budget_bytes=int(report.get("budget_bytes", 0)),
        last_swap=report.get("last_swap"),
        runtime=dict(report.get("runtime") or {}),
    )


def _run_op(
    channel: ControlChannel,
    op: str,
    adapter_id: str,
    tasks: list[str],
    wait_s: float,
    published: Manifest | None = None,
) -> JSONResponse:
    """Log an admin operation, wait for the workers to apply it, and say what they did."""
    seq = channel.submit(op, adapter_id, tasks)
    applied, reports = channel.wait_applied(seq, tasks, wait_s)
    refused: dict[str, str] = {}
    for report in reports:
        for ref, reason in dict(report.get("refused", {})).items():
            if AdapterRef.parse(ref).id == adapter_id:
                refused[ref] = reason
    latest_refused = published is not None and any(
        ref.startswith(f"{published.id}@v{published.version}") for ref in refused
    )
    result = AdminResult(
        op=op,
        id=adapter_id,
        applied=applied,
        published=published.model_dump(mode="json", include={"id", "version", "language", "task", "kind"})
        if published
        else None,
        workers=[_worker_view(r) for r in reports],
        refused=refused,
    )
    status = 200 if applied else 202
    if latest_refused:
        status = 409
    return JSONResponse(result.model_dump(mode="json"), status_code=status)


def _publish(store: AdapterStore, body: LoadRequest, info: BaseModelInfo) -> Manifest:
    """Publish a server-side folder (unless its files equal the latest version's); StoreError becomes 422."""
    folder = Path(str(body.path)).expanduser()
    try:
        if not (folder / MANIFEST_FILE).is_file() and not (folder / ADAPTER_CONFIG).is_file():
            raise ServeError(  # before anything walks it: `"path": "/"` must not list the whole file system
                422,
                "invalid_adapter_folder",
                f"{folder} holds neither a manifest.json nor an adapter_config.json",
                "point at a folder written by save_adapter(..., use_safetensors=True), or one with a manifest.json",
            )
        if (folder / MANIFEST_FILE).is_file() and body.task is None:
            manifest = read_manifest(folder / MANIFEST_FILE)
            same = _same_as_latest(store, manifest.id, folder)
            return same or store.publish(folder, manifest)
        if body.task is None or body.language is None:
            raise ServeError(
                422,
                "invalid_request",
                "publishing a folder without a manifest.json needs `language` and `task`",
                'add them to the request, e.g. {"path": ..., "language": "yo", "task": "ner"}',
            )
        language = canonical_language(body.language)
        extra: dict[str, Any] = {}
        if body.language_adapter is not None:
            versions = store.versions(body.language_adapter)
            if not versions:
                raise ServeError(
                    422,
                    "invalid_request",
                    f"language adapter {body.language_adapter!r} is not in the store",
                    "publish the language adapter first",
                )
            extra["language_adapter"] = {"id": body.language_adapter, "version": versions[-1]}
        ident = body.adapter_id or conventional_id(
            language, body.task, body.kind if body.task == LANGUAGE_TASK else None
        )
        same = _same_as_latest(store, ident, folder)
        if same is not None:
            return same
        return store.import_adapters_folder(
            folder,
            language=language,
            task=body.task,
            kind=body.kind,
            base_model=info.id,
            base_fingerprint=info.fingerprint,
            id=ident,
            extra=extra,
        )
    except ServeError:
        raise
    except StoreUnwritableError as err:
        raise ServeError(503, "store_unwritable", err.message, err.hint) from None
    except LanguageCodeError as err:
        raise ServeError(422, "invalid_request", err.message, err.hint) from None
    except LangadaptError as err:
        raise ServeError(422, "invalid_adapter_folder", err.message, err.hint) from None
    except (OSError, ValueError) as err:
        raise ServeError(
            422, "invalid_adapter_folder", f"cannot publish {folder}: {err}", "point at a readable adapter folder"
        ) from None


def _same_as_latest(store: AdapterStore, adapter_id: str, folder: Path) -> Manifest | None:
    """The latest stored version of `adapter_id` when `folder` holds exactly its files (publishing is idempotent)."""
    versions = store.versions(adapter_id)
    if not versions:
        return None
    latest = store.get(adapter_id, versions[-1])
    files: dict[str, Path] = {}
    for path in folder.rglob("*"):
        if path.is_file() and path.name != MANIFEST_FILE:
            rel = path.relative_to(folder).as_posix()
            if rel not in latest.files:
                return None  # stop at the first file the latest version lacks, however large the folder
            files[rel] = path
    if set(files) != set(latest.files):
        return None
    for rel, path in files.items():
        if hashlib.sha256(path.read_bytes()).hexdigest() != latest.files[rel]:
            return None
    return latest
