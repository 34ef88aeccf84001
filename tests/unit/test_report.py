"""Reports: the table cells are the runs' figures, the plot is written, and gaps are said, not hidden."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from langadapt.errors import LangadaptError
from langadapt.training.report import build_report, read_runs, write_report
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
    assert table_rows(text, "sentiment")["mar_Deva"] == ["0.200", "0.671 (best of 3)"]
    assert "replaced" not in text
    runs = table_rows(text, "sentiment: every run (3)")
    assert runs["language"] == ["variant", "run", "seed", "settings that differ", "macro-F1", "best"]
    listed = [line for line in text.splitlines() if line.startswith("| mar_Deva | task-only:seq_bn |")]
    assert listed == [
        "| mar_Deva | task-only:seq_bn | mar-lr1e-3 | 42 | learning_rate=0.001 | 0.671 | **best** |",
        "| mar_Deva | task-only:seq_bn | mar-lr1e-4 | 42 | learning_rate=0.0001 | 0.375 |  |",
        "| mar_Deva | task-only:seq_bn | mar-seed7 | 7 | learning_rate=0.001 | 0.650 |  |",
    ]


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
    assert table_rows(text, "mlm")["mlt_Latn"] == ["900000.00", "40.00 (best of 2)"]  # lower is better
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
