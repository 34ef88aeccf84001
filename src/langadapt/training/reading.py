"""How a task's data files are read: the reader options a training run records and evaluation reuses.

`ReadOptions` is one definition of the reader flags (`--format`, `--text-column`, `--label-column`, `--quoting`,
`--on-bad-row`, `--repair-iob`, `--label-names`): training settings inherit it, the manifest records it, and
`langadapt eval task` starts from the recorded options, overriding only the flags it is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from langadapt.errors import LangadaptError
from langadapt.training.flags import FLAG_NAMES, flag_name
from langadapt.training.readers import CLASSIFICATION_FORMATS, NER_FORMATS, Dataset, OnBadRow, Quoting

__all__ = [
    "FLAG_NAMES",
    "ReadOptions",
    "check_format",
    "options_error",
    "parse_label_names",
    "read_split",
    "recorded_options",
]


_FORMAT_HELP = (
    f"Data format: {', '.join(CLASSIFICATION_FORMATS)} (topic, sentiment); {', '.join(NER_FORMATS)} (ner). "
    "auto tells it by extension and header."
)
_QUOTING_HELP = (
    "CSV/TSV tables: csv (standard quoting, as pandas and Python's csv read them: a quoted field may hold tabs, "
    'line breaks and "" for a quote) or none (every quote is text). sib200 and afrisenti are always read unquoted.'
)
_LABEL_NAMES_HELP = (
    "Topic, sentiment: names for raw labels, e.g. -1=negative,0=neutral,1=positive, or a file of RAW=NAME lines "
    "(or a JSON object); a label without a name is a bad row."
)


def check_format(task: str, data_format: str) -> None:
    """Refuse a data format the task's readers do not have (ValueError naming every format that is)."""
    formats = NER_FORMATS if task == "ner" else CLASSIFICATION_FORMATS
    if data_format not in formats:
        raise ValueError(f"--format {data_format} is not a {task} format; use one of {', '.join(formats)}")


def parse_label_names(value: str) -> dict[str, str]:
    """Label names from `RAW=NAME,RAW=NAME` or from a file of `RAW=NAME` lines or a JSON object."""
    path = Path(value).expanduser()
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("{"):
            data = json.loads(text)
            return _checked_names(list(data.items()) if isinstance(data, dict) else [], value)
        pairs = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    else:
        pairs = [part.strip() for part in value.split(",") if part.strip()]
    parsed: list[tuple[Any, Any]] = []
    for pair in pairs:
        raw, sep, name = pair.partition("=")
        if not sep:
            raw, sep, name = pair.partition("\t")
        if not sep:
            raise ValueError(f"label names: {pair!r} is not RAW=NAME (e.g. -1=negative,0=neutral,1=positive)")
        parsed.append((raw, name))
    return _checked_names(parsed, value)


def _checked_names(pairs: Sequence[tuple[Any, Any]], origin: str) -> dict[str, str]:
    """A raw → name mapping with every raw label and name non-empty and each raw label given once."""
    names: dict[str, str] = {}
    for raw, name in pairs:
        raw, name = str(raw).strip(), str(name).strip()
        if not raw or not name:
            raise ValueError(f"label names: empty label or name in {origin!r}")
        if raw in names:
            raise ValueError(f"label names: {raw!r} is named twice in {origin!r}")
        names[raw] = name
    if not names:
        raise ValueError(f"label names: none found in {origin!r} (e.g. -1=negative,0=neutral,1=positive)")
    return names


class ReadOptions(BaseModel):
    """The reader options for a task's files, shared by training, its manifest and evaluation."""

    model_config = ConfigDict(extra="forbid")

    data_format: str = Field(default="auto", description=_FORMAT_HELP)  # checked per task by `for_task`
    text_column: str | None = Field(default=None, description="Text column of a CSV, TSV, JSONL or Parquet table.")
    label_column: str | None = Field(default=None, description="Label column of a CSV, TSV, JSONL or Parquet table.")
    quoting: Quoting = Field(default="csv", description=_QUOTING_HELP)
    on_bad_row: OnBadRow = Field(
        default="error", description="Malformed rows: error (stop at the first) or skip (leave out, listed)."
    )
    repair_iob: bool = Field(
        default=False,
        description="NER: read an I-X that follows O or another type as B-X (each repair listed in the run's output).",
    )
    label_names: dict[str, str] | None = Field(default=None, description=_LABEL_NAMES_HELP)

    @field_validator("label_names", mode="before")
    @classmethod
    def _parse_label_names(cls, value: Any) -> Any:
        """`--label-names` as given on the command line (a string) or in a config file (a mapping)."""
        if isinstance(value, str):
            return parse_label_names(value)
        if isinstance(value, Mapping):
            return _checked_names(list(value.items()), "the label names")
        return value

    def reading(self) -> ReadOptions:
        """Just the reader options (of settings that inherit them)."""
        return ReadOptions.model_validate({name: getattr(self, name) for name in ReadOptions.model_fields})

    def for_task(self, task: str) -> ReadOptions:
        """These options, checked against the task (ValueError when a format or label names do not apply)."""
        check_format(task, self.data_format)
        if task == "ner" and self.label_names:
            raise ValueError("--label-names names topic and sentiment labels; NER tags are read as they are")
        return self


def options_error(err: ValidationError, what: str, hint: str) -> LangadaptError:
    """A user error for invalid settings: each flag with its value and what it should be."""
    problems = []
    for e in err.errors():
        message = str(e["msg"]).removeprefix("Value error, ")
        if not e["loc"]:
            problems.append(message)
            continue
        name = str(e["loc"][0])
        flag = flag_name(name)
        given = e.get("input")
        shown = f" {given!r}" if isinstance(given, str | int | float) and e["type"] != "missing" else ""
        problems.append(f"{flag}{shown}: {message}")
    return LangadaptError(f"invalid {what}: {'; '.join(problems)}", hint)


def recorded_options(manifest: Any) -> dict[str, Any]:
    """The reader options a stored task adapter was trained with (older manifests: from its training params)."""
    recorded = manifest.extra.get("reading")
    if isinstance(recorded, dict):
        return {k: v for k, v in recorded.items() if k in ReadOptions.model_fields}
    params = manifest.training.params or {}
    return {
        k: params[k] for k in ("data_format", "text_column", "label_column", "on_bad_row", "repair_iob") if k in params
    }


def read_split(
    path: Path, task: str, options: ReadOptions | None = None, labels: Sequence[str] | None = None
) -> Dataset[Any]:
    """Read one split of a task's data with the given reader options; a missing file is a user error."""
    from langadapt.training.readers import read_classification, read_ner

    options = options or ReadOptions()
    if not Path(path).is_file():
        raise LangadaptError(f"data file {path} does not exist", "check the --train/--dev/--test paths")
    try:
        options.for_task(task)
    except ValueError as err:
        raise LangadaptError(str(err), "run with --help for every value") from None
    if task == "ner":
        return read_ner(
            path,
            fmt=options.data_format,  # type: ignore[arg-type]
            on_bad_row=options.on_bad_row,
            repair_iob=options.repair_iob,
        )
    return read_classification(
        path,
        fmt=options.data_format,  # type: ignore[arg-type]
        text_column=options.text_column,
        label_column=options.label_column,
        on_bad_row=options.on_bad_row,
        labels=labels,
        quoting=options.quoting,
        label_names=options.label_names,
    )
