"""Reports: run records (`run.json`) turned into one markdown table per task and a PNG of grouped bars.

Rows are languages, columns are variants (e.g. `task-only`, `lang+task:seq_bn`, `full-ft`, `lang:seq_bn`), each
cell the main test figure of that language and variant: macro-F1 for topic and sentiment, seqeval entity F1 for
NER, pseudo-perplexity for language (mlm) runs. Several runs of one cell (seeds, as a rule) are summarised as
`mean ± sd (n=K)`: `0.612 ± 0.014 (n=2)` is the mean of two runs' figures and their sample standard deviation
(n − 1 in the denominator); `(n=2 of 3)` says that one of three runs lacks the figure. A single run's cell is its
figure alone. With `best=True` (`--best`) a cell is instead the best of its runs, `0.671 (best of 3)`.
Beside them stands the baseline: the majority class for tasks, the base model without an adapter for PPPL. A cell
is `—` when no run was given for it and `n/a` when the run lacks the figure; every such gap, every run that
could not be used, and every mean over runs whose settings differ beyond the seed is listed under its table.

When a table's variants are exactly one task-only variant and one `lang+task:*` variant, a column `Δ lang adapter`
gives, per language, lang+task − task-only paired by seed (`settings["seed"]` of both runs; runs of one seed and
variant are averaged first): the mean of the differences `± sd (n=seeds paired)`, signed, so a positive Δ is a
higher figure with the language adapter. Runs without a partner of the same seed are left out of it, and listed.

A reference (`read_reference`, `--reference paper.json`: `{"name": "paper", "topic": {"hau_Latn": 0.73}}`) adds a
column of published figures beside ours, under its `name` (default `reference`), in the tables of the tasks it
has; a language it lacks shows `—`.

No run is dropped: under each table, every run is listed by its run name, seed and the settings that set it apart
from the other runs of its language and variant, with the best one marked.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from langadapt.errors import LangadaptError
from langadapt.training.runs import RUN_FILE, RunRecord

__all__ = [
    "MAIN_METRICS",
    "MainMetric",
    "Reference",
    "Report",
    "ReportPaths",
    "build_report",
    "read_reference",
    "read_runs",
    "write_report",
]

NO_RUN = "—"
NO_FIGURE = "n/a"
DELTA = "Δ lang adapter"


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
    at_most: float | None = None  # the largest figure possible: a reference above it is a percentage by mistake


MAIN_METRICS: dict[str, MainMetric] = {
    "topic": MainMetric("macro-F1", ("macro_f1", "f1_macro"), True, "majority", at_most=1.0),
    "sentiment": MainMetric("macro-F1", ("macro_f1", "f1_macro"), True, "majority", at_most=1.0),
    "ner": MainMetric("entity F1 (seqeval)", ("f1", "seqeval_f1", "entity_f1"), True, "majority", at_most=1.0),
    "mlm": MainMetric("PPPL", ("pppl", "pppl_after"), False, "base (no adapter)", ("pppl_before",), 2, "held-out text"),
}


# Settings that say where a run's files went or how it showed progress, not what it trained.
UNCOMPARED = {"out", "out_dir", "store", "progress", "train", "dev", "test", "text", "config", "details", "history"}


@dataclass
class Cell:
    """One table cell: one run's figure, the mean of `n` figures (with `sd`), the best of `runs`, or why none."""

    value: float | None
    note: str = ""
    runs: int = 1  # runs given for the cell
    n: int = 1  # figures the value stands for: a mean's n, a difference's pairs
    sd: float | None = None  # sample standard deviation of the n figures, when n ≥ 2
    best: bool = False  # the value is the best of the runs, not their mean
    signed: bool = False  # a difference, shown with its sign and its n

    def text(self, digits: int) -> str:
        """The cell as markdown."""
        if self.value is None:
            return self.note or NO_RUN
        figure = f"{self.value:+.{digits}f}" if self.signed else f"{self.value:.{digits}f}"
        if self.best:
            return f"{figure} (best of {self.runs})" if self.runs > 1 else figure
        counted = f"n={self.n}" + (f" of {self.runs}" if self.runs > self.n else "")
        if self.sd is not None:
            return f"{figure} ± {self.sd:.{digits}f} ({counted})"
        return f"{figure} ({counted})" if self.signed or self.runs > self.n else figure


