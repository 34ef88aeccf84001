"""`langadapt label`: label a corpus file with NER, sentiment and topic adapters, resumably.

Mount it with `register(app)`, which adds the `label` command wrapped in the main CLI's `friendly_errors`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from langadapt.console import JsonFlag, argument, emit, flag, settings_from
from langadapt.label.options import LabelSettings

__all__ = ["label", "register"]


def label(
    input: Path = argument(LabelSettings, "input", metavar="INPUT"),
    output: Path = flag(LabelSettings, "output", "-o", "--output"),
    tasks: str = flag(LabelSettings, "tasks", "--task"),
    lang: str | None = flag(LabelSettings, "lang"),
    lid_threshold: float | None = flag(LabelSettings, "lid_threshold"),
    lang_column: str | None = flag(LabelSettings, "lang_column"),
    text_column: str = flag(LabelSettings, "text_column"),
    input_format: str = flag(LabelSettings, "input_format", "--format"),
    output_format: str = flag(LabelSettings, "output_format"),
    base: str = flag(LabelSettings, "base"),
    store: Path | None = flag(LabelSettings, "store"),
    defaults: bool = flag(LabelSettings, "defaults", "--defaults/--no-defaults"),
    backend: str = flag(LabelSettings, "backend"),
    device: str = flag(LabelSettings, "device"),
    threads: int | None = flag(LabelSettings, "threads"),
    auto_build: bool = flag(LabelSettings, "auto_build", "--auto-build/--no-auto-build"),
    chunk_rows: int = flag(LabelSettings, "chunk_rows"),
    errors: Path | None = flag(LabelSettings, "errors"),
    restart: bool = flag(LabelSettings, "restart"),
    progress: bool | None = flag(LabelSettings, "progress", "--progress/--no-progress"),
    ray: bool = flag(LabelSettings, "ray"),
    ray_address: str | None = flag(LabelSettings, "ray_address"),
    ray_actors: int = flag(LabelSettings, "ray_actors"),
    as_json: JsonFlag = False,
) -> None:
    """Label every row of a corpus (JSONL, CSV, TSV, Parquet, CoNLL, plain text); resumes after a crash.

    Every input row is written once, in order, with its own fields plus the labels, scores and entities.

    Rows that cannot be labelled keep null labels, say why in label_error, and are listed in the errors file.
    """
    from langadapt.label.job import LabelJob

    ray = ray or ray_address is not None
    options = settings_from(LabelSettings, locals())  # every parameter but as_json is a field of the model
    summary = LabelJob(options, notify=lambda message: typer.echo(message, err=True)).run()
    emit(summary, as_json, lambda: summary_text(summary))


def summary_text(summary: dict[str, Any]) -> str:
    """The summary as a few lines for people."""
    lines = []
    if summary.get("already_complete"):
        lines.append(f"already complete: {summary['output']}")
    rate = f", {summary['rows_per_s']} rows/s" if summary.get("rows_per_s") else ""
    lines.append(
        f"{summary['rows']} rows: {summary['labelled']} labelled, {summary['errors']} with errors"
        f" ({summary['seconds']} s{rate})"
    )
    if summary.get("resumed_from_row"):
        lines.append(f"resumed at row {summary['resumed_from_row'] + 1}")
    if summary.get("errors_by_kind"):
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["errors_by_kind"].items())))
    if summary.get("blank_lines"):
        lines.append(f"blank lines skipped: {summary['blank_lines']}")
    if summary.get("fields_not_written"):
        lines.append(f"fields with no output column (not written): {summary['fields_not_written']}")
    for task, languages in summary.get("adapters", {}).items():
        for language, record in languages.items():
            lines.append(f"{task} {language}: {record['stack']}")
    lines.append(f"output: {summary['output']}")
    lines.append(f"errors: {summary['errors_file']}")
    return "\n".join(lines) if lines else json.dumps(summary)


def register(app: typer.Typer) -> None:
    """Add `label` to the main CLI, with its error handling."""
    from langadapt.console import friendly_errors

    app.command("label")(friendly_errors(label))
