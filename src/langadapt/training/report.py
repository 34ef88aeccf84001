"""Reports: run records (`run.json`) turned into one markdown table per task and a PNG of grouped bars.

Rows are languages, columns are variants (e.g. `task-only`, `lang+task:seq_bn`, `full-ft`, `lang:seq_bn`), each
cell the main test figure of the best run of that language and variant: macro-F1 for topic and sentiment, seqeval
entity F1 for NER, pseudo-perplexity for language (mlm) runs; `(best of 3)` says how many runs it was chosen from.
Beside them stands the baseline: the majority class for tasks, the base model without an adapter for PPPL. A cell
is `—` when no run was given for it and `n/a` when the run lacks the figure; every such gap, and every run that
could not be used, is listed under its table.

No run is dropped: under each table, every run is listed by its run name, seed and the settings that set it apart
from the other runs of its language and variant, with the best one marked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from langadapt.errors import LangadaptError
from langadapt.training.runs import RUN_FILE, RunRecord

__all__ = ["MAIN_METRICS", "MainMetric", "Report", "ReportPaths", "build_report", "read_runs", "write_report"]

NO_RUN = "—"
NO_FIGURE = "n/a"


@dataclass(frozen=True)
class MainMetric:
    """The figure a task is compared by: the keys it may be stored under, and where its baseline comes from."""

    label: str
    keys: tuple[str, ...]
    higher_is_better: bool
    baseline_label: str
    baseline_from_metrics: tuple[str, ...] = ()  # baseline read from `metrics` (mlm), else from `majority`
    digits: int = 3
    split: str = "test"


MAIN_METRICS: dict[str, MainMetric] = {
    "topic": MainMetric("macro-F1", ("macro_f1", "f1_macro"), True, "majority"),
    "sentiment": MainMetric("macro-F1", ("macro_f1", "f1_macro"), True, "majority"),
    "ner": MainMetric("entity F1 (seqeval)", ("f1", "seqeval_f1", "entity_f1"), True, "majority"),
    "mlm": MainMetric("PPPL", ("pppl", "pppl_after"), False, "base (no adapter)", ("pppl_before",), 2, "held-out text"),
}


# Settings that say where a run's files went or how it showed progress, not what it trained.
UNCOMPARED = {"out", "out_dir", "store", "progress", "train", "dev", "test", "text", "config", "details", "history"}


@dataclass
class Cell:
    """One table cell: the figure (of the best of `runs` runs), or why there is none."""

    value: float | None
    note: str = ""
    runs: int = 1

    def text(self, digits: int) -> str:
        """The cell as markdown."""
        if self.value is None:
            return self.note or NO_RUN
        figure = f"{self.value:.{digits}f}"
        return f"{figure} (best of {self.runs})" if self.runs > 1 else figure


@dataclass
class RunRow:
    """One run in a table's run list: where it came from, what set it apart, its figure, whether it is the best."""

    language: str
    variant: str
    name: str
    seed: object
    differs: str
    value: float | None
    best: bool


@dataclass
class TaskTable:
    """One task's table: languages × variants, the baseline per language, and what is missing."""

    task: str
    metric: MainMetric
    languages: list[str]
    variants: list[str]
    cells: dict[tuple[str, str], Cell]
    baseline: dict[str, Cell]
    notes: list[str] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)

    def cell(self, language: str, variant: str) -> Cell:
        """The cell for a language and variant (`—` when no run was given)."""
        return self.cells.get((language, variant), Cell(None, NO_RUN))

    def markdown(self) -> str:
        """The table, its mean row and its notes, as markdown."""
        m = self.metric
        better = "higher is better" if m.higher_is_better else "lower is better"
        lines = [f"## {self.task}: {m.label} ({m.split}), {better}", ""]
        header = ["language", m.baseline_label, *self.variants]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" + "---:|" * (len(header) - 1))
        for lang in self.languages:
            row = [lang, self.baseline.get(lang, Cell(None, NO_RUN)).text(m.digits)]
            row += [self.cell(lang, v).text(m.digits) for v in self.variants]
            lines.append("| " + " | ".join(row) + " |")
        if len(self.languages) > 1:
            means = [self._mean([self.baseline.get(lang, Cell(None)) for lang in self.languages])]
            means += [self._mean([self.cell(lang, v) for lang in self.languages]) for v in self.variants]
            lines.append("| **mean** | " + " | ".join(means) + " |")
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        lines += ["", f"### {self.task}: every run ({len(self.runs)})", ""]
        lines += [
            f"| language | variant | run | seed | settings that differ | {m.label} | best |",
            "|---" * 6 + "|---|",
        ]
        for run in self.runs:
            figure = NO_FIGURE if run.value is None else f"{run.value:.{m.digits}f}"
            cells = [run.language, run.variant, run.name, str(run.seed), run.differs or "—", figure]
            lines.append("| " + " | ".join([*cells, "**best**" if run.best else ""]) + " |")
        return "\n".join(lines)

    def _mean(self, cells: Sequence[Cell]) -> str:
        """Mean over the cells that have a figure, marked `(k/n)` when some are missing."""
        values = [c.value for c in cells if c.value is not None]
        if not values:
            return NO_RUN
        text = f"{sum(values) / len(values):.{self.metric.digits}f}"
        return text if len(values) == len(cells) else f"{text} ({len(values)}/{len(cells)})"