def _summary(figures: Sequence[float], runs: int, signed: bool = False) -> Cell:
    """The mean of figures with their sample standard deviation (none for a single figure)."""
    sd = statistics.stdev(figures) if len(figures) > 1 else None
    return Cell(statistics.fmean(figures), runs=runs, n=len(figures), sd=sd, signed=signed)


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
    extra: list[tuple[str, dict[str, Cell]]] = field(default_factory=list)  # reference, Δ: name, cell per language

    def cell(self, language: str, variant: str) -> Cell:
        """The cell for a language and variant (`—` when no run was given)."""
        return self.cells.get((language, variant), Cell(None, NO_RUN))

    def markdown(self) -> str:
        """The table, its mean row and its notes, as markdown."""
        m = self.metric
        better = "higher is better" if m.higher_is_better else "lower is better"
        lines = [f"## {self.task}: {m.label} ({m.split}), {better}", ""]
        header = ["language", m.baseline_label, *self.variants, *(name for name, _ in self.extra)]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" + "---:|" * (len(header) - 1))
        for lang in self.languages:
            row = [lang, self.baseline.get(lang, Cell(None, NO_RUN)).text(m.digits)]
            row += [self.cell(lang, v).text(m.digits) for v in self.variants]
            row += [cells.get(lang, Cell(None, NO_RUN)).text(m.digits) for _, cells in self.extra]
            lines.append("| " + " | ".join(row) + " |")
        if len(self.languages) > 1:
            means = [self._mean([self.baseline.get(lang, Cell(None)) for lang in self.languages])]
            means += [self._mean([self.cell(lang, v) for lang in self.languages]) for v in self.variants]
            means += [self._mean([cells.get(lang, Cell(None)) for lang in self.languages]) for _, cells in self.extra]
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
        """Mean over the cells that have a figure (signed for differences), marked `(k/n)` when some are missing."""
        values = [c.value for c in cells if c.value is not None]
        if not values:
            return NO_RUN
        sign = "+" if any(c.signed for c in cells) else ""
        text = f"{sum(values) / len(values):{sign}.{self.metric.digits}f}"
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


@dataclass(frozen=True)
class Reference:
    """Published figures (e.g. the paper's) to show beside ours: task → language → figure, under a column name."""

    name: str
    figures: dict[str, dict[str, float | None]]


def read_reference(path: Path) -> Reference:
    """A reference from JSON: `{"name": "paper", "<task>": {"<language>": figure or null}}`, checked."""
    hint = 'write {"name": "paper", "ner": {"yor_Latn": 0.85}}: tasks, then languages, then figures as fractions'
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LangadaptError(f"cannot read the reference {path}: {err}", hint) from None
    if not isinstance(data, dict):
        raise LangadaptError(f"the reference {path} is not a JSON object", hint)
    name = data.pop("name", "reference")
    if not isinstance(name, str) or not name.strip():
        raise LangadaptError(f"the reference {path} has a `name` that is not text: {name!r}", hint)
    figures: dict[str, dict[str, float | None]] = {}
    for task, languages in data.items():
        metric = MAIN_METRICS.get(task)
        if metric is None:
            raise LangadaptError(
                f"the reference {path} has an unknown task {task!r}", f"known: {', '.join(MAIN_METRICS)}"
            )
        if not isinstance(languages, dict):
            raise LangadaptError(f"the reference {path}: {task} is not an object of language → figure", hint)
        for lang, value in languages.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise LangadaptError(f"the reference {path}: {task} / {lang} is {value!r}, not a number", hint)
            if value is not None and metric.at_most is not None and value > metric.at_most:
                raise LangadaptError(
                    f"the reference {path}: {task} / {lang} is {value}, above {metric.at_most} for {metric.label}",
                    f"give {metric.label} as a fraction ({value / 100:g}, not {value})",
                )
        figures[task] = {lang: None if v is None else float(v) for lang, v in languages.items()}
    return Reference(name.strip(), figures)


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


def build_report(
    records: Sequence[tuple[Path, RunRecord]], *, best: bool = False, reference: Reference | None = None
) -> Report:
    """Tables per task (in the order of MAIN_METRICS) from run records; each cell the mean of its runs (or best)."""
    skipped: list[str] = []
    by_task: dict[str, list[tuple[Path, RunRecord]]] = {}
    for path, run in records:
        if run.task not in MAIN_METRICS:
            skipped.append(f"{path}: unknown task {run.task!r} (known: {', '.join(MAIN_METRICS)})")
            continue
        by_task.setdefault(run.task, []).append((path, run))
    tables = [_table(task, by_task[task], best) for task in MAIN_METRICS if task in by_task]
    if reference is not None:
        for table in tables:
            _add_reference(table, reference)
    return Report(tables=tables, skipped=skipped, runs=len(records))


def _run_name(path: Path) -> str:
    """A run's name: its directory (the folder holding its run.json)."""
    return path.parent.name if path.name == RUN_FILE else path.stem


