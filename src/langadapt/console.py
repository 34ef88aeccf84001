"""What every `langadapt` command shares: friendly errors, JSON-or-text output and the common options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from langadapt.errors import LangadaptError

F = TypeVar("F", bound=Callable[..., Any])

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="Adapter store directory (default: $LANGADAPT_STORE or <cache>/store)."),
]
DefaultsFlag = Annotated[
    bool,
    typer.Option(
        "--defaults/--no-defaults", help="Include the packaged default adapters (read-only, under the store)."
    ),
]


def open_view(store: Path | None, defaults: bool = True) -> Any:  # LayeredStore, imported lazily (fast --help)
    """The store view every command reads adapters through: the writable store over the packaged defaults."""
    from langadapt.models.store_view import PACKAGED, store_view

    return store_view(store, PACKAGED if defaults else None)


def warn_if_shadowing(view: Any, ident: str) -> str | None:
    """Print (to stderr) and return the warning when the store's `ident` hides a packaged default of that id."""
    warning = view.shadow_warning(ident)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    return warning


def friendly_errors(func: F) -> F:
    """Turn langadapt errors into a one-line message with a hint and exit code 2, instead of a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LangadaptError as err:
            typer.echo(f"error: {err.message}", err=True)
            if err.hint:
                typer.echo(f"hint: {err.hint}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def emit(data: Any, as_json: bool, text: Callable[[], str] | None = None) -> None:
    """Print `data` as JSON, or as the given human-readable text."""
    if as_json or text is None:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        typer.echo(text())


def key_value_text(data: dict[str, Any]) -> str:
    """Align a flat mapping as `key  value` lines."""
    width = max((len(k) for k in data), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in data.items())
