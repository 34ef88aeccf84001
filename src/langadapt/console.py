"""What every `langadapt` command shares: friendly errors, JSON-or-text output and the common options.

Commands whose values live in a settings model (`serve`, `label`) declare each flag with `flag(Model, field)`,
so the flag's default, help and range are the field's, and build the model with `settings_from`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import annotated_types
import typer
from pydantic import BaseModel, ValidationError

from langadapt.errors import LangadaptError

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

# Plain click help for every command group: rich's option table cuts long option names at 80 columns
# (`--lang-adapter-vers…`, `--no-keep-checkpoi…`), while click keeps each name whole and wraps the help.
HELP_MARKUP = None

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


def flag(model: type[BaseModel], name: str, *param_decls: str, **options: Any) -> Any:
    """A `typer.Option` for a field of a settings model: the field's default, description (as help) and range.

    `param_decls` defaults to `--<name with dashes>`. A tuple default (tasks) is shown comma-separated, as the
    flag takes it; an empty container default is no value. A `--x/--no-x` switch over a string field (`defaults`:
    "packaged" or None; the model reads true/false) is on by default.
    """
    field = model.model_fields[name]
    default = ... if field.is_required() else field.get_default(call_default_factory=True)
    if isinstance(default, tuple):
        default = ",".join(default)
    elif isinstance(default, list | dict) and not default:
        default = None
    decls = param_decls or (f"--{name.replace('_', '-')}",)
    if "/" in decls[0] and isinstance(default, str):
        default = True
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            options.setdefault("min", meta.ge)
        elif isinstance(meta, annotated_types.Le):
            options.setdefault("max", meta.le)
    options.setdefault("help", field.description)
    return typer.Option(default, *decls, **options)


def argument(model: type[BaseModel], name: str, **options: Any) -> Any:
    """A required positional `typer.Argument` for a field of a settings model, with the field's description."""
    options.setdefault("help", model.model_fields[name].description)
    return typer.Argument(..., **options)


def settings_from(model: type[M], values: Mapping[str, Any]) -> M:
    """`model` from a command's parameters (those named as its fields); a refused value is a LangadaptError."""
    try:
        return model.model_validate({k: v for k, v in values.items() if k in model.model_fields})
    except ValidationError as err:
        raise settings_error(err) from None


def settings_error(err: ValidationError) -> LangadaptError:
    """The first problem of a validation error, with its hint (a validator's SettingsError keeps its own)."""
    first = err.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, LangadaptError):
        return cause
    where = ".".join(str(part) for part in first["loc"])
    return LangadaptError(f"{where}: {first['msg']}", "see --help for the values each option takes")
