"""A small synchronous client for the langadapt server, with retries on 429 and 503.

    from langadapt.client import Client

    with Client("http://127.0.0.1:8000", api_key="...") as client:
        client.ner("yo", ["Adébáyọ̀ ń ṣiṣẹ́ ní Abuja."])["results"][0]["entities"]

Admin calls (`adapters`, `load`, `unload`, `pin`, `unpin`) send `admin_key`; without one, a client of a server on
this machine (a loopback URL) reads the key `langadapt serve` generated into its key file
(`langadapt.serve.admin_key`), as Jupyter's clients find a local server's token.

A 429 (queue full) or 503 (not ready) is retried after the server's `Retry-After` (else exponential backoff with
jitter, capped), as are connection failures; labelling is idempotent, so a retried request is safe. Any other
error raises `ClientError` carrying the server's `{error, detail, hint}`.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import httpx

__all__ = ["Client", "ClientError"]

RETRY_STATUSES = frozenset({429, 503})


class ClientError(Exception):
    """An error answer from the server (or no answer after every retry)."""

    def __init__(self, status: int, error: str, detail: str, hint: str = "", body: Any = None) -> None:
        super().__init__(f"{status} {error}: {detail}" + (f" ({hint})" if hint else ""))
        self.status = status
        self.error = error
        self.detail = detail
        self.hint = hint
        self.body = body


class Client:
    """Calls the inference and admin routes; retries 429/503 and connection failures with backoff."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        admin_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.25,
        max_backoff: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.base_url = base_url
        self._admin_key = admin_key
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # ------------------------------------------------------------------------------------- inference

    def label(self, lang: str, texts: Sequence[str], tasks: Sequence[str] | None = None) -> dict[str, Any]:
        """POST /v1/label: every task's result per text (`tasks` None: every task the language has)."""
        body: dict[str, Any] = {"lang": lang, "texts": list(texts)}
        if tasks is not None:
            body["tasks"] = list(tasks)
        return self._json("POST", "/v1/label", json=body)

    def task(self, task: str, lang: str, texts: Sequence[str]) -> dict[str, Any]:
        """POST /v1/{task}: one task's response body (results per text, in order)."""
        return self._json("POST", f"/v1/{task}", json={"lang": lang, "texts": list(texts)})

    def ner(self, lang: str, texts: Sequence[str]) -> dict[str, Any]:
        """Named entities with character offsets."""
        return self.task("ner", lang, texts)

    def sentiment(self, lang: str, texts: Sequence[str]) -> dict[str, Any]:
        """Sentiment labels with scores."""
        return self.task("sentiment", lang, texts)

    def topic(self, lang: str, texts: Sequence[str]) -> dict[str, Any]:
        """Topic labels with scores."""
        return self.task("topic", lang, texts)

    # ----------------------------------------------------------------------------------------- admin

    def adapters(self) -> dict[str, Any]:
        """GET /v1/adapters: available adapters and what each worker holds."""
        return self._json("GET", "/v1/adapters", admin=True)

    def load(self, adapter_id: str | None = None, *, path: str | None = None, **fields: Any) -> dict[str, Any]:
        """Load an adapter by id in every worker, or publish a server-side folder (`path`) and load it."""
        body = {"id": adapter_id, "path": path, **fields}
        return self._json(
            "POST", "/v1/adapters/load", admin=True, json={k: v for k, v in body.items() if v is not None}
        )

    def unload(self, adapter_id: str) -> dict[str, Any]:
        """Unload an adapter from every worker (idempotent)."""
        return self._json("DELETE", f"/v1/adapters/{adapter_id}", admin=True)

    def pin(self, adapter_id: str) -> dict[str, Any]:
        """Load an adapter everywhere and keep it from eviction."""
        return self._json("POST", f"/v1/adapters/{adapter_id}/pin", admin=True)

    def unpin(self, adapter_id: str) -> dict[str, Any]:
        """Allow an adapter to be evicted again."""
        return self._json("POST", f"/v1/adapters/{adapter_id}/unpin", admin=True)

    # ---------------------------------------------------------------------------------------- health

    def health(self) -> bool:
        """Whether the server answers /health."""
        try:
            return self._http.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        """Whether /ready says every worker is loaded and a stack is active."""
        try:
            return self._http.get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.25) -> None:
        """Block until /ready answers 200, or raise ClientError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise ClientError(503, "not_ready", f"the server was not ready within {timeout:.0f}s")
            self._sleep(interval)

    def metrics(self) -> str:
        """The Prometheus exposition text."""
        return self._request("GET", "/metrics").text

    # -------------------------------------------------------------------------------------- plumbing

    def _json(self, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> dict[str, Any]:
        if admin:
            key = self._admin_key or _local_admin_key(self.base_url)
            if key:
                kwargs["headers"] = {"Authorization": f"Bearer {key}"}
        response = self._request(method, path, **kwargs)
        data = response.json()
        if not isinstance(data, dict):
            raise ClientError(response.status_code, "bad_response", f"expected a JSON object, got {type(data)}")
        return data

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with retries; the final response if it is a success, else ClientError."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                if attempt >= self.retries:
                    raise ClientError(0, "connection_failed", f"{type(err).__name__}: {err}") from err
                self._sleep(self._delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                self._sleep(self._delay(attempt, response.headers.get("Retry-After")))
                attempt += 1
                continue
            if response.is_success:
                return response
            raise _error(response)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before retry `attempt`: the server's Retry-After if given, else backoff with jitter."""
        if retry_after is not None:
            seconds = _parse_retry_after(retry_after)
            if seconds is not None:
                return min(self.max_backoff, seconds)
        return min(self.max_backoff, self.backoff * (2**attempt)) * random.uniform(0.5, 1.0)  # noqa: S311


def _local_admin_key(base_url: str) -> str | None:
    """The admin key a local `langadapt serve` generated, read at each call (it changes when the server restarts)."""
    from langadapt.serve.admin_key import local_key_for

    return local_key_for(base_url)


def _parse_retry_after(value: str) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date)."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return ClientError(
            response.status_code, str(body["error"]), str(body.get("detail", "")), str(body.get("hint", "")), body
        )
    return ClientError(response.status_code, "http_error", response.text[:500], body=body)
