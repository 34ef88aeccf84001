"""Request limits (texts per request, characters per text, body bytes, queue depth) and text hygiene checks.

The limits travel from the `serve` command to the HTTP processes and the inference workers through the
environment (`LANGADAPT_MAX_*`), because LitServe forks its HTTP servers and spawns its workers: every
process reads the same values, and request schemas can check them without a global set at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

ENV_PREFIX = "LANGADAPT_MAX_"
# Unicode category Cc (C0 and C1 controls) except tab, newline and CR, and the surrogate block (category Cs).
_BAD_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; exceeding a size limit answers 413, a full queue 429."""

    texts: int = 64  # texts in one request
    chars: int = 20_000  # characters in one text (long texts are read in windows, never truncated)
    body_bytes: int = 2 * 1024 * 1024  # bytes of one request body
    queue: int = 256  # inference requests admitted and not yet answered, across HTTP processes

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"limit {field.name} must be a positive integer, got {value!r}")

    def to_env(self) -> dict[str, str]:
        """The environment variables that carry these limits to other processes."""
        return {f"{ENV_PREFIX}{name.upper()}": str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Limits from `LANGADAPT_MAX_*` variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for field in fields(cls):
            raw = env.get(f"{ENV_PREFIX}{field.name.upper()}")
            if raw is None or not raw.strip():
                continue
            try:
                values[field.name] = int(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={raw!r} is not an integer") from None
        return cls(**values)


def text_problem(text: str) -> str | None:
    """Why a text cannot be labelled (empty, lone surrogate, control character), or None when it can."""
    if not text.strip():
        return "is empty or only whitespace; send text to label"
    return _bad_character(text)


def code_problem(code: str) -> str | None:
    """Why a language code field is unusable before it is even looked up, or None."""
    if not code.strip():
        return "is empty; send a language code such as `yo` or `yor_Latn`"
    return _bad_character(code)


def _bad_character(text: str) -> str | None:
    """The first lone surrogate or control character (other than tab, newline, CR), described, or None."""
    match = _BAD_CHARACTER.search(text)
    if match is None:
        return None
    char, position = match.group(), match.start()
    if "\ud800" <= char <= "\udfff":
        return f"holds a lone surrogate (U+{ord(char):04X}) at character {position}; send valid Unicode text"
    return (
        f"holds the control character U+{ord(char):04X} at character {position}; "
        "remove control characters (tab, newline and carriage return are allowed)"
    )
