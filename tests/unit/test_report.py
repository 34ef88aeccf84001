"""Reports: the table cells are the runs' figures (mean ± sd over seeds, or the best), the paired Δ and a
reference stand beside them, the plot is written, and gaps are said, not hidden."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from langadapt.errors import LangadaptError
from langadapt.training.report import build_report, read_reference, read_runs, write_report
from langadapt.training.runs import RunRecord

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def record(tmp: Path, name: str, **fields: object) -> Path:
    """Write one synthetic run record into its own run directory."""
    fields.setdefault("kind_of_run", "train-task")
    fields.setdefault("created", T0)
    run = RunRecord.model_validate(fields)
    return run.write(tmp / name).parent


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """Topic, NER and MLM runs over two languages, with one missing metric and one unknown task."""
    return [
        record(
            tmp_path,
            "a",
            language="hau_Latn",
            task="topic",
            variant="task-only",
            metrics={"macro_f1": 0.712, "accuracy": 0.75},
            majority={"macro_f1": 0.041},
        ),
        record(
            tmp_path,
            "b",
            language="hau_Latn",
            task="topic",
            variant="lang+task:seq_bn",
            metrics={"macro_f1": 0.7504},
            majority={"macro_f1": 0.041},
        ),
        record(
            tmp_path,
            "c",
            language="yor_Latn",
            task="topic",
            variant="task-only",
            metrics={"accuracy": 0.6},
            majority={"macro_f1": 0.061},
        ),
        record(
            tmp_path,
            "d",
            language="yor_Latn",
            task="ner",
            variant="task-only",
            metrics={"f1": 0.801, "precision": 0.8},
            majority={"f1": 0.0},
        ),
        record(
            tmp_path,
            "e",
            kind_of_run="train-lang",
            language="yor_Latn",
            task="mlm",
            variant="lang:seq_bn",
            metrics={"pppl": 12.345, "pppl_before": 40.5, "val_loss": 2.1},
        ),
        record(
            tmp_path,
            "f",
            kind_of_run="train-lang",
            language="yor_Latn",
            task="mlm",
            variant="lang:lora",
            metrics={"pppl": 15.0, "pppl_before": 40.5},
        ),
        record(tmp_path, "g", language="yor_Latn", task="pos", variant="task-only", metrics={"f1": 0.9}),
    ]


def table_rows(markdown: str, title_start: str) -> dict[str, list[str]]:
    """The rows of one markdown table (by the start of its heading) as {first cell: other cells}."""
    lines = markdown.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("#") and line.lstrip("# ").startswith(title_start)
    )
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_cells_are_the_main_metric_with_the_majority_baseline(runs: list[Path]) -> None:
    report = build_report(read_runs(runs))
    assert [t.task for t in report.tables] == ["topic", "ner", "mlm"]
    text = report.markdown()
    topic = table_rows(text, "topic")
    assert topic["language"] == ["majority", "lang+task:seq_bn", "task-only"]
    assert topic["hau_Latn"] == ["0.041", "0.750", "0.712"]
    assert topic["yor_Latn"] == ["0.061", "—", "n/a"]  # no run for seq_bn; a run without macro-F1
    assert topic["**mean**"] == ["0.051", "0.750 (1/2)", "0.712 (1/2)"]
    assert "yor_Latn / task-only: no macro-F1" in text and "metrics: ['accuracy']" in text
    assert table_rows(text, "ner")["yor_Latn"] == ["0.000", "0.801"]
    mlm = table_rows(text, "mlm")
    assert mlm["language"] == ["base (no adapter)", "lang:lora", "lang:seq_bn"]
    assert mlm["yor_Latn"] == ["40.50", "15.00", "12.35"]
    assert "lower is better" in text
    assert "unknown task 'pos'" in text


def test_every_run_is_kept_and_the_best_marked(tmp_path: Path) -> None:
    """A second run of the same language and variant (here worse, and later) no longer replaces the first."""
    first = record(
        tmp_path,
        "mar-lr1e-3",
        language="mar_Deva",
        task="sentiment",
        variant="task-only:seq_bn",
        metrics={"macro_f1": 0.671},
        majority={"macro_f1": 0.2},
        settings={"seed": 42, "learning_rate": 1e-3, "epochs": 3, "out": "runs/a", "details": {"learning_rate": 1e-3}},
    )
    second = record(
        tmp_path,
        "mar-lr1e-4",
        language="mar_Deva",
        task="sentiment",
        variant="task-only:seq_bn",
        metrics={"macro_f1": 0.375},
        majority={"macro_f1": 0.2},
        settings={"seed": 42, "learning_rate": 1e-4, "epochs": 3, "out": "runs/b", "details": {"learning_rate": 1e-4}},
        created=T0 + timedelta(hours=1),
    )
    third = record(
        tmp_path,
        "mar-seed7",
        language="mar_Deva",
        task="sentiment",
        variant="task-only:seq_bn",
        metrics={"macro_f1": 0.65},
        majority={"macro_f1": 0.2},
        settings={"seed": 7, "learning_rate": 1e-3, "epochs": 3, "out": "runs/c", "details": {"learning_rate": 1e-3}},
        created=T0 + timedelta(hours=2),
    )
    text = build_report(read_runs([second, third, first])).markdown()
    assert table_rows(text, "sentiment")["mar_Deva"] == ["0.200", "0.565 ± 0.165 (n=3)"]  # mean, sample sd
    assert (
        "mar_Deva / task-only:seq_bn: the mean is over runs whose settings differ beyond the seed (learning_rate)"
        in text
    )
    best = build_report(read_runs([second, third, first]), best=True).markdown()
    assert table_rows(best, "sentiment")["mar_Deva"] == ["0.200", "0.671 (best of 3)"]  # the old behaviour
    assert "the mean is over" not in best
    assert "replaced" not in text
    runs = table_rows(text, "sentiment: every run (3)")
    assert runs["language"] == ["variant", "run", "seed", "settings that differ", "macro-F1", "best"]
    listed = [line for line in text.splitlines() if line.startswith("| mar_Deva | task-only:seq_bn |")]
    assert listed == [
        "| mar_Deva | task-only:seq_bn | mar-lr1e-3 | 42 | learning_rate=0.001 | 0.671 | **best** |",
        "| mar_Deva | task-only:seq_bn | mar-lr1e-4 | 42 | learning_rate=0.0001 | 0.375 |  |",
        "| mar_Deva | task-only:seq_bn | mar-seed7 | 7 | learning_rate=0.001 | 0.650 |  |",
    ]


def test_a_setting_an_older_training_record_lacks_counts_as_unset(tmp_path: Path) -> None:
    """A record written before --reduction-factor existed ran with the default: it differs from one that set 4."""
    older = record(
        tmp_path, "rf-default", language="hau_Latn", task="ner", variant="task-only:seq_bn",
        metrics={"f1": 0.38}, settings={"seed": 1, "epochs": 3},
    )  # fmt: skip
    newer = record(
        tmp_path, "rf4", language="hau_Latn", task="ner", variant="task-only:seq_bn",
        metrics={"f1": 0.48}, settings={"seed": 1, "epochs": 3, "reduction_factor": 4},
    )  # fmt: skip
    text = build_report(read_runs([older, newer])).markdown()
    assert "differ beyond the seed (reduction_factor)" in text
    assert "| hau_Latn | task-only:seq_bn | rf-default | 1 | reduction_factor=None | 0.380 |  |" in text
    assert "| hau_Latn | task-only:seq_bn | rf4 | 1 | reduction_factor=4 | 0.480 | **best** |" in text


def test_disagreeing_baselines_are_noted(tmp_path: Path) -> None:
    a = record(
        tmp_path,
        "a",
        language="hau_Latn",
        task="topic",
        variant="task-only",
        metrics={"macro_f1": 0.5},
        majority={"macro_f1": 0.1},
    )
    b = record(
        tmp_path,
        "b",
        language="hau_Latn",
        task="topic",
        variant="full-ft",
        metrics={"macro_f1": 0.6},
        majority={"macro_f1": 0.2},
    )
    text = build_report(read_runs([a, b])).markdown()
    assert "hau_Latn: runs disagree on the majority figure" in text


def test_mlm_baseline_survives_a_replaced_run_and_headless_bases_are_flagged(tmp_path: Path) -> None:
    trained = record(
        tmp_path,
        "t",
        kind_of_run="train-lang",
        language="mlt_Latn",
        task="mlm",
        variant="lang:seq_bn",
        metrics={"pppl": 40.0, "pppl_before": 9e5},
        settings={"mlm_head": "fresh"},
    )
    scored = record(
        tmp_path,
        "s",
        kind_of_run="eval-pppl",
        language="mlt_Latn",
        task="mlm",
        variant="lang:seq_bn",
        metrics={"pppl": 41.0},
        created=T0 + timedelta(minutes=5),
    )
    text = build_report(read_runs([trained, scored])).markdown()
    assert table_rows(text, "mlm")["mlt_Latn"] == ["900000.00", "40.50 ± 0.71 (n=2)"]
    assert "differ beyond the seed (run)" in text  # a training and an evaluation run are not two seeds
    best = build_report(read_runs([trained, scored]), best=True).markdown()
    assert table_rows(best, "mlm")["mlt_Latn"] == ["900000.00", "40.00 (best of 2)"]  # lower is better
    assert "## mlm: PPPL (held-out text), lower is better" in text
    assert "mlt_Latn: the base has no MLM head of its own" in text


def test_non_finite_and_missing_baseline_are_explicit(tmp_path: Path) -> None:
    run = record(tmp_path, "x", language="ibo_Latn", task="ner", variant="task-only", metrics={"f1": float("nan")})
    text = build_report(read_runs([run])).markdown()
    assert table_rows(text, "ner")["ibo_Latn"] == ["n/a", "n/a (f1=nan)"]
    assert "no run records a majority figure" in text


def test_write_report_writes_markdown_and_png(runs: list[Path], tmp_path: Path) -> None:
    paths = write_report([tmp_path], tmp_path / "out" / "results.md")  # a parent directory is searched
    assert paths.markdown == tmp_path / "out" / "results.md"
    assert paths.plot == tmp_path / "out" / "results.png"
    assert paths.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths.plot.stat().st_size > 5000
    text = paths.markdown.read_text(encoding="utf-8")
    assert "![results per language and variant](results.png)" in text
    assert "7 run(s)" in text
    assert table_rows(text, "topic")["hau_Latn"] == ["0.041", "0.750", "0.712"]
    in_dir = write_report(runs[:2], tmp_path / "dir-out")
    assert in_dir.markdown.name == "report.md" and in_dir.plot is not None and in_dir.plot.is_file()


def test_bad_inputs_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(LangadaptError, match="does not exist"):
        read_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LangadaptError, match=r"no run\.json"):
        read_runs([tmp_path / "empty"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text('{"task": "topic"}', encoding="utf-8")
    with pytest.raises(LangadaptError, match="not a readable run record"):
        read_runs([tmp_path / "bad"])


def ner(tmp: Path, name: str, language: str, variant: str, f1: float | None, seed: int | None) -> Path:
    """One NER run with its seed (none when None) and its F1 (none when None)."""
    return record(
        tmp,
        name,
        language=language,
        task="ner",
        variant=variant,
        metrics={} if f1 is None else {"f1": f1},
        majority={"f1": 0.0},
        settings={"epochs": 3, "out": f"runs/{name}"} | ({} if seed is None else {"seed": seed}),
    )


@pytest.fixture
def seeded(tmp_path: Path) -> list[Path]:
    """NER with and without a language adapter: yor_Latn 3 + 3 runs (one of them unseeded), hau_Latn 1 + 1."""
    only, lang = "task-only:seq_bn", "lang+task:seq_bn"
    return [
        ner(tmp_path, "yt-s1", "yor_Latn", only, 0.60, 1),
        ner(tmp_path, "yt-s2", "yor_Latn", only, 0.62, 2),
        ner(tmp_path, "yt-s3", "yor_Latn", only, 0.70, 3),
        ner(tmp_path, "yl-s1", "yor_Latn", lang, 0.65, 1),
        ner(tmp_path, "yl-s2", "yor_Latn", lang, 0.66, 2),
        ner(tmp_path, "yl-x", "yor_Latn", lang, 0.99, None),
        ner(tmp_path, "ht-s1", "hau_Latn", only, 0.50, 1),
        ner(tmp_path, "hl-s1", "hau_Latn", lang, 0.511, 1),
    ]


def test_cells_are_mean_and_sample_sd_over_seeds_and_a_single_run_is_its_figure(tmp_path: Path) -> None:
    two = [ner(tmp_path, f"s{seed}", "yor_Latn", "task-only:seq_bn", f1, seed) for seed, f1 in [(1, 0.60), (2, 0.62)]]
    one = ner(tmp_path, "h", "hau_Latn", "task-only:seq_bn", 0.5123, 1)
    gap = ner(tmp_path, "s3", "yor_Latn", "task-only:seq_bn", None, 3)
    report = build_report(read_runs([*two, one]))
    cell = report.tables[0].cell("yor_Latn", "task-only:seq_bn")
    assert (cell.value, cell.sd, cell.n) == (pytest.approx(0.61), pytest.approx(0.0141421356), 2)
    rows = table_rows(report.markdown(), "ner")
    assert rows["yor_Latn"] == ["0.000", "0.610 ± 0.014 (n=2)"]
    assert rows["hau_Latn"] == ["0.000", "0.512"]  # one run: its own figure, nothing added
    assert rows["**mean**"] == ["0.000", "0.561"]
    with_gap = table_rows(build_report(read_runs([*two, gap])).markdown(), "ner")
    assert with_gap["yor_Latn"] == ["0.000", "0.610 ± 0.014 (n=2 of 3)"]  # the run without F1 is counted, not used
    listed = [line for line in build_report(read_runs(two)).markdown().splitlines() if line.startswith("| yor_Latn |")]
    assert listed[1:] == [
        "| yor_Latn | task-only:seq_bn | s1 | 1 | — | 0.600 |  |",
        "| yor_Latn | task-only:seq_bn | s2 | 2 | — | 0.620 | **best** |",
    ]


def test_paired_difference_pairs_by_seed_and_leaves_unpaired_runs_out(seeded: list[Path]) -> None:
    text = build_report(read_runs(seeded)).markdown()
    rows = table_rows(text, "ner")
    assert rows["language"] == ["majority", "lang+task:seq_bn", "task-only:seq_bn", "Δ lang adapter"]
    # seeds 1 and 2: 0.65 − 0.60 and 0.66 − 0.62; seed 3 and the unseeded 0.99 have no partner
    assert rows["yor_Latn"] == ["0.000", "0.767 ± 0.193 (n=3)", "0.640 ± 0.053 (n=3)", "+0.045 ± 0.007 (n=2)"]
    assert rows["hau_Latn"] == ["0.000", "0.511", "0.500", "+0.011 (n=1)"]
    assert rows["**mean**"][-1] == "+0.028"
    assert (
        "yor_Latn: Δ lang adapter leaves out runs with no partner of the same seed: "
        "task-only:seq_bn yt-s3 (seed 3), lang+task:seq_bn yl-x (no seed)" in text
    )
    assert "hau_Latn: Δ lang adapter leaves out" not in text
    assert "Δ lang adapter: lang+task:seq_bn − task-only:seq_bn for each seed both have" in text
    best = table_rows(build_report(read_runs(seeded), best=True).markdown(), "ner")
    assert best["yor_Latn"] == ["0.000", "0.990 (best of 3)", "0.700 (best of 3)", "+0.045 ± 0.007 (n=2)"]


def test_no_paired_difference_beside_other_variants_or_without_shared_seeds(seeded: list[Path], tmp_path: Path) -> None:
    full = ner(tmp_path, "full", "yor_Latn", "full-ft", 0.7, 1)
    rows = table_rows(build_report(read_runs([*seeded, full])).markdown(), "ner")
    assert rows["language"] == ["majority", "full-ft", "lang+task:seq_bn", "task-only:seq_bn"]
    apart = [
        ner(tmp_path, "u1", "yor_Latn", "task-only", 0.6, 1),
        ner(tmp_path, "u2", "yor_Latn", "lang+task:lora", 0.7, 2),
    ]
    text = build_report(read_runs(apart)).markdown()
    assert table_rows(text, "ner")["language"] == ["majority", "lang+task:lora", "task-only"]
    assert "no Δ lang adapter column: no seed has a figure under both task-only and lang+task:lora" in text


def test_reference_column_from_json(seeded: list[Path], tmp_path: Path) -> None:
    paper = tmp_path / "paper.json"
    figures = {"ner": {"yor_Latn": 0.85, "hau_Latn": None, "ibo_Latn": 0.8}, "topic": {"yor_Latn": 0.7}}
    paper.write_text(json.dumps({"name": "paper (XLM-R base)", **figures}), encoding="utf-8")
    text = build_report(read_runs(seeded), reference=read_reference(paper)).markdown()
    rows = table_rows(text, "ner")
    assert rows["language"] == [
        "majority",
        "lang+task:seq_bn",
        "task-only:seq_bn",
        "paper (XLM-R base)",
        "Δ lang adapter",
    ]
    assert rows["yor_Latn"][3] == "0.850"
    assert rows["hau_Latn"][3] == "—"
    assert rows["**mean**"][3] == "0.850 (1/2)"
    assert "paper (XLM-R base) has figures for languages with no run here: ibo_Latn" in text
    paper.write_text(json.dumps({"ner": {"yor_Latn": 0.85}}), encoding="utf-8")
    assert read_reference(paper).name == "reference"
    paper.write_text(json.dumps({"ner": {"yor_Latn": 85.0}}), encoding="utf-8")
    with pytest.raises(LangadaptError, match=r"above 1\.0 for entity F1") as err:
        read_reference(paper)
    assert "as a fraction (0.85, not 85.0)" in str(err.value.hint)
    paper.write_text(json.dumps({"pos": {"yor_Latn": 0.9}}), encoding="utf-8")
    with pytest.raises(LangadaptError, match="unknown task 'pos'"):
        read_reference(paper)


def test_plot_has_bars_at_the_mean_with_sd_error_bars(
    seeded: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.axes import Axes

    drawn: dict[str, dict[str, Any]] = {}
    bar = Axes.bar

    def spy(self: Axes, x: Any, height: Any, *args: Any, **kwargs: Any) -> Any:
        drawn[kwargs["label"]] = {"height": list(height), "yerr": kwargs.get("yerr")}
        return bar(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", spy)
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"name": "paper", "ner": {"yor_Latn": 0.85}}), encoding="utf-8")
    paths = write_report(seeded, tmp_path / "out" / "report.md", reference=paper)
    assert paths.plot is not None and paths.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only = drawn["task-only:seq_bn"]  # languages in order: hau_Latn, yor_Latn
    assert only["height"] == pytest.approx([0.5, 0.64])
    assert only["yerr"] == pytest.approx([math.nan, 0.052915026], nan_ok=True)  # one run: no error bar
    assert drawn["paper"] == {"height": [0.85], "yerr": None}
    assert "Δ lang adapter" not in drawn
    drawn.clear()
    write_report(seeded, tmp_path / "best" / "report.md", best=True)
    assert drawn["task-only:seq_bn"] == {"height": [0.5, 0.7], "yerr": None}


def test_cli_report_flags(seeded: list[Path], tmp_path: Path) -> None:
    from langadapt.cli import app

    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"name": "paper", "ner": {"yor_Latn": 0.85}}), encoding="utf-8")
    out = tmp_path / "cli" / "report.md"
    args = ["report", *map(str, seeded), "-o", str(out), "--reference", str(paper), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["markdown"] == str(out)
    assert table_rows(out.read_text(encoding="utf-8"), "ner")["yor_Latn"][1:4] == [
        "0.767 ± 0.193 (n=3)",
        "0.640 ± 0.053 (n=3)",
        "0.850",
    ]
    assert CliRunner().invoke(app, [*args, "--best"]).exit_code == 0
    assert table_rows(out.read_text(encoding="utf-8"), "ner")["yor_Latn"][1] == "0.990 (best of 3)"
    paper.write_text("[1]", encoding="utf-8")
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 2 and "not a JSON object" in failed.output
