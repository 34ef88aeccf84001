"""`langadapt train task` and `langadapt eval task`: train, baseline and score task adapters from the shell.

Mount them with `register(train_app, eval_app)`, which adds a `task` command to each Typer group and wraps
both in the main CLI's `friendly_errors` (a LangadaptError becomes a message, a hint and exit code 2).
Flags left out fall back to the `--config` file (JSON or YAML), then to the defaults: the learning rates measured
for the base model where there are some, the paper's otherwise. `eval task` reads the test file with the reader
options the adapter was trained with, unless its own flags say otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from langadapt.training.task_adapter import TaskTrainSettings

__all__ = ["eval_task", "register", "train_task"]


def _help(name: str) -> str:
    """The settings field's description, so flag help and config docs never drift apart."""
    return TaskTrainSettings.model_fields[name].description or ""


def _opt(name: str, flag: str, suffix: str = "") -> Any:
    """A Typer option for settings field `name`, with the field's description (and `suffix`) as help."""
    return typer.Option(flag, help=_help(name) + suffix)


AS_TRAINED = " Default: as the adapter was trained (its manifest records it)."


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


def train_task(
    language: Annotated[str | None, _opt("language", "--lang")] = None,
    task: Annotated[str | None, _opt("task", "--task")] = None,
    train: Annotated[Path | None, _opt("train", "--train")] = None,
    dev: Annotated[Path | None, _opt("dev", "--dev")] = None,
    test: Annotated[Path | None, _opt("test", "--test")] = None,
    lang_adapter: Annotated[str | None, _opt("lang_adapter", "--lang-adapter")] = None,
    lang_adapter_version: Annotated[int | None, _opt("lang_adapter_version", "--lang-adapter-version")] = None,
    full_finetune: Annotated[bool | None, _opt("full_finetune", "--full-finetune/--no-full-finetune")] = None,
    kind: Annotated[str | None, _opt("kind", "--kind")] = None,
    base: Annotated[str | None, _opt("base", "--base")] = None,
    store: Annotated[Path | None, _opt("store", "--store")] = None,
    out: Annotated[Path | None, _opt("out", "--out")] = None,
    adapter_id: Annotated[str | None, _opt("adapter_id", "--id")] = None,
    epochs: Annotated[float | None, _opt("epochs", "--epochs")] = None,
    learning_rate: Annotated[float | None, _opt("learning_rate", "--lr")] = None,
    head_learning_rate: Annotated[float | None, _opt("head_learning_rate", "--head-lr")] = None,
    batch_size: Annotated[int | None, _opt("batch_size", "--batch-size")] = None,
    eval_batch_size: Annotated[int | None, _opt("eval_batch_size", "--eval-batch-size")] = None,
    weight_decay: Annotated[float | None, _opt("weight_decay", "--weight-decay")] = None,
    warmup_ratio: Annotated[float | None, _opt("warmup_ratio", "--warmup-ratio")] = None,
    max_length: Annotated[int | None, _opt("max_length", "--max-length")] = None,
    stride: Annotated[int | None, _opt("stride", "--stride")] = None,
    eval_every: Annotated[int | None, _opt("eval_every", "--eval-every")] = None,
    patience: Annotated[int | None, _opt("patience", "--patience")] = None,
    seed: Annotated[int | None, _opt("seed", "--seed")] = None,
    max_train_examples: Annotated[int | None, _opt("max_train_examples", "--max-train-examples")] = None,
    max_eval_examples: Annotated[int | None, _opt("max_eval_examples", "--max-eval-examples")] = None,
    max_test_examples: Annotated[int | None, _opt("max_test_examples", "--max-test-examples")] = None,
    fp16_weights: Annotated[bool | None, _opt("fp16_weights", "--fp16-weights/--fp32-weights")] = None,
    licence: Annotated[str | None, _opt("licence", "--licence")] = None,
    data_format: Annotated[str | None, _opt("data_format", "--format")] = None,
    text_column: Annotated[str | None, _opt("text_column", "--text-column")] = None,
    label_column: Annotated[str | None, _opt("label_column", "--label-column")] = None,
    quoting: Annotated[str | None, _opt("quoting", "--quoting")] = None,
    label_names: Annotated[str | None, _opt("label_names", "--label-names")] = None,
    on_bad_row: Annotated[str | None, _opt("on_bad_row", "--on-bad-row")] = None,
    repair_iob: Annotated[bool | None, _opt("repair_iob", "--repair-iob/--strict-iob")] = None,
    publish: Annotated[bool | None, _opt("publish", "--publish/--no-publish")] = None,
    keep_checkpoint: Annotated[bool | None, _opt("keep_checkpoint", "--keep-checkpoint/--no-keep-checkpoint")] = None,
    progress: Annotated[bool | None, _opt("progress", "--progress/--no-progress")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON or YAML file of settings; flags given win over it.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")] = False,
) -> None:
    """Train a task adapter (topic, sentiment, ner), optionally stacked on a language adapter, or a baseline."""
    from langadapt.training.task_adapter import load_settings, train_task_adapter

    settings = load_settings(
        config,
        language=language,
        task=task,
        train=train,
        dev=dev,
        test=test,
        lang_adapter=lang_adapter,
        lang_adapter_version=lang_adapter_version,
        full_finetune=full_finetune,
        kind=kind,
        base=base,
        store=store,
        out=out,
        adapter_id=adapter_id,
        epochs=epochs,
        learning_rate=learning_rate,
        head_learning_rate=head_learning_rate,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        max_length=max_length,
        stride=stride,
        eval_every=eval_every,
        patience=patience,
        seed=seed,
        max_train_examples=max_train_examples,
        max_eval_examples=max_eval_examples,
        max_test_examples=max_test_examples,
        fp16_weights=fp16_weights,
        licence=licence,
        data_format=data_format,
        text_column=text_column,
        label_column=label_column,
        quoting=quoting,
        label_names=label_names,
        on_bad_row=on_bad_row,
        repair_iob=repair_iob,
        publish=publish,
        keep_checkpoint=keep_checkpoint,
        progress=progress,
    )
    result = train_task_adapter(settings)
    if result.manifest is not None:
        from langadapt.console import warn_if_shadowing
        from langadapt.models.store_view import store_view

        warn_if_shadowing(store_view(settings.store), result.manifest.id)
    _emit(result.summary(), as_json)


def eval_task(
    adapter: Annotated[
        str,
        typer.Option(
            "--adapter", help="Task adapter id, e.g. yor_Latn-ner (the store's, else the packaged default's)."
        ),
    ],
    test: Annotated[Path, typer.Option("--test", help="Labelled file to score it on.")],
    version: Annotated[int | None, typer.Option("--version", help="Adapter version (default: latest).")] = None,
    store: Annotated[Path | None, _opt("store", "--store")] = None,
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
    data_format: Annotated[str | None, _opt("data_format", "--format", AS_TRAINED)] = None,
    text_column: Annotated[str | None, _opt("text_column", "--text-column", AS_TRAINED)] = None,
    label_column: Annotated[str | None, _opt("label_column", "--label-column", AS_TRAINED)] = None,
    quoting: Annotated[str | None, _opt("quoting", "--quoting", AS_TRAINED)] = None,
    label_names: Annotated[str | None, _opt("label_names", "--label-names", AS_TRAINED)] = None,
    on_bad_row: Annotated[str | None, _opt("on_bad_row", "--on-bad-row", AS_TRAINED)] = None,
    repair_iob: Annotated[bool | None, _opt("repair_iob", "--repair-iob/--strict-iob", AS_TRAINED)] = None,
    max_examples: Annotated[int | None, typer.Option("--max-examples", help="Cap: a seeded sample.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")] = 64,
    out: Annotated[Path | None, typer.Option("--out", help="Write run.json into this directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")] = False,
) -> None:
    """Score a stored task adapter on a labelled file, beside the majority-class baseline."""
    from langadapt.models.store_view import store_view
    from langadapt.training.task_adapter import evaluate_task_adapter

    reading = {
        "data_format": data_format,
        "text_column": text_column,
        "label_column": label_column,
        "quoting": quoting,
        "label_names": label_names,
        "on_bad_row": on_bad_row,
        "repair_iob": repair_iob,
    }
    view = store_view(store, defaults)
    result = evaluate_task_adapter(
        adapter,
        test,
        store=view,
        version=version,
        base=base,
        lang_adapter=lang_adapter,
        reading=reading,
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