@dataclass
class Report:
    """All tables, plus the runs that could not be placed in any."""

    tables: list[TaskTable]
    skipped: list[str]
    runs: int

    def markdown(self, plot_name: str | None = None) -> str:
        """The whole report as markdown (with the plot embedded when its file name is given)."""
        parts = ["# langadapt report", "", f"{self.runs} run(s)."]
        if plot_name:
            parts += ["", f"![results per language and variant]({plot_name})"]
        for table in self.tables:
            parts += ["", table.markdown()]
        if self.skipped:
            parts += ["", "## Runs left out", "", *(f"- {s}" for s in self.skipped)]
        return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class ReportPaths:
    """The files a report was written to."""

    markdown: Path
    plot: Path | None


def read_runs(paths: Iterable[Path]) -> list[tuple[Path, RunRecord]]:
    """Run records from `run.json` files, run directories, or directories holding run directories (searched)."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            found.append(path)
        elif (path / RUN_FILE).is_file():
            found.append(path / RUN_FILE)
        elif path.is_dir():
            inside = sorted(path.rglob(RUN_FILE))
            if not inside:
                raise LangadaptError(f"no {RUN_FILE} in {path} or below it", "pass the output directories of runs")
            found += inside
        else:
            raise LangadaptError(f"{path} does not exist", "pass run directories or run.json files")
    records = []
    for file in dict.fromkeys(found):
        try:
            records.append((file, RunRecord.read(file)))
        except (ValidationError, ValueError, OSError) as err:
            raise LangadaptError(
                f"{file} is not a readable run record: {' '.join(str(err).split())[:300]}",
                "pass run.json files written by langadapt train/eval",
            ) from None
    return records


def _figure(values: dict[str, float], keys: Sequence[str]) -> tuple[float | None, str]:
    """The first of `keys` in `values` as a finite number, or None and why not."""
    for key in keys:
        if key in values:
            value = values[key]
            if isinstance(value, int | float) and math.isfinite(value):
                return float(value), ""
            return None, f"{NO_FIGURE} ({key}={value})"
    return None, NO_FIGURE


def build_report(records: Sequence[tuple[Path, RunRecord]]) -> Report:
    """Tables per task (in the order of MAIN_METRICS) from run records; each cell the best run of its kind."""
    skipped: list[str] = []
    by_task: dict[str, list[tuple[Path, RunRecord]]] = {}
    for path, run in records:
        if run.task not in MAIN_METRICS:
            skipped.append(f"{path}: unknown task {run.task!r} (known: {', '.join(MAIN_METRICS)})")
            continue
        by_task.setdefault(run.task, []).append((path, run))
    tables = [_table(task, by_task[task]) for task in MAIN_METRICS if task in by_task]
    return Report(tables=tables, skipped=skipped, runs=len(records))


def _run_name(path: Path) -> str:
    """A run's name: its directory (the folder holding its run.json)."""
    return path.parent.name if path.name == RUN_FILE else path.stem


def _compared_settings(run: RunRecord) -> dict[str, object]:
    """The settings that say what a run trained or scored (resolved learning rates included), flat."""
    flat = {k: v for k, v in run.settings.items() if k not in UNCOMPARED and isinstance(v, str | int | float | bool)}
    details = run.settings.get("details")
    if isinstance(details, Mapping):
        flat |= {k: details[k] for k in ("learning_rate", "head_learning_rate") if k in details}
    return {"run": run.kind_of_run, "base": run.base_model, "version": run.adapter_version, **flat}


def _differences(group: Sequence[tuple[Path, RunRecord]]) -> list[str]:
    """Per run of one language and variant, the settings every run has whose values differ (`learning_rate=0.001`).

    Settings only some runs have (a training run's epochs beside an evaluation run) would say nothing.
    """
    flats = [_compared_settings(run) for _, run in group]
    shared = set.intersection(*(set(flat) for flat in flats))
    keys = sorted(k for k in shared if len({repr(flat[k]) for flat in flats}) > 1)
    return [", ".join(f"{k}={flat.get(k)}" for k in keys if k != "seed") for flat in flats]


