"""The ASGI middleware every request passes first: auth, body size, admission (queue depth), request metrics.

Order of checks, so that cheap refusals come before work: `Host` header (400 `host_not_allowed` for a host the
server does not answer to: DNS rebinding) → a stopping server (503 `shutting_down` for all but `/health` and
`/metrics`) → route class → API key (401 missing, 403 wrong; admin routes always need an admin key, and the
server always has one) → declared body size (413) → worker readiness (503) and queue depth (429, both with
Retry-After) → the app, reading at most `Limits.body_bytes` (413 beyond). Every refusal is a JSON
`{error, detail, hint}`. Each inference request is counted and timed by task, language and status; the language
comes from the worker's `x-langadapt-language` response header (`none` when refused earlier).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langadapt.inference.errors import error_body
from langadapt.serve.auth import AllowedHosts, ApiKeys, host_name, presented_key
from langadapt.serve.limits import Limits
from langadapt.serve.metrics import NO_LANGUAGE, get_metrics

ADMIN_PREFIX = "/v1/adapters"
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
LANGUAGE_HEADER = b"x-langadapt-language"
RETRY_AFTER_S = 1
LIVE_PATHS = frozenset({"/health", "/metrics"})  # answered while the server drains (it is alive, not ready)
MULTI_TASK = "label"  # `/v1/label`: several tasks per request


class InFlight:
    """A shared in-flight counter (a `multiprocessing.Value` across forked HTTP processes, or a plain int)."""

    def __init__(self, shared: Any | None = None) -> None:
        self._shared = shared
        self._local = 0

    @property
    def value(self) -> int:
        """The current count."""
        return int(self._shared.value) if self._shared is not None else self._local

    def try_add(self, limit: int) -> bool:
        """Add one unless the count has reached `limit`; whether it was added."""
        if self._shared is None:
            if self._local >= limit:
                return False
            self._local += 1
            return True
        with self._shared.get_lock():
            if self._shared.value >= limit:
                return False
            self._shared.value += 1
            return True

    def remove(self) -> None:
        """Take one away."""
        if self._shared is None:
            self._local = max(0, self._local - 1)
            return
        with self._shared.get_lock():
            self._shared.value = max(0, self._shared.value - 1)


async def send_error(
    send: Send, status: int, error: str, detail: str, hint: str, headers: Mapping[str, str] | None = None
) -> None:
    """Answer with the server's JSON error body."""
    body = json.dumps(error_body(error, detail, hint)).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Gateway:
    """Auth, limits, admission and request metrics in front of the LitServe app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: ApiKeys,
        limits: Limits,
        tasks: tuple[str, ...],
        in_flight: InFlight,
        ready: Callable[[], bool] | None = None,
        hosts: AllowedHosts | None = None,
        draining: Callable[[], bool] | None = None,
    ) -> None:
        self.app = app
        self.draining = draining
        self.hosts = hosts or AllowedHosts()
        self.keys = keys
        self.limits = limits
        self.tasks = tasks
        self.in_flight = in_flight
        self.ready = ready

    def _task_of(self, path: str) -> str | None:
        """The metrics label of an inference route: its task, or `label` for `/v1/label`."""
        if path.startswith("/v1/") and path.count("/") == 2:
            task = path[len("/v1/") :]
            return task if task in self.tasks or task == MULTI_TASK else None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not await self._host_allowed(scope, send):
            return
        path: str = scope["path"]
        if self.draining is not None and path not in LIVE_PATHS and self.draining():
            await send_error(
                send,
                503,
                "shutting_down",
                "the server is stopping: it finishes the requests it holds and takes no new ones",
                "retry after the Retry-After delay (on another replica, if there is one)",
                {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"},
            )
            return
        task = self._task_of(path)
        if task is None:
            admin = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
            if admin and not (await self._admin_allowed(scope, send) and await _json_body(scope, send)):
                return
            await self.app(scope, self._limited(receive), send)
            return
        await self._inference(task, scope, receive, send)

    async def _host_allowed(self, scope: Scope, send: Send) -> bool:
        """Whether the request's `Host` is one this server answers to; answers 400 otherwise."""
        if self.hosts.any:
            return True
        header = next((v for n, v in scope["headers"] if n.lower() == b"host"), None)
        if self.hosts.allows(header):
            return True
        shown = host_name(header)[:100] or "(none)"
        await send_error(
            send,
            400,
            "host_not_allowed",
            f"this server does not answer to the host {shown!r} named in the Host header",
            f"address it as one of {', '.join(self.hosts.names)}, or start it with --allowed-hosts naming "
            "the host it is reached by",
        )
        return False

    async def _admin_allowed(self, scope: Scope, send: Send) -> bool:
        """Admin routes: an admin key, always (with none configured, the admin API is off)."""
        if not self.keys.admin:
            await send_error(
                send,
                403,
                "admin_disabled",
                "the admin API is disabled: this server has no admin key",
                "set LANGADAPT_ADMIN_KEYS (or an `admin` list in --api-keys-file), or start it with `langadapt "
                "serve`, which generates one",
            )
            return False
        key = presented_key(scope["headers"])
        if key is None:
            await self._missing_key(send, admin=True)
            return False
        if self.keys.role_of(key) != "admin":
            await send_error(
                send,
                403,
                "forbidden",
                "this key may not use the admin API",
                "send an admin key (LANGADAPT_ADMIN_KEYS) in `Authorization: Bearer <key>`",
            )
            return False
        return True

    async def _missing_key(self, send: Send, *, admin: bool) -> None:
        which = "an admin key" if admin else "an API key"
        await send_error(
            send,
            401,
            "unauthorized",
            f"this route needs {which}",
            f"send {which} as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            {"WWW-Authenticate": "Bearer"},
        )

    async def _inference(self, task: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = {"code": 500, "language": NO_LANGUAGE}

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == LANGUAGE_HEADER:
                        status["language"] = value.decode("latin-1")
            await send(message)

        try:
            if await self._admit(task, scope, tracked_send):
                counter = self.in_flight
                metrics = get_metrics()
                metrics.queue_depth.labels(task).inc()
                try:
                    await self.app(scope, self._limited(receive), tracked_send)
                finally:
                    counter.remove()
                    metrics.queue_depth.labels(task).dec()
        finally:
            metrics = get_metrics()
            labels = (task, status["language"], str(status["code"]))
            metrics.requests.labels(*labels).inc()
            metrics.request_seconds.labels(*labels).observe(time.perf_counter() - started)

    async def _admit(self, task: str, scope: Scope, send: Send) -> bool:
        """Key, declared size, readiness and queue depth; answers the refusal itself and returns False."""
        if self.keys.inference_requires_key:
            key = presented_key(scope["headers"])
            if key is None:
                await self._missing_key(send, admin=False)
                return False
            if self.keys.role_of(key) is None:
                await send_error(send, 403, "forbidden", "this API key is not valid", "check the key you send")
                return False
        if not await _json_body(scope, send):
            return False
        declared = _content_length(scope)
        if declared is not None and declared > self.limits.body_bytes:
            await send_error(
                send,
                413,
                "payload_too_large",
                f"the request body has {declared} bytes; the limit is {self.limits.body_bytes}",
                "send fewer or shorter texts per request",
            )
            return False
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if self.ready is not None and not self.ready():
            await send_error(
                send,
                503,
                "not_ready",
                "no inference worker is ready yet (still loading the base model and adapters)",
                "retry after the Retry-After delay; GET /ready says when the server is ready",
                retry,
            )
            return False
        if not self.in_flight.try_add(self.limits.queue):
            await send_error(
                send,
                429,
                "queue_full",
                f"{self.limits.queue} inference requests are already waiting",
                "retry after the Retry-After delay, or send fewer concurrent requests",
                retry,
            )
            return False
        return True

    def _limited(self, receive: Receive) -> Receive:
        """`receive`, refusing a body (chunked or lying about its length) once it passes the byte limit."""
        total = 0
        limit = self.limits.body_bytes

        async def limited() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise HTTPException(
                        413,
                        detail={
                            "error": "payload_too_large",
                            "detail": f"the request body passed the limit of {limit} bytes",
                            "hint": "send fewer or shorter texts per request",
                        },
                    )
            return message

        return limited


async def _json_body(scope: Scope, send: Send) -> bool:
    """A request with a body must declare it JSON; answers 415 otherwise and returns False."""
    declared = _content_length(scope)
    chunked = any(n.lower() == b"transfer-encoding" and b"chunked" in v.lower() for n, v in scope["headers"])
    if not chunked and not declared:
        return True
    media = _media_type(scope)
    if media is not None and (media == "application/json" or media.endswith("+json")):
        return True
    sent = f"as {media}" if media else "without a Content-Type"
    await send_error(
        send,
        415,
        "unsupported_media_type",
        f"the body is sent {sent}, not as JSON",
        "send JSON with `Content-Type: application/json` (curl: -H 'Content-Type: application/json')",
    )
    return False


def _media_type(scope: Scope) -> str | None:
    """The request's media type, lower-cased without parameters; None when it declares none."""
    for name, value in scope["headers"]:
        if name.lower() == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower() or None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
