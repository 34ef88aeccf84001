"""The `langadapt` command: base models, adapter kinds, the adapter store; training, export and serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from langadapt.console import (
    HELP_MARKUP,
    DefaultsFlag,
    JsonFlag,
    StoreOption,
    emit,
    friendly_errors,
    key_value_text,
    warn_if_shadowing,
)
from langadapt.models.store_view import store_view

__all__ = ["app", "emit", "friendly_errors"]

app = typer.Typer(
    name="langadapt",
    help="Adapt small multilingual encoders to low-resource languages, export them and serve them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=HELP_MARKUP,
)
model_app = typer.Typer(
    help="Base encoders: the embedded default, local directories, Hugging Face ids.", rich_markup_mode=HELP_MARKUP
)
adapters_app = typer.Typer(
    help="Adapter kinds, and the adapter store seen over the packaged default adapters (read-only).",
    rich_markup_mode=HELP_MARKUP,
)
train_app = typer.Typer(
    help="Train language adapters (MLM) and task adapters (topic, sentiment, ner).", rich_markup_mode=HELP_MARKUP
)
eval_app = typer.Typer(
    help="Evaluate adapters: task metrics with the majority baseline, pseudo-perplexity.",
    rich_markup_mode=HELP_MARKUP,
)
app.add_typer(model_app, name="model", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters", no_args_is_help=True)
app.add_typer(train_app, name="train", no_args_is_help=True)
app.add_typer(eval_app, name="eval", no_args_is_help=True)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """langadapt: per-language adapters for small multilingual encoders."""
    if version:
        from langadapt import __version__

        typer.echo(__version__)
        raise typer.Exit()


@model_app.command("info")
@friendly_errors
def model_info(
    model: Annotated[str, typer.Argument(help='"embedded", a local directory or a Hugging Face id.')] = "embedded",
    as_json: JsonFlag = False,
) -> None:
    """Resolve a base model (converting the embedded one on first use) and show its shape and fingerprint."""
    from langadapt.models.base import resolve_base_model

    info = resolve_base_model(model).as_dict()
    emit(info, as_json, lambda: key_value_text(info))


@adapters_app.command("kinds")
@friendly_errors
def adapters_kinds(
    base: Annotated[str, typer.Option("--base", help="Base model the parameter counts are computed on.")] = (
        "embedded"
    ),
    as_json: JsonFlag = False,
) -> None:
    """List the adapter kinds with their paper defaults and their parameter count on a base model."""
    from langadapt.models.base import load_config, resolve_base_model
    from langadapt.models.kinds import ADAPTER_KINDS, count_parameters

    config = load_config(resolve_base_model(base))
    rows = [
        {
            "name": kind.name,
            "help": kind.help,
            "config": kind.build_config().to_dict(),
            "parameters": count_parameters(kind, config),
        }
        for kind in ADAPTER_KINDS.values()
    ]
    emit(
        {"base": base, "kinds": rows},
        as_json,
        lambda: "\n".join(f"{r['name']:<12} {r['parameters']:>12,}  {r['help']}" for r in rows),
    )


def manifest_summary(manifest: Any, source: str = "store") -> dict[str, Any]:
    """The fields of a manifest worth a line in a listing, with the layer it lives in."""
    from langadapt.models.store_view import qualified_name

    return {
        "name": qualified_name(manifest.id, source),
        "id": manifest.id,
        "version": manifest.version,
        "source": source,
        "language": manifest.language,
        "task": manifest.task,
        "kind": manifest.kind,
        "artifact": manifest.artifact,
        "base_model": manifest.base_model,
    }


def _listing_rows(view: Any, language: str | None, task: str | None, all_versions: bool) -> list[dict[str, Any]]:
    """One row per visible adapter version (latest of each by default), plus the default versions it shadows."""
    visible, hidden = view.candidates(), view.shadowed()
    candidates = [
        c
        for c in visible + hidden
        if (language is None or c.manifest.language == language) and (task is None or c.manifest.task == task)
    ]
    if not all_versions:
        latest = {(c.ref.source, c.ref.id): c for c in sorted(candidates, key=lambda c: c.ref.version)}
        candidates = list(latest.values())
    hidden_refs = {c.ref for c in hidden}
    rows = []
    for c in sorted(candidates, key=lambda c: (c.ref.id, c.ref.source != "store", c.ref.version)):
        row = manifest_summary(c.manifest, c.ref.source)
        row["shadowed"] = c.ref in hidden_refs
        row["shadows"] = [str(h.ref) for h in hidden if h.ref.id == c.ref.id] if c.ref.source == "store" else []
        rows.append(row)
    return rows


def _listing_line(row: dict[str, Any]) -> str:
    note = ""
    if row["shadows"]:
        note = f"  shadows {', '.join(row['shadows'])}"
    elif row["shadowed"]:
        note = f"  shadowed by the store's {row['id']}: not served"
    ref = f"{row['name']}@v{row['version']}"
    line = f"{ref:<40} {row['language'] or '-':<10} {row['task']:<10} {row['kind']:<16} {row['source']:<8}{note}"
    return line.rstrip()


@adapters_app.command("list")
@friendly_errors
def adapters_list(
    store: StoreOption = None,
    defaults: DefaultsFlag = True,
    language: Annotated[str | None, typer.Option("--lang", help="Only this language (any alias).")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions", help="Every version, not only the latest.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List the adapters of the store and the packaged defaults, each with its source (latest versions by default).

    Packaged defaults are named `default:<id>`; a store id equal to a default's shadows it (the store's serves).
    """
    from langadapt.models.language import canonical_language

    lang = canonical_language(language) if language else None
    view = store_view(store, defaults)
    rows = _listing_rows(view, lang, task, all_versions)
    empty = f"(no adapters: the store {view.root} is empty" + (")" if defaults else " and --no-defaults is set)")
    emit(rows, as_json, lambda: "\n".join(_listing_line(r) for r in rows) or empty)


