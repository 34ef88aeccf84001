"""`langadapt train lid`: train the language-identification head on SIB-200 and publish it (`training.language_id`).

Mount it with `register(train_app)`, which adds the `lid` command wrapped in the main CLI's `friendly_errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from langadapt.console import JsonFlag, StoreOption, emit

__all__ = ["register", "train_lid"]


def train_lid(
    data: Annotated[Path, typer.Option("--data", help="SIB-200 folder: <lang>/{train,dev,test}.tsv.")] = Path(
        "../shared/data/topic/sib200"
    ),
    base: Annotated[str, typer.Option("--base", help='Base model: "embedded", a directory or a hub id.')] = "embedded",
    store: StoreOption = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the head into --store.")] = True,
    languages: Annotated[
        str, typer.Option("--languages", help="Comma-separated language folders (default: every folder).")
    ] = "",
    precision: Annotated[
        float, typer.Option("--precision", min=0.5, max=1.0, help="Dev precision the confidence threshold keeps.")
    ] = 0.99,
    cache: Annotated[Path | None, typer.Option("--cache", help="Folder to cache features in.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train the language-ID head (lang "auto") on the base's input embeddings and publish it as `any-lid`."""
    from langadapt.models.store import AdapterStore
    from langadapt.training.language_id import LanguageIdSettings, train_language_id

    settings = LanguageIdSettings(
        data=data,
        base=base,
        store=str(AdapterStore(store).root) if publish else None,
        languages=tuple(code.strip() for code in languages.split(",") if code.strip()),
        precision=precision,
        cache=cache,
    )
    summary = train_language_id(settings)
    summary.pop("confusion", None)
    if settings.store is not None:
        from langadapt.console import warn_if_shadowing
        from langadapt.models.store_view import store_view

        warn_if_shadowing(store_view(settings.store), summary["id"])  # the store's any-lid hides the packaged one
    emit(summary, as_json, lambda: _text(summary))


def _text(summary: dict[str, Any]) -> str:
    metrics = summary["metrics"]
    test, spans = metrics["test"], metrics["test_short_spans"]
    worst = sorted(test["f1"].items(), key=lambda item: item[1])[:3]
    lines = [
        f"{summary.get('id', 'any-lid (not published)')} v{summary.get('version', '-')}: "
        f"{len(summary['labels'])} languages",
        f"test accuracy {test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}; lowest F1 "
        + ", ".join(f"{code} {score:.3f}" for code, score in worst),
        f"threshold {metrics['threshold']:.3f}: sentences answered {test['answered']:.3f}; "
        f"short spans answered {spans['answered']:.3f} at accuracy {_share(spans['answered_accuracy'])}",
        f"{summary['seconds']} s",
    ]
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def register(train_app: typer.Typer) -> None:
    """Add `lid` to the `train` group, with the main CLI's error handling."""
    from langadapt.console import friendly_errors

    train_app.command("lid")(friendly_errors(train_lid))