def _best(values: Sequence[float | None], higher_is_better: bool) -> int | None:
    """Index of the best figure (the earliest among equals), None when no run has one."""
    scored = [(value if higher_is_better else -value, -i) for i, value in enumerate(values) if value is not None]
    return -max(scored)[1] if scored else None


def _table(task: str, runs: Sequence[tuple[Path, RunRecord]]) -> TaskTable:
    """One task's table from its runs: the best run per cell, and every run listed."""
    metric = MAIN_METRICS[task]
    notes: list[str] = []
    groups: dict[tuple[str, str], list[tuple[Path, RunRecord]]] = {}
    for path, run in sorted(runs, key=lambda pr: pr[1].created):
        groups.setdefault((run.language or "any", run.variant), []).append((path, run))
    languages = sorted({lang for lang, _ in groups})
    variants = sorted({variant for _, variant in groups})
    cells: dict[tuple[str, str], Cell] = {}
    baseline: dict[str, Cell] = {}
    rows: list[RunRow] = []
    for (lang, variant), group in sorted(groups.items()):
        figures = [_figure(run.metrics, metric.keys) for _, run in group]
        best = _best([value for value, _ in figures], metric.higher_is_better)
        chosen = best if best is not None else len(group) - 1
        cells[(lang, variant)] = Cell(*figures[chosen], runs=len(group))
        for i, ((path, run), (value, _), differs) in enumerate(zip(group, figures, _differences(group), strict=True)):
            name, seed = _run_name(path), run.settings.get("seed", "—")
            rows.append(RunRow(lang, variant, name, seed, differs, value, i == best and len(group) > 1))
            if value is None:
                notes.append(
                    f"{lang} / {variant}: no {metric.label} in {path} (metrics: {sorted(run.metrics) or 'none'})"
                )
    headless: set[str] = set()
    for _, run in sorted(runs, key=lambda pr: pr[1].created):  # every run may carry the baseline, best or not
        lang = run.language or "any"
        if metric.baseline_from_metrics and run.settings.get("mlm_head") == "fresh":
            headless.add(lang)
        source = run.metrics if metric.baseline_from_metrics else run.majority
        base, _ = _figure(source, metric.baseline_from_metrics or metric.keys)
        if base is None:
            continue
        known = baseline.setdefault(lang, Cell(base)).value
        if known is not None and not math.isclose(known, base):
            notes.append(f"{lang}: runs disagree on the {metric.baseline_label} figure ({known} vs {base})")
    notes += [
        f"{lang}: the base has no MLM head of its own; its PPPL uses an untrained head" for lang in sorted(headless)
    ]
    for lang in languages:
        if lang not in baseline:
            baseline[lang] = Cell(None, NO_FIGURE)
            notes.append(f"{lang}: no run records a {metric.baseline_label} figure")
    return TaskTable(task, metric, languages, variants, cells, baseline, notes, rows)


def plot_report(report: Report, path: Path) -> Path:
    """Grouped bars per language × variant (baseline in grey, hatched), one panel per task, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = report.tables
    fig, axes = plt.subplots(1, len(tables), figsize=(max(6.0, 4.5 * len(tables)), 4.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, table in zip(axes[0], tables, strict=True):
        series = [(table.metric.baseline_label, [table.baseline.get(lang, Cell(None)) for lang in table.languages])]
        series += [(v, [table.cell(lang, v) for lang in table.languages]) for v in table.variants]
        width = 0.8 / len(series)
        for i, (name, cells) in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width for j, c in enumerate(cells) if c.value is not None]
            ys = [c.value for c in cells if c.value is not None]
            style = {"color": "0.7", "hatch": "//", "edgecolor": "0.4"} if i == 0 else {"color": colors((i - 1) % 10)}
            ax.bar(xs, ys, width=width, label=name, **style)
        ax.set_xticks(range(len(table.languages)), table.languages, rotation=45, ha="right")
        better = "higher is better" if table.metric.higher_is_better else "lower is better"
        ax.set_title(f"{table.task}: {table.metric.label} ({better})")
        if not table.metric.higher_is_better:
            ax.set_yscale("log")
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=min(3, len(series)))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(run_paths: Iterable[Path], out: Path) -> ReportPaths:
    """Read runs, write `out` (markdown) and a PNG of the same name next to it; return both paths.

    `out` may be a directory (existing, or a path without suffix): the files are then `report.md` and
    `report.png` inside it.
    """
    out = Path(out)
    if out.is_dir() or not out.suffix:
        out = out / "report.md"
    records = read_runs(run_paths)
    if not records:
        raise LangadaptError("no runs to report on", "pass run directories or run.json files")
    report = build_report(records)
    plot = plot_report(report, out.with_suffix(".png")) if report.tables else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.markdown(plot.name if plot else None), encoding="utf-8")
    return ReportPaths(markdown=out, plot=plot)