def _compared_settings(run: RunRecord) -> dict[str, object]:
    """The settings that say what a run trained or scored (resolved learning rates included), flat."""
    flat = {
        k: v
        for k, v in run.settings.items()
        if k not in UNCOMPARED and (v is None or isinstance(v, str | int | float | bool))
    }
    details = run.settings.get("details")
    if isinstance(details, Mapping):
        flat |= {k: details[k] for k in ("learning_rate", "head_learning_rate") if k in details}
    return {"run": run.kind_of_run, "base": run.base_model, "version": run.adapter_version, **flat}


def _differences(group: Sequence[tuple[Path, RunRecord]]) -> tuple[list[str], list[str]]:
    """The settings (beside the seed) every run of one language and variant has whose values differ, and per run
    their values (`learning_rate=0.001`).

    Between runs of one kind (all training runs), a setting a run lacks is unset there (`None`): a record written
    before a flag existed ran with its default. Between kinds (a training run's epochs beside an evaluation run)
    only the settings all have are compared; the others would say nothing.
    """
    flats = [_compared_settings(run) for _, run in group]
    if len({flat["run"] for flat in flats}) == 1:
        compared = set.union(*(set(flat) for flat in flats))
    else:
        compared = set.intersection(*(set(flat) for flat in flats))
    keys = sorted(k for k in compared if k != "seed" and len({repr(flat.get(k)) for flat in flats}) > 1)
    return keys, [", ".join(f"{k}={flat.get(k)}" for k in keys) for flat in flats]


def _best(values: Sequence[float | None], higher_is_better: bool) -> int | None:
    """Index of the best figure (the earliest among equals), None when no run has one."""
    scored = [(value if higher_is_better else -value, -i) for i, value in enumerate(values) if value is not None]
    return -max(scored)[1] if scored else None


def _cell(values: Sequence[float | None], notes: Sequence[str], higher_is_better: bool, best: bool) -> Cell:
    """One cell from the figures of its runs (None where a run lacks it): their mean and sd, or the best."""
    figures = [value for value in values if value is not None]
    if best or not figures:
        chosen = _best(values, higher_is_better)
        chosen = chosen if chosen is not None else len(values) - 1
        return Cell(values[chosen], notes[chosen], runs=len(values), n=len(figures), best=best)
    return _summary(figures, len(values))


def _table(task: str, runs: Sequence[tuple[Path, RunRecord]], best: bool = False) -> TaskTable:
    """One task's table from its runs: the mean (or best) per cell, every run listed, the paired Δ if it applies."""
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
        values = [value for value, _ in figures]
        cells[(lang, variant)] = _cell(values, [note for _, note in figures], metric.higher_is_better, best)
        top = _best(values, metric.higher_is_better)
        keys, differences = _differences(group)
        if keys and not best and sum(value is not None for value in values) > 1:
            notes.append(
                f"{lang} / {variant}: the mean is over runs whose settings differ beyond the seed "
                f"({', '.join(keys)}); --best shows the best run instead"
            )
        for i, ((path, run), value, differs) in enumerate(zip(group, values, differences, strict=True)):
            name, seed = _run_name(path), run.settings.get("seed", "—")
            rows.append(RunRow(lang, variant, name, seed, differs, value, i == top and len(group) > 1))
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
    table = TaskTable(task, metric, languages, variants, cells, baseline, notes, rows)
    _add_delta(table, groups)
    return table


def _delta_variants(variants: Sequence[str]) -> tuple[str, str] | None:
    """(task-only, lang+task) when the variants are exactly one of each, else None."""
    without = [v for v in variants if v == "task-only" or v.startswith("task-only:")]
    with_lang = [v for v in variants if v.startswith("lang+task:")]
    if len(variants) == 2 and len(without) == 1 and len(with_lang) == 1:
        return without[0], with_lang[0]
    return None


def _add_delta(table: TaskTable, groups: Mapping[tuple[str, str], Sequence[tuple[Path, RunRecord]]]) -> None:
    """Add the `Δ lang adapter` column: per language, lang+task − task-only paired by seed, its mean and sd."""
    pair = _delta_variants(table.variants)
    if pair is None:
        return
    without, with_lang = pair
    column: dict[str, Cell] = {}
    unpaired: list[str] = []
    for lang in table.languages:
        sides = [_by_seed(groups.get((lang, variant), ()), table.metric) for variant in pair]
        seeds = sorted(set(sides[0]) & set(sides[1]), key=lambda s: (len(s), s))
        diffs = [statistics.fmean(sides[1][s]) - statistics.fmean(sides[0][s]) for s in seeds]
        if diffs:
            column[lang] = _summary(diffs, len(diffs), signed=True)
        left_out = [
            f"{variant} {_run_name(path)} ({'no seed' if seed is None else f'seed {seed}'})"
            for variant in pair
            for path, run in groups.get((lang, variant), ())
            if (seed := _seed(run)) not in seeds and _figure(run.metrics, table.metric.keys)[0] is not None
        ]
        if left_out:
            unpaired.append(f"{lang}: {DELTA} leaves out runs with no partner of the same seed: {', '.join(left_out)}")
    if not column:
        table.notes.append(f"no {DELTA} column: no seed has a figure under both {without} and {with_lang}")
        return
    table.notes.append(
        f"{DELTA}: {with_lang} − {without} for each seed both have, mean ± sd over those seeds (n = seeds)"
    )
    table.notes += unpaired
    table.extra.append((DELTA, column))


