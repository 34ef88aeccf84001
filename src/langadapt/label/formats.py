"""What a labelling job reads and writes: the formats, one input row, a position in the input, the added columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt.errors import LangadaptError
from langadapt.models.kinds import TAGGING, TASK_HEAD_TYPES

INPUT_FORMATS = ("jsonl", "csv", "tsv", "parquet", "conll", "txt")
OUTPUT_FORMATS = ("jsonl", "csv", "tsv", "parquet", "conll")
SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".conll": "conll",
    ".conllu": "conll",
    ".iob": "conll",
    ".bio": "conll",
    ".txt": "txt",
    ".text": "txt",
}
ERROR_COLUMN = "label_error"
# Labelling writes the entities (and the CoNLL tag column) of one tagging task: the registry's only one.
(NER,) = (task for task, head_type in TASK_HEAD_TYPES.items() if head_type == TAGGING)
ENTITIES_COLUMN = f"{NER}_entities"
DETECTED_COLUMNS = ("detected_language", "detected_language_score")  # with --lang auto


def format_of(path: Path) -> str | None:
    """The format a file's suffix names, if any."""
    return SUFFIXES.get(path.suffix.lower())


def input_format(path: Path, requested: str) -> str:
    """The input's format: the one asked for, or the one its suffix names."""
    if requested != "auto":
        if requested not in INPUT_FORMATS:
            choices = ", ".join(INPUT_FORMATS)
            raise LangadaptError(f"unknown input format {requested!r}", f"choose one of auto, {choices}")
        return requested
    found = format_of(path)
    if found is None:
        raise LangadaptError(
            f"cannot tell the format of {path.name} from its suffix",
            f"pass --format ({', '.join(INPUT_FORMATS)}); suffixes: {', '.join(sorted(SUFFIXES))}",
        )
    return found


def output_format(path: Path, requested: str, source: str, tasks: tuple[str, ...]) -> str:
    """The output's format: the one asked for, else its suffix's, else the input's (plain text becomes JSONL)."""
    if requested != "auto":
        if requested not in OUTPUT_FORMATS:
            why = " (plain text has no room for labels)" if requested == "txt" else ""
            choices = ", ".join(OUTPUT_FORMATS)
            raise LangadaptError(f"cannot write {requested!r} output{why}", f"choose one of {choices}")
        fmt = requested
    else:
        named = format_of(path)
        fmt = named if named in OUTPUT_FORMATS else ("jsonl" if source == "txt" else source)
    if fmt == "conll" and NER not in tasks:
        raise LangadaptError(
            f"CoNLL output holds one predicted tag per token: it needs --task {NER}",
            f"add {NER} to --task, or write jsonl, csv, tsv or parquet",
        )
    return fmt


def added_columns(tasks: tuple[str, ...], detect: bool = False) -> list[str]:
    """The columns labelling adds, in order: the detected language (`detect`), then per classification task label,
    score and scores; NER entities."""
    names: list[str] = list(DETECTED_COLUMNS) if detect else []
    for task in tasks:
        names.extend([ENTITIES_COLUMN] if task == NER else [f"{task}_label", f"{task}_score", f"{task}_scores"])
    return [*names, ERROR_COLUMN]


@dataclass(frozen=True)
class Position:
    """Where reading resumes: rows read so far, and the byte offset and line count after them (text formats)."""

    row: int = 0
    offset: int = 0
    line: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"row": self.row, "offset": self.offset, "line": self.line}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Position:
        return cls(int(data["row"]), int(data["offset"]), int(data["line"]))


@dataclass
class Row:
    """One input record: its 1-based row (and line) number, its fields, the text and language code to label.

    `fields` is None when the record could not be read at all (bad JSON, wrong field count); `error` says why a
    row cannot be labelled, `kind` names the reason's category, and `raw` keeps an unreadable record's text.
    """

    number: int
    line: int | None
    fields: dict[str, Any] | None
    text: str | None = None
    lang: str | None = None
    error: str | None = None
    kind: str | None = None
    raw: str | None = None

    def fail(self, kind: str, reason: str) -> None:
        """Mark the row unlabellable (the first reason wins)."""
        if self.error is None:
            self.kind, self.error = kind, reason


@dataclass
class Labels:
    """What labelling added to one row: column values, the first error (if any) and its kind."""

    values: dict[str, Any]
    error: str | None = None
    kind: str | None = None
