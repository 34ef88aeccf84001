"""`langadapt label`: label a corpus file with NER, sentiment and topic adapters, resumably.

Mount it with `register(app)`, which adds the `label` command wrapped in the main CLI's `friendly_errors`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from langadapt.console import JsonFlag, StoreOption, emit
from langadapt.label.formats import INPUT_FORMATS, OUTPUT_FORMATS

__all__ = ["label", "register"]


def label(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Corpus file to label.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where the labelled rows go.")],
    task: Annotated[str, typer.Option("--task", help="ner, sentiment, topic, or several: ner,sentiment.")],
    lang: Annotated[
        str | None,
        typer.Option("--lang", help="Language of every text (yo, yor, yor_Latn...), or auto: identify each text's."),
    ] = None,
    lid_threshold: Annotated[
        float | None,
        typer.Option(
            "--lid-threshold",
            min=0.0,
            max=1.0,
            help="With --lang auto: confidence below which a row is not labelled (default: the head's own).",
        ),
    ] = None,
    lang_column: Annotated[
        str | None, typer.Option("--lang-column", help="Column holding each row's language code.")
    ] = None,
    text_column: Annotated[str, typer.Option("--text-column", help="Column holding the text.")] = "text",
    input_format: Annotated[
        str, typer.Option("--format", help=f"Input format: auto (by suffix), {', '.join(INPUT_FORMATS)}.")
    ] = "auto",
    output_format: Annotated[
        str,
        typer.Option(
            "--output-format", help=f"Output format: auto (by suffix, else the input's), {', '.join(OUTPUT_FORMATS)}."
        ),
    ] = "auto",
    base: Annotated[str, typer.Option("--base", help='Base model: "embedded", a directory or a hub id.')] = (
        "embedded"
    ),
    store: StoreOption = None,
    defaults: Annotated[
        bool, typer.Option("--defaults/--no-defaults", help="Use the packaged default adapters under the store.")
    ] = True,
    backend: Annotated[str, typer.Option("--backend", help="Inference backend (as `langadapt serve`).")] = "torch",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "auto",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="Torch threads (default: torch's).")] = None,
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", min=1, help="Rows per committed chunk (the unit of resuming).")
    ] = 1000,
    errors: Annotated[
        Path | None, typer.Option("--errors", help="Errors file (JSONL; default: OUTPUT.errors.jsonl).")
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard a partial or finished output of OUTPUT and start over.")
    ] = False,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
    ] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run on Ray Data (an actor pool, one engine per actor).")] = False,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)."),
    ] = None,
    ray_actors: Annotated[int, typer.Option("--ray-actors", min=1, help="Labelling actors on Ray.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Label every row of a corpus (JSONL, CSV, TSV, Parquet, CoNLL, plain text); resumes after a crash.

    Every input row is written once, in order, with its own fields plus the labels, scores and entities.

    Rows that cannot be labelled keep null labels, say why in label_error, and are listed in the errors file.
    """
    from langadapt.label.job import LabelJob, LabelOptions

    options = LabelOptions(
        input=input_path,
        output=output,
        tasks=tuple(t.strip() for t in task.split(",") if t.strip()),
        lang=lang,
        lid_threshold=lid_threshold,
        lang_column=lang_column,
        text_column=text_column,
        input_format=input_format,
        output_format=output_format,
        base=base,
        store=str(store) if store is not None else None,
        defaults="packaged" if defaults else None,
        backend=backend,
        device=device,
        threads=threads,
        chunk_rows=chunk_rows,
        errors=errors,
        restart=restart,
        progress=progress,
        ray=ray or ray_address is not None,
        ray_address=ray_address,
        ray_actors=ray_actors,
    )
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
