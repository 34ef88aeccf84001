"""Errors of the export stage: a refused export, and a parity check that failed with its figures."""

from __future__ import annotations

from typing import Any

from langadapt.errors import LangadaptError

__all__ = ["ExportError", "ParityError"]


class ExportError(LangadaptError):
    """An export that cannot be made as asked (unsupported stack, precision or device)."""


class ParityError(ExportError):
    """An exported graph that does not compute what the PyTorch reference computes; nothing was published."""

    def __init__(self, message: str, hint: str = "", figures: dict[str, Any] | None = None) -> None:
        super().__init__(message, hint)
        self.figures = figures or {}
