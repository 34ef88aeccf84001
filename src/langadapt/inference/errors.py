"""The one error shape the server answers with: an HTTP status and a JSON body `{error, detail, hint}`."""

from __future__ import annotations

from typing import Any


class ServeError(Exception):
    """A refusal the client can act on: status, a short machine-readable slug, what went wrong and what to do."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        hint: str = "",
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.hint = hint
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by constructor arguments (errors cross process boundaries in LitServe)."""
        return (_rebuild, (self.status, self.error, self.detail, self.hint, self.extra, self.headers))

    def body(self) -> dict[str, Any]:
        """The JSON body: `error`, `detail`, `hint`, then any extra fields (e.g. `available`)."""
        return {"error": self.error, "detail": self.detail, "hint": self.hint, **self.extra}

    def __repr__(self) -> str:
        return f"ServeError({self.status}, {self.error!r}, {self.detail!r})"


def _rebuild(
    status: int, error: str, detail: str, hint: str, extra: dict[str, Any], headers: dict[str, str]
) -> ServeError:
    return ServeError(status, error, detail, hint, extra=extra, headers=headers)


def error_body(error: str, detail: str, hint: str = "", **extra: Any) -> dict[str, Any]:
    """A JSON error body in the server's shape."""
    return {"error": error, "detail": detail, "hint": hint, **extra}
