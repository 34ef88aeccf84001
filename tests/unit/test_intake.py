"""What a run says it did to each split: counts, the first skipped and repaired rows, and the cut-text warning."""

from __future__ import annotations

from pathlib import Path

from langadapt.training.intake import cut_warnings, intake_lines, split_intake
from langadapt.training.readers import Dataset


def dataset(n: int, skipped: int = 0, repaired: int = 0) -> Dataset[str]:
    """A read file of `n` examples with some skipped and repaired rows."""
    return Dataset(
        examples=["x"] * n,
        skipped=[(10 + i, f"bad row {i}") for i in range(skipped)],
        repaired=[(20 + i, f"repair {i}") for i in range(repaired)],
        paths=[Path("data/train.tsv")],
        layout="tsv",
        quoting="csv",
    )


def test_more_than_a_tenth_cut_is_a_warning() -> None:
    at_limit = {"train": split_intake(dataset(100), 100, 64, task="topic", cut=10)}
    assert cut_warnings(at_limit) == []
    over = {"train": split_intake(dataset(100), 100, 64, task="topic", cut=11)}
    assert cut_warnings(over) == [
        "11 of 100 train texts (11%) are longer than 64 tokens and were cut; "
        "raise --max-length to keep more of each text"
    ]
    assert intake_lines(over)[-1].startswith("warning: 11 of 100 train texts")


def test_lines_name_each_row_by_file_and_line_and_count_the_rest() -> None:
    record = split_intake(dataset(50, skipped=5, repaired=1), 40, 128, task="ner", windowed=2)
    assert record["skipped"]["count"] == 5 and record["repaired"]["count"] == 1
    lines = intake_lines({"train": record})
    assert lines[0] == (
        "train  data/train.tsv (tsv, csv quoting): 40 of 50 examples used; 5 rows skipped; 1 IOB tags repaired; "
        "2 sentences read in windows of 128 tokens"
    )
    assert lines[1:4] == [f"  skipped data/train.tsv:{10 + i}: bad row {i}" for i in range(3)]
    assert lines[4] == "  … and 2 more skipped (run.json lists the first 100)"
    assert lines[5] == "  repaired data/train.tsv:20: repair 0"
