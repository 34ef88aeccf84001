"""Request schemas, limits, API keys and the error shape."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from langadapt.errors import LangadaptError
from langadapt.inference.errors import ServeError
from langadapt.serve.auth import AllowedHosts, ApiKeys, host_name, presented_key, read_keys_file
from langadapt.serve.limits import Limits, text_problem
from langadapt.serve.schemas import TEXT_TOO_LONG, TOO_MANY_TEXTS, LabelRequest, LoadRequest


def errors_of(body: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        LabelRequest.model_validate(body)
    return list(caught.value.errors())


def test_a_valid_request_keeps_texts_as_sent() -> None:
    request = LabelRequest.model_validate({"lang": "yo", "texts": ["Ọmọ náà\tlọ\nsí ilé.\r", "b"]})
    assert request.texts == ["Ọmọ náà\tlọ\nsí ilé.\r", "b"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"lang": "yo", "texts": []}, "at least 1 item"),
        ({"lang": "yo", "texts": [""]}, "empty"),
        ({"lang": "yo", "texts": ["  \n "]}, "empty"),
        ({"lang": "yo", "texts": ["a\x00b"]}, "U+0000"),
        ({"lang": "yo", "texts": ["a\x1bb"]}, "U+001B"),
        ({"lang": "yo", "texts": ["a\x85b"]}, "U+0085"),
        ({"lang": "yo", "texts": ["a\ud800b"]}, "lone surrogate (U+D800)"),
        ({"lang": "yo", "texts": ["ok"], "extra": 1}, "Extra inputs"),
        ({"lang": "yo", "texts": "ok"}, "valid list"),
        ({"lang": "yo", "texts": [1]}, "valid string"),
        ({"lang": 5, "texts": ["ok"]}, "valid string"),
        ({"lang": "", "texts": ["ok"]}, "at least 1 character"),
        ({"lang": "y\x07", "texts": ["ok"]}, "U+0007"),
        ({"texts": ["ok"]}, "Field required"),
        ([1, 2], "valid dictionary"),
    ],
)
def test_bad_requests_are_refused_with_a_readable_reason(body: Any, needle: str) -> None:
    assert any(needle in e["msg"] for e in errors_of(body)), errors_of(body)


def test_format_characters_are_text_not_control_characters() -> None:
    assert text_problem("ìjọba\u200d\u00ad") is None  # zero-width joiner, soft hyphen: category Cf


def test_size_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGADAPT_MAX_TEXTS", "2")
    monkeypatch.setenv("LANGADAPT_MAX_CHARS", "5")
    assert [e["type"] for e in errors_of({"lang": "yo", "texts": ["a", "b", "c"]})] == [TOO_MANY_TEXTS]
    errors = errors_of({"lang": "yo", "texts": ["abc", "abcdef"]})
    assert [e["type"] for e in errors] == [TEXT_TOO_LONG]
    assert "texts[1] has 6 characters; the limit is 5" in errors[0]["msg"]
    LabelRequest.model_validate({"lang": "yo", "texts": ["abcde", "x"]})


def test_limits_round_trip_through_the_environment() -> None:
    limits = Limits(texts=3, chars=40, body_bytes=1000, queue=7)
    assert Limits.from_env(limits.to_env()) == limits
    assert Limits.from_env({}) == Limits()
    with pytest.raises(ValueError, match="not an integer"):
        Limits.from_env({"LANGADAPT_MAX_QUEUE": "many"})
    with pytest.raises(ValueError, match="positive"):
        Limits(texts=0)


def test_load_request_needs_exactly_one_source() -> None:
    assert LoadRequest.model_validate({"id": "yor_Latn-ner"}).wait_s == 30.0
    for body in ({}, {"id": "a", "path": "/b"}):
        with pytest.raises(ValidationError, match="exactly one"):
            LoadRequest.model_validate(body)
    with pytest.raises(ValidationError):
        LoadRequest.model_validate({"id": "a", "wait_s": 1000})


def test_serve_errors_pickle_with_their_body_and_headers() -> None:
    err = ServeError(429, "queue_full", "full", "retry", extra={"available": ["a"]}, headers={"Retry-After": "1"})
    copy = pickle.loads(pickle.dumps(err))
    assert copy.body() == {"error": "queue_full", "detail": "full", "hint": "retry", "available": ["a"]}
    assert (copy.status, copy.headers) == (429, {"Retry-After": "1"})


# -------------------------------------------------------------------------------------------- keys


def test_keys_come_from_the_environment_and_a_file(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    file.write_text(json.dumps({"api": ["file-api-key-1"], "admin": ["file-admin-key"]}))
    keys = ApiKeys.load(
        environ={"LANGADAPT_API_KEYS": "env-api-key-1, env-api-key-2", "LANGADAPT_ADMIN_KEYS": "env-admin-key"},
        keys_file=file,
    )
    assert keys.role_of(b"env-api-key-2") == "api"
    assert keys.role_of(b"file-api-key-1") == "api"
    assert keys.role_of(b"env-admin-key") == "admin"
    assert keys.role_of(b"file-admin-key") == "admin"
    assert keys.role_of(b"env-api-key-3") is None
    assert keys.role_of(None) is None
    assert keys.inference_requires_key
    assert "key-1" not in repr(keys)


def test_without_configured_keys_inference_is_open_and_an_admin_key_can_be_added() -> None:
    keys = ApiKeys.load(environ={})
    assert not keys.inference_requires_key and not keys.admin
    generated = keys.with_admin("generated-admin-key-0123")
    assert generated.role_of(b"generated-admin-key-0123") == "admin" and not generated.inference_requires_key
    with pytest.raises(LangadaptError):
        keys.with_admin("short")


@pytest.mark.parametrize(
    ("bind", "configured", "allowed", "refused"),
    [
        (
            "127.0.0.1",
            None,
            ["localhost", "localhost:8000", "127.0.0.1:1", "[::1]:8000", "LOCALHOST."],
            ["evil.example", "localhost.evil.example", "", None, "localhost:x"],
        ),
        ("0.0.0.0", None, ["evil.example", "10.0.0.5:8000", None], []),
        ("::", None, ["evil.example"], []),
        ("0.0.0.0", ["api.example.com", "10.0.0.5"], ["api.example.com:443", "10.0.0.5"], ["localhost", "example.com"]),
        ("127.0.0.1", [".example.com"], ["example.com", "a.b.example.com:80"], ["evilexample.com", "localhost"]),
        ("127.0.0.1", ["*"], ["anything.example"], []),
    ],
)
def test_allowed_hosts_default_to_loopback_names_on_loopback_and_any_beyond(
    bind: str, configured: list[str] | None, allowed: list[str | None], refused: list[str | None]
) -> None:
    hosts = AllowedHosts.for_bind(bind, configured)
    assert all(hosts.allows(h) for h in allowed), hosts
    assert not any(hosts.allows(h) for h in refused), hosts


def test_host_names_lose_port_brackets_and_case() -> None:
    assert host_name(b"LocalHost:8000") == "localhost"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("[::1") == "" and host_name(None) == ""
    with pytest.raises(LangadaptError):
        AllowedHosts.for_bind("127.0.0.1", ["http://example.com/"])


@pytest.mark.parametrize(
    "content",
    ['{"api": "not-a-list"}', '{"api": [], "root": []}', "[1]", "{not json", '{"api": ["k3y!"]}'],
)
def test_bad_key_files_are_refused_with_a_hint(tmp_path: Path, content: str) -> None:
    file = tmp_path / "keys.json"
    file.write_text(content)
    with pytest.raises(LangadaptError) as caught:
        read_keys_file(file)
    assert caught.value.hint
    assert "k3y!" not in caught.value.message  # the key itself is never echoed


def test_presented_key_reads_bearer_then_x_api_key() -> None:
    assert presented_key([(b"authorization", b"Bearer abc123")]) == b"abc123"
    assert presented_key([(b"x-api-key", b"k1"), (b"authorization", b"bearer k2")]) == b"k2"
    assert presented_key([(b"X-API-Key", b" k1 ")]) == b"k1"
    assert presented_key([(b"authorization", b"Basic abc")]) is None
    assert presented_key([]) is None
