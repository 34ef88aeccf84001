"""`langadapt export`: fused and swappable ONNX exports, and re-verification of exported artifacts.

Adapters are found through the store view (the writable store over the packaged defaults, as the server sees
them), so a packaged default exports like a stored adapter; artifacts are published to the writable store.
Mounted by the main CLI as ``app.add_typer(export_app, name="export")``. A `LangadaptError` becomes a message, a
hint and exit code 2; a failed parity or checksum check in ``export verify`` prints its figures and exits 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from langadapt.console import HELP_MARKUP, DefaultsFlag, JsonFlag, StoreOption, emit, friendly_errors
from langadapt.errors import AdapterNotFoundError, StoreError
from langadapt.models.store_view import store_view

__all__ = ["export_app"]

export_app = typer.Typer(
    help="Export adapter stacks to ONNX: one fused graph per stack, or one swappable base graph per base model.",
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)

OutOption = Annotated[
    Path | None, typer.Option("--out", help="Also copy the published artifact folder here (new or empty).")
]
OptimizeFlag = Annotated[
    bool | None,
    typer.Option(
        "--optimize/--no-optimize",
        help="Offline transformer fusions, kept only if exact (default: on for fp16, off for CPU, as measured).",
        show_default=False,
    ),
]
EvalOption = Annotated[
    Path | None,
    typer.Option(
        "--eval",
        help="Labelled file for the int8/fp16 metric check (default: the task adapter's recorded test file, if any).",
    ),
]
MAX_EVAL_EXAMPLES = 500


def _figures(parity: dict[str, Any]) -> str:
    """One line per checked precision."""
    lines = []
    for label, fig in parity.items():
        line = f"  {label:<5} max|Δlogit| {fig['max_abs_diff']:.2e}  agreement {fig.get('agreement', 1.0):.2%}"
        metric = fig.get("metric")
        if metric and label != "fp32":
            line += f"  {metric['name']} {metric['export']:.4f} vs {metric['reference']:.4f} ({metric['source']})"
        lines.append(line + f"  [{fig.get('checked_on', 'cpu')}]")
    return "\n".join(lines)


def _summary(manifest: Any) -> dict[str, Any]:
    return {
        "id": manifest.id,
        "version": manifest.version,
        "artifact": manifest.artifact,
        "precision": manifest.precision,
        "base_model": manifest.base_model,
        "base_fingerprint": manifest.base_fingerprint,
        "sources": [row.model_dump(mode="json") for row in manifest.sources or []] or None,
        "optimizer": manifest.extra.get("optimizer"),
        "graph_bytes": manifest.extra.get("graph_bytes"),
        "parity": manifest.metrics.get("parity"),
    }


def recorded_labelled_set(path: Path | None, task: Any) -> Any:
    """The labelled set for int8/fp16 checks: `--eval`, else the task adapter's recorded test file if present."""
    from langadapt.export.parity import LabelledSet

    repair_iob = bool(task.training.params.get("repair_iob", False))  # read it as the adapter's training did
    if path is not None:
        return LabelledSet.from_file(path, task.task, max_examples=MAX_EVAL_EXAMPLES, repair_iob=repair_iob)
    recorded = task.training.params.get("test")
    if recorded and Path(recorded).is_file():
        return LabelledSet.from_file(recorded, task.task, max_examples=MAX_EVAL_EXAMPLES, repair_iob=repair_iob)
    return None


