"""The gateway middleware and the error handlers, in process: auth matrix, limits, admission, error bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from langadapt.serve.app import install_error_handlers
from langadapt.serve.auth import AllowedHosts, ApiKeys
from langadapt.serve.gateway import Gateway, InFlight
from langadapt.serve.limits import Limits
from langadapt.serve.metrics import get_metrics
from langadapt.serve.schemas import LabelRequest

API, ADMIN = "api-key-123456", "admin-key-123456"
TASKS = ("ner", "sentiment")
LIMITS = Limits(texts=4, chars=50, body_bytes=600, queue=2)


def build(
    keys: ApiKeys | None = None,
    ready: bool = True,
    in_flight: int = 0,
    hosts: AllowedHosts | None = None,
    draining: bool = False,
) -> tuple[FastAPI, InFlight]:
    app = FastAPI()
    install_error_handlers(app, TASKS)

    @app.post("/v1/ner")
    async def ner(request: LabelRequest) -> JSONResponse:
        return JSONResponse({"texts": len(request.texts)}, headers={"x-langadapt-language": "yor_Latn"})

    @app.post("/v1/sentiment")
    async def sentiment(request: LabelRequest) -> JSONResponse:
        raise RuntimeError("a bug, with a secret inside")

    @app.get("/v1/adapters")
    async def adapters() -> dict[str, Any]:
        return {"available": []}

    @app.delete("/v1/adapters/{adapter_id}")
    async def unload(adapter_id: str) -> dict[str, Any]:
        return {"op": "unload", "id": adapter_id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    counter = InFlight()  # one queue for every inference route: one worker pool serves them all
    for _ in range(in_flight):
        counter.try_add(LIMITS.queue)
    keys = keys or ApiKeys(api=(API.encode(),), admin=(ADMIN.encode(),))
    options = {"keys": keys, "limits": LIMITS, "tasks": TASKS, "in_flight": counter, "ready": lambda: ready}
    options.update(hosts=hosts, draining=lambda: draining)
    app.add_middleware(Gateway, **options)
    return app, counter


BODY = {"lang": "yo", "texts": ["Ọmọ náà lọ sí ilé ìwé."]}


class InProcess:
    """A synchronous client over httpx's ASGI transport (no sockets, no lifespan)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def check_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail", "hint"} and body["error"] == error, body
    assert body["hint"], body
    return body


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong-key-000"}, 403, "forbidden"),
        ({"X-API-Key": "wrong-key-000"}, 403, "forbidden"),
        ({"Authorization": f"Bearer {API}"}, 200, None),
        ({"X-API-Key": API}, 200, None),
        ({"Authorization": f"Bearer {ADMIN}"}, 200, None),
    ],
)
def test_inference_auth(headers: dict[str, str], status: int, error: str | None) -> None:
    app, counters = build()
    response = InProcess(app).post("/v1/ner", json=BODY, headers=headers)
    if error:
        check_error(response, status, error)
        assert response.headers.get("WWW-Authenticate") == ("Bearer" if status == 401 else None)
    else:
        assert response.status_code == 200 and response.json() == {"texts": 1}
    assert counters.value == 0  # released after every answer


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {API}"}, 403, "forbidden"),
        ({"Authorization": "Bearer wrong-key-000"}, 403, "forbidden"),
        ({"X-API-Key": ADMIN}, 200, None),
    ],
)
def test_admin_auth(headers: dict[str, str], status: int, error: str | None) -> None:
    app, _ = build()
    response = InProcess(app).get("/v1/adapters", headers=headers)
    if error:
        check_error(response, status, error)
    else:
        assert response.status_code == 200


