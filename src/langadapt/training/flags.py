"""Command-line flags generated from a settings model, so a flag's name, type and help are said once.

Each field named in the model's `FLAGS` becomes a `--kebab-case` option (or the name `FLAG_NAMES` gives it) whose
help is the field's description; a boolean is an on/off pair. Every generated option defaults to None, meaning
"not given", so the command can fall back to the `--config` file and then to the model's defaults.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin

from pydantic import BaseModel

__all__ = [
    "CONFIG_HELP",
    "FLAG_NAMES",
    "OFF_SWITCHES",
    "flag_declaration",
    "flag_name",
    "given_flags",
    "option",
    "settings_flags",
]

F = TypeVar("F", bound=Callable[..., Any])

# Settings whose flag is not simply `--` plus the field name with dashes.
FLAG_NAMES: dict[str, str] = {
    "language": "--lang",
    "learning_rate": "--lr",
    "head_learning_rate": "--head-lr",
    "adapter_id": "--id",
    "data_format": "--format",
    "out_dir": "--out",
    "mask_probability": "--mask-prob",
}
# Boolean settings whose "off" flag is not `--no-` plus the flag.
OFF_SWITCHES: dict[str, str] = {"fp16_weights": "--fp32-weights", "repair_iob": "--strict-iob"}
CONFIG_HELP = "JSON, YAML or TOML file of settings; flags given win over it."

_PARSED = (bool, int, float, str, Path)  # types the command line parses as they are; anything else is text


def flag_name(field: str) -> str:
    """The flag of a settings field, e.g. `max_length` → `--max-length`, `learning_rate` → `--lr`."""
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def _without_none(annotation: Any) -> Any:
    """`X` from `X | None` (or Optional[X]); other annotations as they are."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _cli_type(annotation: Any) -> Any:
    """What Typer parses a field as: its own simple type, a list of one, else text (the model validates it).

    Literal choices stay text on purpose: the settings model rejects a wrong one with every allowed value named.
    """
    inner = _without_none(annotation)
    if get_origin(inner) is list:
        (item,) = get_args(inner)
        return list[item] if item in _PARSED else list[str]  # type: ignore[valid-type]
    if inner in _PARSED:
        return inner
    return str


def flag_declaration(model: type[BaseModel], field: str) -> str:
    """The option's declaration: `--flag`, or `--flag/--off-flag` for a boolean."""
    name = flag_name(field)
    if _cli_type(model.model_fields[field].annotation) is bool:
        return f"{name}/{OFF_SWITCHES.get(field, '--no-' + name.removeprefix('--'))}"
    return name


def option(model: type[BaseModel], field: str, suffix: str = "") -> Any:
    """A Typer option for one settings field, with the field's description (and `suffix`) as its help."""
    import typer

    help_text = (model.model_fields[field].description or field) + suffix
    return typer.Option(flag_declaration(model, field), help=help_text)


def _parameter(model: type[BaseModel], field: str, suffix: str) -> inspect.Parameter:
    """The generated command parameter for one field: optional, None when the flag is not given."""
    cli_type = _cli_type(model.model_fields[field].annotation)
    annotation = Annotated[cli_type | None, option(model, field, suffix)]  # type: ignore[valid-type]
    return inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def given_flags(values: Mapping[str, Any]) -> dict[str, Any]:
    """The flags actually given: neither None nor an empty repeatable flag."""
    return {k: v for k, v in values.items() if v is not None and not (isinstance(v, list | tuple) and not v)}


def settings_flags(model: type[BaseModel], fields: Sequence[str] | None = None, suffix: str = "") -> Callable[[F], F]:
    """Give a command one option per settings field; it receives the flags given as `flags` (a dict).

    `fields` (default: the model's `FLAGS`) names the fields and their order; they take the place of the
    command's `flags` parameter in `--help`, among the command's own options.
    """
    chosen = tuple(fields if fields is not None else model.FLAGS)  # type: ignore[attr-defined]

    def decorate(func: F) -> F:
        own = inspect.signature(func, eval_str=True)
        params: list[inspect.Parameter] = []
        for param in own.parameters.values():
            if param.name == "flags":
                params += [_parameter(model, name, suffix) for name in chosen]
            else:
                params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            flags = given_flags({name: kwargs.pop(name, None) for name in chosen})
            return func(flags=flags, **kwargs)

        command.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params} | {"return": own.return_annotation}
        return command  # type: ignore[return-value]

    return decorate