@export_app.command("fused")
@friendly_errors
def fused(
    lang: Annotated[str, typer.Option("--lang", help="Language of the task adapter (any alias: yo, yor, yor_Latn).")],
    task: Annotated[str, typer.Option("--task", help="Task: topic, sentiment or ner.")],
    lang_adapter: Annotated[
        str | None,
        typer.Option("--lang-adapter", help="Language adapter id (default: the one the task adapter was trained on)."),
    ] = None,
    task_only: Annotated[
        bool, typer.Option("--task-only", help="Export the task adapter alone, without any language adapter.")
    ] = False,
    store: StoreOption = None,
    defaults: DefaultsFlag = True,
    base: Annotated[
        str | None, typer.Option("--base", help="Base model (default: the one the task adapter was trained on).")
    ] = None,
    quantize: Annotated[str | None, typer.Option("--quantize", help="int8: dynamic quantisation for CPU.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="fp32, or fp16 for the CUDA provider.")] = "fp32",
    optimize: OptimizeFlag = None,
    eval_file: EvalOption = None,
    out: OutOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Export the stack `<lang>-<task>` (with its language adapter) as one verified ONNX graph into the store."""
    from langadapt.export.errors import ExportError
    from langadapt.export.fused import export_fused
    from langadapt.models.language import canonical_language
    from langadapt.models.manifest import adapter_id

    if task_only and lang_adapter:
        raise ExportError("--task-only and --lang-adapter contradict each other", "pass one of them")
    view = store_view(store, defaults)
    task_manifest = view.get(adapter_id(canonical_language(lang), task))
    lang_id, lang_version = lang_adapter, None
    if lang_id is None and not task_only:
        recorded = task_manifest.language_adapter
        lang_id, lang_version = (recorded.id, recorded.version) if recorded else (None, None)
    manifest = export_fused(
        view,
        lang_id,
        task_manifest.id,
        base=base,
        precision=precision,
        quantize=quantize,
        optimize=optimize,
        out=out,
        labelled=recorded_labelled_set(eval_file, task_manifest) if (quantize or precision != "fp32") else None,
        task_version=task_manifest.version,
        lang_version=lang_version,
    )
    summary = _summary(manifest)
    emit(summary, as_json, lambda: f"published {manifest.id} v{manifest.version}\n" + _figures(summary["parity"]))


@export_app.command("swappable")
@friendly_errors
def swappable(
    base: Annotated[str, typer.Option("--base", help="Base model: embedded, a local directory or a hub id.")] = (
        "embedded"
    ),
    store: StoreOption = None,
    defaults: DefaultsFlag = True,
    precision: Annotated[str, typer.Option("--precision", help="fp32, or fp16 for the CUDA provider.")] = "fp32",
    optimize: OptimizeFlag = None,
    out: OutOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Export the base graph whose adapter weights are inputs (one per base model), checked on a mixed batch."""
    from langadapt.export.swappable import export_swappable

    manifest = export_swappable(store_view(store, defaults), base=base, precision=precision, optimize=optimize, out=out)
    summary = _summary(manifest)
    summary["check_stacks"] = manifest.extra.get("check_stacks")
    emit(summary, as_json, lambda: f"published {manifest.id} v{manifest.version}\n" + _figures(summary["parity"]))


@export_app.command("verify")
@friendly_errors
def verify(
    artifact_id: Annotated[str, typer.Argument(help="Id of an onnx-fused or onnx-swappable artifact.")],
    version: Annotated[int | None, typer.Option("--version", help="Version (default: latest).")] = None,
    store: StoreOption = None,
    defaults: DefaultsFlag = True,
    eval_file: EvalOption = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Re-check an exported artifact: file checksums, then parity with the PyTorch reference; exit 1 if it fails."""
    from langadapt.export.errors import ParityError
    from langadapt.export.verify import verify_artifact
    from langadapt.models.kinds import FUSED_ARTIFACT
    from langadapt.models.store_view import address

    view = store_view(store, defaults)
    manifest = view.get(artifact_id, version)
    labelled = None
    if manifest.artifact == FUSED_ARTIFACT and manifest.precision != "fp32":
        sources = {row.role: row for row in manifest.sources or []}
        task_row = sources.get("task")
        task = view.get(address(view, task_row.id, task_row.source), task_row.version) if task_row else None
        labelled = recorded_labelled_set(eval_file, task) if task is not None else None
    try:
        result = verify_artifact(view, manifest.id, manifest.version, labelled=labelled, device=device)
    except AdapterNotFoundError:
        raise
    except (ParityError, StoreError) as err:
        where, message = f"{manifest.id} v{manifest.version}", err.message
        failure = {"ok": False, "id": manifest.id, "version": manifest.version, "error": message}
        failure["figures"] = getattr(err, "figures", {})
        emit(failure, as_json, lambda: f"FAILED {where}: {message}")
        raise typer.Exit(code=1) from None
    result["ok"] = True
    figures = {manifest.precision or "fp32": result["parity"]}
    emit(result, as_json, lambda: f"verified {manifest.id} v{manifest.version}\n" + _figures(figures))
