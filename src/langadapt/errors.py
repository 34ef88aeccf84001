"""Errors that tell the user what went wrong and how to fix it."""

from __future__ import annotations


class LangadaptError(Exception):
    """Base error: a message, plus a hint that says what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class LanguageCodeError(LangadaptError, ValueError):
    """A language code that is unknown, ambiguous or malformed."""

    def __init__(self, message: str, hint: str = "", suggestions: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.suggestions = suggestions or []


class SettingsError(LangadaptError, ValueError):
    """A setting whose value cannot be used (a ValueError, so pydantic reports it as a validation error)."""


class BaseModelError(LangadaptError):
    """A base model that cannot be found, converted or loaded."""


class StoreError(LangadaptError):
    """A store operation that was refused (bad folder, checksum mismatch, unsafe file, path escape)."""


class StoreUnwritableError(StoreError):
    """The store cannot be written now (read-only, no permission, no space); what it holds still serves."""


class AdapterNotFoundError(StoreError, KeyError):
    """No adapter with that id or version in the store."""

    def __str__(self) -> str:
        return LangadaptError.__str__(self)


class FingerprintMismatchError(StoreError):
    """An adapter trained on a different base model than the one it is loaded onto."""


class DataFormatError(LangadaptError, ValueError):
    """A malformed row in an input file: says which file, which line and why."""

    ROW_HINT = "fix or remove that row, or pass --on-bad-row skip"

    def __init__(self, path: str, line: int, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{path}:{line}: {reason}", self.ROW_HINT if hint is None else hint)
        self.path = path
        self.line = line
        self.reason = reason
