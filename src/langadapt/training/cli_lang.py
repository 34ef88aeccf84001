"""`langadapt train lang`, `langadapt eval pppl` and `langadapt report` from the shell.

Mount them with `register(train_app, eval_app, root_app)`: it adds `lang` to the `train` group, `pppl` to the
`eval` group and `report` to the root command, each wrapped in the main CLI's `friendly_errors` (a
LangadaptError becomes a message, a hint and exit code 2). The training flags are generated from
`LanguageAdapterSettings` (`flags`); those left out fall back to the `--config` file (JSON, YAML or TOML), then to
the paper's defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from langadapt.training.flags import CONFIG_HELP, option, settings_flags
from langadapt.training.language_adapter import LanguageAdapterSettings

__all__ = ["eval_pppl", "register", "report", "train_lang"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]


def _emit(data: dict[str, Any], as_json: bool, text: str) -> None:
    """Print through the main CLI's `emit` (JSON, or the given text)."""
    from langadapt.console import emit

    emit(data, as_json, lambda: text)


@settings_flags(LanguageAdapterSettings)
def train_lang(
    flags: dict[str, Any],
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a language adapter by masked-language modelling on text and/or knowledge-graph sentences."""
    from langadapt.training.language_adapter import train_language_adapter

    settings = LanguageAdapterSettings.load(config, flags)
    try:
        result = train_language_adapter(settings)
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume from the last checkpoint", err=True)
        raise typer.Exit(code=130) from None
    manifest = result.manifest
    summary = {
        "id": manifest.id,
        "version": manifest.version or None,
        "language": manifest.language,
        "kind": manifest.kind,
        "base_model": manifest.base_model,
        "mlm_head": manifest.extra["mlm_head"]["source"],
        "steps": result.loop.steps,
        "best_step": result.loop.best_step,
        "stopped_early": result.loop.stopped_early,
        "metrics": manifest.metrics,
        "seconds_per_step": result.seconds_per_step,
        "out_dir": str(result.run_dir),
        "adapter_dir": str(result.adapter_dir),
    }
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in manifest.metrics.items())
    text_out = "\n".join(
        [
            f"{manifest.id} v{manifest.version or '-'}  ({manifest.extra['mlm_head']['source']} MLM head)",
            f"validation  {metrics}",
            f"steps       {result.loop.steps} (best at {result.loop.best_step}), {result.seconds_per_step:.3f} s/step",
            f"run         {result.run_dir}",
        ]
    )
    _emit(summary, as_json, text_out)


def eval_pppl(
    text: Annotated[Path, typer.Option("--text", help="Held-out text: one sentence a line (or a text table).")],
    lang_adapter: Annotated[
        str | None, typer.Option("--lang-adapter", help="Language adapter id in the store (default: the bare base).")
    ] = None,
    version: Annotated[int | None, typer.Option("--version", help="Adapter version (default: latest).")] = None,
    base: Annotated[
        str | None,
        typer.Option("--base", help="Base model (default: the adapter's, else the embedded one)."),
    ] = None,
    store: Annotated[Path | None, option(LanguageAdapterSettings, "store")] = None,
    language: Annotated[str | None, typer.Option("--lang", help="Language of the text, for the run record.")] = None,
    max_sentences: Annotated[int | None, typer.Option("--max-sentences", help="Score only the first N.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Masked copies per forward pass.")] = 64,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per sentence; longer are cut.")] = 256,
    out: Annotated[Path | None, typer.Option("--out", help="Write run.json into this directory.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Pseudo-perplexity of the base model, or of base + a language adapter, on held-out text."""
    from langadapt.training.language_adapter import evaluate_pppl

    result = evaluate_pppl(
        text,
        lang_adapter=lang_adapter,
        version=version,
        base=base,
        store=store,
        language=language,
        max_sentences=max_sentences,
        batch_size=batch_size,
        max_length=max_length,
        out=out,
        progress=progress,
    )
    summary = result.summary()
    what = f"{result.adapter_id} v{result.adapter_version}" if result.adapter_id else "base (no adapter)"
    s = result.score
    text_out = (
        f"pppl {s.pppl:.3f}  {what} on {result.base_model}\n"
        f"{s.tokens} tokens in {s.sentences} sentences ({s.truncated} cut at {s.max_length} tokens)"
    )
    _emit(summary, as_json, text_out)


def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories, run.json files, or folders of runs.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Markdown file to write; the PNG goes next to it.")],
    best: Annotated[
        bool, typer.Option("--best", help="Each cell the best of its runs, not their mean ± sd over seeds.")
    ] = False,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help='JSON of published figures shown beside ours: {"name": "paper", "<task>": {"<language>": 0.85}}.',
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Turn runs into a markdown table per task (language × variant: the mean ± sd of its runs, or with --best the
    best run; the baseline; with --reference published figures; `Δ lang adapter` paired by seed when the table
    is task-only against lang+task), a list of every run (run name, seed, the settings that differ, the best
    marked) and a PNG plot (error bars: sd)."""
    from langadapt.training.report import write_report

    paths = write_report(run_dirs, out, best=best, reference=reference)
    data = {"markdown": str(paths.markdown), "plot": str(paths.plot) if paths.plot else None}
    _emit(data, as_json, f"wrote {paths.markdown}" + (f" and {paths.plot}" if paths.plot else ""))


def register(train_app: typer.Typer, eval_app: typer.Typer, root_app: typer.Typer) -> None:
    """Add `train lang`, `eval pppl` and the root `report` command, with the main CLI's error handling."""
    from langadapt.console import friendly_errors

    train_app.command("lang")(friendly_errors(train_lang))
    eval_app.command("pppl")(friendly_errors(eval_pppl))
    root_app.command("report")(friendly_errors(report))
