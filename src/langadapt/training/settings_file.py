"""Settings files (`--config`): one reader for every training command, so they all take the same formats.

A file is a mapping of setting names to values: YAML for `.yaml`/`.yml`, TOML for `.toml`, JSON otherwise; keys
may use dashes or underscores. Flags given on the command line win over it, and it wins over the defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langadapt.errors import LangadaptError

__all__ = ["read_settings_file", "settings_data"]


def _parse(path: Path, text: str) -> Any:
    """The file's data, by its extension."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    if suffix == ".toml":
        import tomllib

        return tomllib.loads(text)
    return json.loads(text)


def read_settings_file(path: Path) -> dict[str, Any]:
    """A settings file's mapping, keys with underscores; errors say which file and what to fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise LangadaptError(f"cannot read config file {path}: {err.strerror}", "check the --config path") from None
    try:
        data = _parse(Path(path), text)
    except Exception as err:  # yaml, toml and json raise different error types; all mean the same thing here
        raise LangadaptError(
            f"config file {path} is not valid: {err}", "write a JSON, YAML or TOML mapping of settings"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LangadaptError(f"config file {path} holds a {type(data).__name__}", "write a mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def settings_data(config: Path | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """The settings to validate: the config file's (if any), overridden by the flags given (those not None)."""
    data = read_settings_file(config) if config is not None else {}
    return data | {k: v for k, v in flags.items() if v is not None}
