"""The Python client: retries on 429/503 honouring Retry-After, connection retries, error bodies."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from langadapt.client import Client, ClientError, _parse_retry_after

OK = {"task": "ner", "lang": "yo", "language": "yor_Latn", "results": []}


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering the given responses (or raising the given errors) in order."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


def busy(status: int, retry_after: str | None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, json={"error": "queue_full", "detail": "busy", "hint": "retry"}, headers=headers)


def test_429_and_503_are_retried_after_the_servers_delay() -> None:
    transport, seen = scripted(busy(429, "2"), busy(503, "0.5"), httpx.Response(200, json=OK))
    sleeps: list[float] = []
    client = Client("http://server", api_key="secret-key-1", transport=transport, sleep=sleeps.append)
    assert client.ner("yo", ["Ọmọ"]) == OK
    assert sleeps == [2.0, 0.5]
    assert len(seen) == 3
    assert seen[0].headers["Authorization"] == "Bearer secret-key-1"
    assert json.loads(seen[-1].content) == {"lang": "yo", "texts": ["Ọmọ"]}


def test_without_retry_after_the_backoff_grows_and_is_capped() -> None:
    transport, _ = scripted(*[busy(503, None)] * 4, httpx.Response(200, json=OK))
    sleeps: list[float] = []
    client = Client("http://server", transport=transport, sleep=sleeps.append, backoff=1.0, max_backoff=3.0)
    client.topic("yo", ["x"])
    assert len(sleeps) == 4
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0 and all(s <= 3.0 for s in sleeps)


def test_retries_end_with_the_servers_error() -> None:
    transport, seen = scripted(*[busy(429, "0")] * 3)
    client = Client("http://server", transport=transport, sleep=lambda s: None, retries=2)
    with pytest.raises(ClientError) as caught:
        client.sentiment("yo", ["x"])
    assert (caught.value.status, caught.value.error, caught.value.hint) == (429, "queue_full", "retry")
    assert len(seen) == 3


def test_other_errors_are_not_retried_and_carry_the_body() -> None:
    body = {"error": "unknown_language", "detail": "no ner adapter for sw", "hint": "ner: yor_Latn", "available": []}
    transport, seen = scripted(httpx.Response(404, json=body))
    client = Client("http://server", transport=transport, sleep=lambda s: None)
    with pytest.raises(ClientError) as caught:
        client.ner("sw", ["x"])
    assert caught.value.body == body and "ner: yor_Latn" in str(caught.value)
    assert len(seen) == 1


def test_connection_failures_are_retried_then_reported() -> None:
    failure = httpx.ConnectError("refused")
    transport, _ = scripted(failure, httpx.Response(200, json=OK))
    assert Client("http://server", transport=transport, sleep=lambda s: None).ner("yo", ["x"]) == OK
    transport, _ = scripted(failure, failure)
    with pytest.raises(ClientError, match="connection_failed"):
        Client("http://server", transport=transport, sleep=lambda s: None, retries=1).ner("yo", ["x"])


def test_admin_calls_use_the_admin_routes() -> None:
    transport, seen = scripted(*[httpx.Response(200, json={"op": "x"})] * 4)
    client = Client("http://server", transport=transport)
    client.load("yor_Latn-ner")
    client.load(path="/srv/adapter", language="yo", task="ner")
    client.unload("yor_Latn-ner")
    client.pin("yor_Latn-ner")
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/v1/adapters/load"),
        ("POST", "/v1/adapters/load"),
        ("DELETE", "/v1/adapters/yor_Latn-ner"),
        ("POST", "/v1/adapters/yor_Latn-ner/pin"),
    ]
    assert json.loads(seen[1].content) == {"path": "/srv/adapter", "language": "yo", "task": "ner"}


def test_inference_calls_use_the_task_routes_and_label() -> None:
    transport, seen = scripted(*[httpx.Response(200, json=OK)] * 5)
    client = Client("http://server", transport=transport)
    client.ner("yo", ["a"])
    client.sentiment("yo", ["a"])
    client.task("topic", "yo", ["a"])
    client.label("yo", ["a", "b"])
    client.label("yo", ["a"], tasks=["ner", "topic"])
    assert [r.url.path for r in seen] == ["/v1/ner", "/v1/sentiment", "/v1/topic", "/v1/label", "/v1/label"]
    assert json.loads(seen[3].content) == {"lang": "yo", "texts": ["a", "b"]}
    assert json.loads(seen[4].content) == {"lang": "yo", "texts": ["a"], "tasks": ["ner", "topic"]}


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert _parse_retry_after("3") == 3.0
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _parse_retry_after("soon") is None


def test_admin_calls_send_the_admin_key_and_inference_the_api_key() -> None:
    transport, seen = scripted(*[httpx.Response(200, json=OK)] * 2)
    client = Client("http://server", api_key="api-key-0123", admin_key="admin-key-0123", transport=transport)
    client.adapters()
    client.ner("yo", ["x"])
    assert [r.headers["Authorization"] for r in seen] == ["Bearer admin-key-0123", "Bearer api-key-0123"]


def test_a_local_servers_generated_admin_key_is_read_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langadapt.serve.admin_key import admin_key_path, write_admin_key

    monkeypatch.setenv("LANGADAPT_CACHE", str(tmp_path))
    transport, seen = scripted(*[httpx.Response(200, json=OK)] * 3)
    client = Client("http://127.0.0.1:8123", transport=transport)
    client.adapters()  # no key file yet: sent without a key (the server answers 401)
    write_admin_key(admin_key_path(8123), "generated-key-0123456789")
    client.unload("yor_Latn-ner")
    client.ner("yo", ["x"])  # inference never carries the admin key
    assert [r.headers.get("Authorization") for r in seen] == [None, "Bearer generated-key-0123456789", None]
