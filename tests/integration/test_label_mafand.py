"""`langadapt label` on real text: MAFAND-MT Yorùbá with the embedded base and the packaged default adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langadapt.label.job import LabelJob
from langadapt.label.options import LabelSettings
from langadapt.models.store_view import packaged_defaults_dir

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_mafand_yoruba_is_labelled_row_for_row_with_the_default_adapters(shared_data: Path, tmp_path: Path) -> None:
    corpus = shared_data / "unlabelled" / "mafand_mt" / "yor" / "dev.txt"
    defaults = packaged_defaults_dir()
    if not corpus.is_file():
        pytest.skip(f"{corpus} is absent")
    if defaults is None or not (defaults / "adapters" / "yor_Latn-sentiment").is_dir():
        pytest.skip("this build has no packaged yor_Latn sentiment adapter")
    lines = corpus.read_text(encoding="utf-8").splitlines()[:40]
    source = tmp_path / "yor.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "yor.jsonl"
    options = LabelSettings(
        input=source, output=out, tasks=("sentiment",), lang="yo", store=str(tmp_path / "empty-store"), chunk_rows=16
    )
    summary = LabelJob(options, notify=lambda _: None).run()
    assert (summary["rows"], summary["labelled"], summary["chunks"]) == (40, 40, 3)
    assert summary["adapters"]["sentiment"]["yor_Latn"]["task_adapter"]["source"] == "default"
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == lines  # every line, in order, as it was (tone marks untouched)
    assert {r["sentiment_label"] for r in rows} <= {"negative", "neutral", "positive"}
    assert all(abs(sum(r["sentiment_scores"].values()) - 1) < 1e-4 for r in rows)
