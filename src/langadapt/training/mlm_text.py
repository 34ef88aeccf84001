"""MLM sentences from any source a language adapter trains on: plain text, a table's text column, ConceptNet edges.

Above both `readers` (text and tables) and `kg` (ConceptNet edges and their verbalisation), which it combines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from langadapt.training.kg import read_conceptnet_edges, verbalise
from langadapt.training.readers import Dataset, MlmFormat, OnBadRow, _mlm_format, _text_column, read_text_lines

__all__ = ["read_mlm_text"]


def read_mlm_text(
    paths: str | Path | Sequence[str | Path],
    *,
    fmt: MlmFormat = "auto",
    text_column: str | None = None,
    on_bad_row: OnBadRow = "error",
    language: str | None = None,
) -> Dataset[str]:
    """MLM sentences from text files, tables (a `text` column) or ConceptNet edges (verbalised), in order.

    With several files, each `skipped` reason starts with its file. `language` filters ConceptNet edges.
    """
    path_list = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    merged: Dataset[str] = Dataset(examples=[], paths=path_list)
    dropped: Counter[str] = Counter()
    for path in path_list:
        kind = _mlm_format(path) if fmt == "auto" else fmt
        if kind == "text":
            part = read_text_lines(path, on_bad_row=on_bad_row)
        elif kind == "conceptnet":
            edges = read_conceptnet_edges(path, language, on_bad_row=on_bad_row)
            verbalised = verbalise(edges.examples)
            part = Dataset(examples=verbalised.sentences, skipped=edges.skipped, dropped=edges.dropped)
            dropped.update(verbalised.dropped)
        elif kind in ("csv", "tsv", "jsonl", "parquet"):
            part = _text_column(path, text_column or "text", kind, on_bad_row)
        else:
            raise ValueError(f"unknown MLM text format {kind!r}; use auto, text, conceptnet, csv, tsv, jsonl, parquet")
        merged.examples.extend(part.examples)
        prefix = f"{path}: " if len(path_list) > 1 else ""
        merged.skipped.extend((line, prefix + reason) for line, reason in part.skipped)
        dropped.update(part.dropped)
    merged.dropped = dict(dropped)
    return merged
