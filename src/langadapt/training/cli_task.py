"""`langadapt train task` and `langadapt eval task`: train, baseline and score task adapters from the shell.

Mount them with `register(train_app, eval_app)`, which adds a `task` command to each Typer group and wraps
both in the main CLI's `friendly_errors` (a LangadaptError becomes a message, a hint and exit code 2).
`train task`'s flags are generated from `TaskTrainSettings` (`flags`); those left out fall back to the `--config`
file (JSON, YAML or TOML), then to the defaults: the learning rates measured for the base model where there are
some, the paper's otherwise. `eval task` reads the test file with the reader options the adapter was trained with,
unless its own flags say otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from langadapt.training.flags import CONFIG_HELP, option, settings_flags
from langadapt.training.reading import ReadOptions
from langadapt.training.task_adapter import TaskTrainSettings

__all__ = ["eval_task", "register", "train_task"]


AS_TRAINED = " Default: as the adapter was trained (its manifest records it)."
# The reader flags of `eval task`, in `--help` order (as `train task` lists them).
READER_FLAGS = ("data_format", "text_column", "label_column", "quoting", "label_names", "on_bad_row", "repair_iob")


def _text(summary: dict[str, Any]) -> str:
    """A short human-readable report of a training or evaluation run."""

    def figures(values: dict[str, float]) -> str:
        return "  ".join(f"{k} {v:.4f}" for k, v in values.items()) or "-"

    from langadapt.training.intake import intake_lines
    from langadapt.training.recipes import rate

    name = summary["id"] if summary.get("source", "store") == "store" else f"{summary['source']}:{summary['id']}"
    lines = [f"{name} v{summary.get('version') or '-'}  {summary.get('variant', '')}"]
    if "validation" in summary:
        lines.append(f"validation  {figures(summary['validation'])}")
    lines.append(f"test        {figures(summary.get('metrics') or {})}")
    lines.append(f"majority    {figures(summary.get('majority') or {})}")
    if summary.get("steps") is not None:
        per_step = summary.get("seconds_per_step")
        speed = f", {per_step:.3f} s/step" if per_step else ""
        lines.append(f"steps       {summary['steps']}{speed}")
    if summary.get("learning_rate") is not None:
        source = (summary.get("learning_rate_source") or {}).get("learning_rate", "")
        rates = f"{rate(summary['learning_rate'])}, head {rate(summary['head_learning_rate'])}"
        lines.append(f"lr          {rates}  ({source})")
    if summary.get("out_dir"):
        lines.append(f"run         {summary['out_dir']}")
    if summary.get("data"):
        lines += ["data", *(f"  {line}" for line in intake_lines(summary["data"]))]
    return "\n".join(lines)


@settings_flags(TaskTrainSettings)
def train_task(
    flags: dict[str, Any],
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")] = False,
) -> None:
    """Train a task adapter (topic, sentiment, ner), optionally stacked on a language adapter, or a baseline."""
    from langadapt.training.task_adapter import load_settings, train_task_adapter

    settings = load_settings(config, **flags)
    result = train_task_adapter(settings)
    if result.manifest is not None:
        from langadapt.console import warn_if_shadowing
        from langadapt.models.store_view import store_view

        warn_if_shadowing(store_view(settings.store), result.manifest.id)
    _emit(result.summary(), as_json)


@settings_flags(ReadOptions, READER_FLAGS, suffix=AS_TRAINED)
def eval_task(
    adapter: Annotated[
        str,
        typer.Option(
            "--adapter", help="Task adapter id, e.g. yor_Latn-ner (the store's, else the packaged default's)."
        ),
    ],
    test: Annotated[Path, typer.Option("--test", help="Labelled file to score it on.")],
    version: Annotated[int | None, typer.Option("--version", help="Adapter version (default: latest).")] = None,
    store: Annotated[Path | None, option(TaskTrainSettings, "store")] = None,
    defaults: Annotated[
        bool,
        typer.Option("--defaults/--no-defaults", help="Include the packaged default adapters (read-only)."),
    ] = True,
    base: Annotated[
        str | None, typer.Option("--base", help="Base model (default: the one the adapter was trained on).")
    ] = None,
    lang_adapter: Annotated[
        str | None,
        typer.Option("--lang-adapter", help="Language adapter to stack under it (default: the one it was trained on)."),
    ] = None,
    *,
    flags: dict[str, Any],
    max_examples: Annotated[int | None, typer.Option("--max-examples", help="Cap: a seeded sample.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")] = 64,
    out: Annotated[Path | None, typer.Option("--out", help="Write run.json into this directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")] = False,
) -> None:
    """Score a stored task adapter on a labelled file, beside the majority-class baseline."""
    from langadapt.models.store_view import store_view
    from langadapt.training.task_adapter import evaluate_task_adapter

    view = store_view(store, defaults)
    result = evaluate_task_adapter(
        adapter,
        test,
        store=view,
        version=version,
        base=base,
        lang_adapter=lang_adapter,
        reading=flags,
        max_examples=max_examples,
        batch_size=batch_size,
        out=out,
    )
    _emit({**result.summary(), "source": view.source_of(adapter)}, as_json)


def _emit(summary: dict[str, Any], as_json: bool) -> None:
    """Print a run summary as JSON or text (through the main CLI's `emit`)."""
    from langadapt.console import emit

    emit(summary, as_json, lambda: _text(summary))


def register(train_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add `task` to the `train` and `eval` command groups, with the main CLI's error handling."""
    from langadapt.console import friendly_errors

    train_app.command("task")(friendly_errors(train_task))
    eval_app.command("task")(friendly_errors(eval_task))