def test_admin_is_never_open_without_a_key() -> None:
    """No API keys: inference is open, admin is not (`langadapt serve` always has an admin key; none: admin off)."""
    generated, _ = build(ApiKeys(admin=(ADMIN.encode(),)))
    client = InProcess(generated)
    assert client.post("/v1/ner", json=BODY).status_code == 200
    response = client.request("DELETE", "/v1/adapters/yor_Latn-ner")
    check_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    check_error(client.get("/v1/adapters"), 401, "unauthorized")
    ok = client.request("DELETE", "/v1/adapters/yor_Latn-ner", headers={"Authorization": f"Bearer {ADMIN}"})
    assert ok.status_code == 200 and ok.json()["id"] == "yor_Latn-ner"

    keyless, _ = build(ApiKeys())
    check_error(InProcess(keyless).get("/v1/adapters"), 403, "admin_disabled")
    check_error(InProcess(keyless).request("DELETE", "/v1/adapters/yor_Latn-ner"), 403, "admin_disabled")
    closed, _ = build(ApiKeys(api=(API.encode(),)))
    check_error(InProcess(closed).get("/v1/adapters", headers={"X-API-Key": API}), 403, "admin_disabled")


LOOPBACK = AllowedHosts.for_bind("127.0.0.1")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.2"])
@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/adapters"), ("POST", "/v1/ner"), ("GET", "/health")])
def test_a_host_the_server_does_not_answer_to_is_refused(host: str, method: str, path: str) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 reaches a loopback server under its own name."""
    app, counters = build(hosts=LOOPBACK)
    kwargs: dict[str, Any] = {"json": BODY} if method == "POST" else {}
    response = InProcess(app).request(method, path, headers={**ADMIN_AUTH, "Host": host}, **kwargs)
    body = check_error(response, 400, "host_not_allowed")
    assert host.split(":")[0] in body["detail"] and "--allowed-hosts" in body["hint"]
    assert counters.value == 0


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000"])
def test_loopback_names_with_any_port_are_answered(host: str) -> None:
    app, _ = build(hosts=LOOPBACK)
    client = InProcess(app)
    assert client.get("/v1/adapters", headers={**ADMIN_AUTH, "Host": host}).status_code == 200
    assert client.post("/v1/ner", json=BODY, headers={**AUTH, "Host": host}).status_code == 200


def test_a_server_beyond_loopback_answers_any_host_unless_configured() -> None:
    anywhere, _ = build(hosts=AllowedHosts.for_bind("0.0.0.0"))
    assert InProcess(anywhere).get("/health", headers={"Host": "langadapt.internal:8000"}).status_code == 200
    named, _ = build(hosts=AllowedHosts.for_bind("0.0.0.0", ["langadapt.internal"]))
    assert InProcess(named).get("/health", headers={"Host": "langadapt.internal:8000"}).status_code == 200
    check_error(InProcess(named).get("/health", headers={"Host": "10.1.2.3"}), 400, "host_not_allowed")


def test_admin_routes_send_no_cors_headers() -> None:
    app, _ = build(hosts=LOOPBACK)
    client = InProcess(app)
    origin = {"Origin": "http://evil.example", "Host": "localhost:8000"}
    response = client.get("/v1/adapters", headers={**ADMIN_AUTH, **origin})
    assert response.status_code == 200
    preflight = client.request("OPTIONS", "/v1/adapters", headers={**origin, "Access-Control-Request-Method": "DELETE"})
    for answer in (response, preflight):
        assert not any(name.lower().startswith("access-control-") for name in answer.headers), answer.headers
    assert preflight.status_code in (401, 405)


def test_public_routes_need_no_key() -> None:
    app, _ = build()
    assert InProcess(app).get("/health").status_code == 200
    assert InProcess(app).get("/openapi.json").status_code == 200


AUTH = {"Authorization": f"Bearer {API}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"content": b'{"lang": "yo",', "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
        ({"content": b'{"lang": "yo", "texts": ["\xff"]}', "headers": JSON}, 400, "invalid_body"),
        ({"content": b'{"lang": "yo", "texts": ["\xed\xa0\x80"]}', "headers": JSON}, 422, "invalid_request"),
        ({"content": b"lang=yo", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, None),
        ({"content": json.dumps(BODY).encode(), "headers": {}}, 415, None),
        ({"content": b"[1]", "headers": JSON}, 422, "invalid_request"),
        ({"content": b"[" * 100_000, "headers": JSON}, 413, "payload_too_large"),
        ({"json": {"lang": "yo", "texts": []}}, 422, "invalid_request"),
        ({"json": {"lang": "yo", "texts": ["ok"], "x": 1}}, 422, "invalid_request"),
        ({"json": {"lang": "yo", "texts": ["a", "b", "c", "d", "e"]}}, 413, "payload_too_large"),
        ({"json": {"lang": "yo", "texts": ["x" * 51]}}, 413, "payload_too_large"),
        ({"json": {"lang": "yo", "texts": ["x" * 40] * 4, "pad": "y" * 600}}, 413, "payload_too_large"),
    ],
)
def test_bad_bodies_get_json_errors(
    kwargs: dict[str, Any], status: int, error: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in LIMITS.to_env().items():
        monkeypatch.setenv(name, value)
    app, _ = build()
    headers = {**AUTH, **kwargs.pop("headers", {})}
    response = InProcess(app).post("/v1/ner", headers=headers, **kwargs)
    check_error(response, status, error or "unsupported_media_type")


def test_a_chunked_body_past_the_limit_is_refused() -> None:
    app, counters = build()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"lang": "yo", "texts": ["'
        for _ in range(20):
            yield b"x" * 50
        yield b'"]}'

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/v1/ner", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})

    body = check_error(asyncio.run(send()), 413, "payload_too_large")
    assert "600 bytes" in body["detail"]
    assert counters.value == 0


def test_a_full_queue_is_a_429_and_an_unready_worker_a_503_both_with_retry_after() -> None:
    full, counters = build(in_flight=LIMITS.queue)
    response = InProcess(full).post("/v1/ner", json=BODY, headers=AUTH)
    check_error(response, 429, "queue_full")
    assert response.headers["Retry-After"] == "1"
    assert counters.value == LIMITS.queue  # refused requests do not count
    response = InProcess(full).post("/v1/sentiment", json=BODY, headers=AUTH)
    check_error(response, 429, "queue_full")  # one queue for every task

    unready, _ = build(ready=False)
    response = InProcess(unready).post("/v1/ner", json=BODY, headers=AUTH)
    check_error(response, 503, "not_ready")
    assert response.headers["Retry-After"] == "1"


def test_a_stopping_server_answers_503_and_closes_the_connection_but_stays_alive() -> None:
    app, counters = build(draining=True)
    client = InProcess(app)
    for method, path in (("POST", "/v1/ner"), ("GET", "/v1/adapters"), ("GET", "/ready")):
        response = client.request(method, path, headers=ADMIN_AUTH, **({"json": BODY} if method == "POST" else {}))
        check_error(response, 503, "shutting_down")
        assert response.headers["Retry-After"] == "1" and response.headers["Connection"] == "close"
    assert client.get("/health").status_code == 200
    assert counters.value == 0


def test_unknown_routes_and_methods_and_crashes_answer_json() -> None:
    app, _ = build()
    client = InProcess(app)
    body = check_error(client.post("/v1/pos", json=BODY, headers=AUTH), 404, "unknown_task")
    assert body["available"] == list(TASKS)
    check_error(client.get("/v1/ner", headers=AUTH), 405, "method_not_allowed")
    response = client.post("/v1/sentiment", json=BODY, headers=AUTH)
    check_error(response, 500, "internal_error")
    assert "secret" not in response.text


def test_requests_are_counted_by_task_language_and_status() -> None:
    registry = get_metrics().registry

    def count(language: str, status: str) -> float:
        value = registry.get_sample_value(
            "langadapt_requests_total", {"task": "ner", "language": language, "status": status}
        )
        return value or 0.0

    before_ok, before_401 = count("yor_Latn", "200"), count("none", "401")
    app, _ = build()
    client = InProcess(app)
    for _ in range(3):
        client.post("/v1/ner", json=BODY, headers=AUTH)
    client.post("/v1/ner", json=BODY)
    assert count("yor_Latn", "200") == before_ok + 3
    assert count("none", "401") == before_401 + 1
    seconds = registry.get_sample_value(
        "langadapt_request_seconds_count", {"task": "ner", "language": "yor_Latn", "status": "200"}
    )
    assert seconds is not None and seconds >= 3