def _seed(run: RunRecord) -> str | None:
    """A run's seed as text (`settings["seed"]`), None when it has none."""
    seed = run.settings.get("seed")
    return None if seed is None else str(seed)


def _by_seed(group: Iterable[tuple[Path, RunRecord]], metric: MainMetric) -> dict[str, list[float]]:
    """The figures of runs with a seed, by seed; runs without a seed or a figure are left out."""
    seeds: dict[str, list[float]] = {}
    for _, run in group:
        value, _ = _figure(run.metrics, metric.keys)
        if (seed := _seed(run)) is not None and value is not None:
            seeds.setdefault(seed, []).append(value)
    return seeds


def _add_reference(table: TaskTable, reference: Reference) -> None:
    """Add the reference's column to a table of a task it has (before Δ), noting languages we have no run of."""
    figures = reference.figures.get(table.task)
    if figures is None:
        return
    column = {lang: Cell(figures.get(lang)) for lang in table.languages}
    table.extra.insert(0, (reference.name, column))
    unmatched = sorted(set(figures) - set(table.languages))
    if unmatched:
        table.notes.append(f"{reference.name} has figures for languages with no run here: {', '.join(unmatched)}")


def plot_report(report: Report, path: Path) -> Path:
    """Grouped bars per language × variant (baseline in grey, hatched; a reference outlined), one panel per task,
    saved as PNG; a mean's bar carries its sd as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = report.tables
    fig, axes = plt.subplots(1, len(tables), figsize=(max(6.0, 4.5 * len(tables)), 4.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, table in zip(axes[0], tables, strict=True):
        series = [(table.metric.baseline_label, [table.baseline.get(lang, Cell(None)) for lang in table.languages])]
        series += [(v, [table.cell(lang, v) for lang in table.languages]) for v in table.variants]
        references = [(name, cells) for name, cells in table.extra if name != DELTA]  # Δ is not on this scale
        series += [(name, [cells.get(lang, Cell(None)) for lang in table.languages]) for name, cells in references]
        width = 0.8 / len(series)
        for i, (name, cells) in enumerate(series):
            shown = [(j, c) for j, c in enumerate(cells) if c.value is not None]
            xs = [j + (i - (len(series) - 1) / 2) * width for j, _ in shown]
            ys = [c.value for _, c in shown]
            errors = [math.nan if c.sd is None else c.sd for _, c in shown]  # NaN: no bar, not a bar of 0
            if i == 0:
                style: dict[str, object] = {"color": "0.7", "hatch": "//", "edgecolor": "0.4"}
            elif i > len(table.variants):
                style = {"color": "white", "edgecolor": "black", "linewidth": 1.2}
            else:
                style = {"color": colors((i - 1) % 10)}
            if any(c.sd is not None for _, c in shown):
                style |= {"yerr": errors, "capsize": 3, "error_kw": {"elinewidth": 1, "ecolor": "0.2"}}
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


def write_report(
    run_paths: Iterable[Path], out: Path, *, best: bool = False, reference: Path | None = None
) -> ReportPaths:
    """Read runs, write `out` (markdown) and a PNG of the same name next to it; return both paths.

    `out` may be a directory (existing, or a path without suffix): the files are then `report.md` and
    `report.png` inside it. `best` shows the best run per cell instead of the mean; `reference` is a JSON file
    of published figures (`read_reference`) shown beside ours.
    """
    out = Path(out)
    if out.is_dir() or not out.suffix:
        out = out / "report.md"
    figures = read_reference(reference) if reference is not None else None
    records = read_runs(run_paths)
    if not records:
        raise LangadaptError("no runs to report on", "pass run directories or run.json files")
    report = build_report(records, best=best, reference=figures)
    plot = plot_report(report, out.with_suffix(".png")) if report.tables else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.markdown(plot.name if plot else None), encoding="utf-8")
    return ReportPaths(markdown=out, plot=plot)