@adapters_app.command("show")
@friendly_errors
def adapters_show(
    adapter_id: Annotated[
        str, typer.Argument(help="Adapter id, e.g. yor_Latn-ner (the store's, else the default); default:<id>.")
    ],
    version: Annotated[int | None, typer.Option("--version", help="Version (default: latest).")] = None,
    store: StoreOption = None,
    defaults: DefaultsFlag = True,
    as_json: JsonFlag = False,
) -> None:
    """Show one adapter's manifest and its source (the store, or the packaged defaults)."""
    view = store_view(store, defaults)
    manifest = view.get(adapter_id, version)
    data = {"source": view.source_of(adapter_id), **manifest.model_dump(mode="json")}
    emit(data, as_json, lambda: json.dumps(data, indent=2, ensure_ascii=False))


@adapters_app.command("publish")
@friendly_errors
def adapters_publish(
    folder: Annotated[Path, typer.Argument(help="Folder holding manifest.json and safetensors weights.")],
    store: StoreOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Publish a folder (with its manifest.json) to the writable store as a new version, atomically.

    An id that a packaged default also has shadows the default (a warning says so): the store's one serves.
    """
    from langadapt.errors import StoreError
    from langadapt.models.store import read_manifest

    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise StoreError(
            f"{folder} has no manifest.json",
            "write a manifest (see `langadapt adapters show` of any adapter for its fields) or import an "
            "`adapters` library folder from Python with AdapterStore.import_adapters_folder",
        )
    manifest = read_manifest(manifest_path)  # wrong types or malformed JSON: a StoreError naming each field
    view = store_view(store)
    published = view.writable.publish(folder, manifest)
    summary = manifest_summary(published)
    summary["shadows"] = [str(c.ref) for c in view.shadowed() if c.ref.id == published.id]
    warn_if_shadowing(view, published.id)
    emit(summary, as_json, lambda: f"published {published.id} v{published.version}")


@adapters_app.command("remove")
@friendly_errors
def adapters_remove(
    adapter_id: Annotated[str, typer.Argument(help="Adapter id in the writable store.")],
    version: Annotated[int | None, typer.Option("--version", help="Only this version (default: all).")] = None,
    store: StoreOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Remove an adapter (all versions, or one) from the writable store, atomically; packaged defaults are read-only."""
    view = store_view(store)
    view.remove(adapter_id, version)
    what = f"{adapter_id} v{version}" if version is not None else f"{adapter_id} (all versions)"
    restored = (
        [] if view.writable.versions(adapter_id) else [str(c.ref) for c in view.candidates() if c.ref.id == adapter_id]
    )
    text = f"removed {what}" + (f"; the packaged {', '.join(restored)} serves again" if restored else "")
    emit({"removed": adapter_id, "version": version}, as_json, lambda: text)


@adapters_app.command("verify")
@friendly_errors
def adapters_verify(
    adapter_id: Annotated[str | None, typer.Argument(help="Only this adapter (default: every one).")] = None,
    store: StoreOption = None,
    defaults: DefaultsFlag = True,
    as_json: JsonFlag = False,
) -> None:
    """Re-check every checksum and manifest, in the store and the packaged defaults; exit 1 on any bad adapter."""
    from langadapt.models.store_view import qualified_name

    view = store_view(store, defaults)
    if adapter_id is not None:
        layer, ident = view.locate(adapter_id)
        checked = [(view.source_of(adapter_id), layer.verify(ident))]
    else:
        checked = [(source, layer.verify()) for source, layer in view.layers()]
    rows = [
        {"id": p.id, "version": p.version, "source": source, "file": p.file, "reason": p.reason}
        for source, problems in checked
        for p in problems
    ]

    def text() -> str:
        bad = [
            f"BAD {qualified_name(str(r['id']), str(r['source']))} v{r['version']} {r['file'] or ''}: {r['reason']}"
            for r in rows
        ]
        return "\n".join(bad) or "all adapters verified"

    emit({"ok": not rows, "problems": rows}, as_json, text)
    if rows:
        raise typer.Exit(code=1)


def register_subcommands() -> None:
    """Mount the command groups that live beside their subpackages (training, export, serving)."""
    from langadapt.export.cli_export import export_app
    from langadapt.label import cli_label
    from langadapt.serve import cli_serve
    from langadapt.training import cli_lang, cli_lid, cli_task

    cli_lang.register(train_app, eval_app, app)
    cli_task.register(train_app, eval_app)
    cli_lid.register(train_app)
    cli_serve.register(app)
    cli_label.register(app)
    app.add_typer(export_app, name="export", no_args_is_help=True)


register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    app()
