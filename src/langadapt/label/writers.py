"""Writers for labelled rows: one chunk at a time into its own file, then the chunks assembled into the output.

Every row is written with its original fields (as read) plus the added columns (`formats.added_columns`); a
row that could not be labelled keeps its fields, has null labels and says why in `label_error`. JSONL writes
each row's own fields; CSV, TSV and Parquet write a fixed set of columns (the input's, then the added ones),
so JSONL fields beyond the first object's keys cannot be written there and are counted. Values that are not
text become JSON text in CSV and TSV (and in Parquet when the input was not Parquet); TSV has no quoting, so
tabs and line breaks inside values are written as `\\t`, `\\n`, `\\r`. CoNLL writes a token per line (the input's
tokens and columns when it was CoNLL, else the text split at whitespace) with the predicted IOB2 tag last, and
other tasks' labels and any error as `# name = value` lines before the sentence.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from langadapt.label.formats import ENTITIES_COLUMN, ERROR_COLUMN, NER, Labels, Row, added_columns

COPY_BUFFER = 1 << 20
UNLABELLED_TAG = "_"
_TOKEN = re.compile(r"\S+")
_TSV_ESCAPES = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def cell(value: Any) -> str:
    """A value as CSV/TSV text: strings as they are, null empty, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _json(value)


class Writer:
    """Writes rows of one job in one format; the same columns for every chunk."""

    def __init__(
        self,
        fmt: str,
        input_columns: Sequence[str],
        tasks: tuple[str, ...],
        *,
        source: str,
        text_column: str,
        layout: dict[str, Any] | None = None,
        detect: bool = False,
    ) -> None:
        self.fmt = fmt
        self.tasks = tasks
        self.source = source
        self.text_column = text_column
        self.layout = layout or {}
        self.added = added_columns(tasks, detect)
        self.replaced = [c for c in input_columns if c in self.added]
        self.columns = [c for c in input_columns if c not in self.added] + self.added
        self._schema: Any = None

    @property
    def suffix(self) -> str:
        return {"jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv", "parquet": ".parquet", "conll": ".conll"}[self.fmt]

    def record(self, row: Row, labels: Labels) -> dict[str, Any]:
        """The row's output fields: its own (unless replaced by added columns), then the labels."""
        fields = {k: v for k, v in (row.fields or {}).items() if k not in labels.values}
        return {**fields, **labels.values}

    # ---------------------------------------------------------------------------------------- chunks

    def write_chunk(self, rows: Sequence[Row], labels: Sequence[Labels], out: IO[bytes]) -> int:
        """Write one chunk's rows (no header) to `out`; how many field values had no column to go to."""
        if self.fmt == "parquet":
            return self._parquet_chunk(rows, labels, out)
        text = io.StringIO(newline="")
        dropped = 0
        if self.fmt == "jsonl":
            for row, lab in zip(rows, labels, strict=True):
                text.write(_json(self.record(row, lab)))
                text.write("\n")
        elif self.fmt in ("csv", "tsv"):
            writer = self._csv_writer(text)
            known = set(self.columns)
            for row, lab in zip(rows, labels, strict=True):
                record = self.record(row, lab)
                dropped += sum(1 for k in record if k not in known)
                writer.writerow([cell(record.get(c)) for c in self.columns])
        elif self.fmt == "conll":
            for row, lab in zip(rows, labels, strict=True):
                text.write(self._conll(row, lab))
        else:
            raise ValueError(f"cannot write {self.fmt!r}")
        out.write(text.getvalue().encode("utf-8"))
        return dropped

    def _csv_writer(self, text: IO[str]) -> Any:
        if self.fmt == "csv":
            return csv.writer(text, delimiter=",", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        return _TsvWriter(text)

    def header(self) -> bytes:
        """The header line of CSV and TSV output (nothing for the other formats)."""
        if self.fmt not in ("csv", "tsv"):
            return b""
        text = io.StringIO(newline="")
        self._csv_writer(text).writerow(self.columns)
        return text.getvalue().encode("utf-8")

    # ------------------------------------------------------------------------------------------ CoNLL

    def _conll(self, row: Row, labels: Labels) -> str:
        fields = row.fields or {}
        separator = self.layout.get("separator", " ")
        if self.source == "conll" and "tokens" in fields:
            tokens = [str(t) for t in fields["tokens"]]
            columns = fields.get("conll_columns") or [[] for _ in tokens]
            spans, at = [], 0
            for token in tokens:
                spans.append((at, at + len(token)))
                at += len(token) + 1
        else:
            text = row.text if row.text is not None else fields.get(self.text_column)
            found = list(_TOKEN.finditer(text)) if isinstance(text, str) else []
            tokens, spans, columns = [m.group() for m in found], [m.span() for m in found], [[] for _ in found]
        entities = labels.values.get(ENTITIES_COLUMN)
        tags = _tags(spans, entities) if entities is not None else [UNLABELLED_TAG] * len(tokens)
        lines = [f"{p}\n" for p in fields.get("conll_prefix") or []]
        if lines:
            lines.append("\n")
        for task in self.tasks:
            if task != NER and labels.values.get(f"{task}_label") is not None:
                lines.append(f"# {task} = {labels.values[f'{task}_label']} {labels.values[f'{task}_score']}\n")
        if labels.error:
            lines.append(f"# {ERROR_COLUMN} = {' '.join(labels.error.split())}\n")
        for token, extra, tag in zip(tokens, columns, tags, strict=True):
            lines.append(separator.join([token, *map(str, extra), tag]) + "\n")
        lines.append("\n")
        return "".join(lines)

    # ---------------------------------------------------------------------------------------- Parquet

    def schema(self) -> Any:
        """The Arrow schema of Parquet output: the input's types (text unless the input was Parquet), labels."""
        import pyarrow as pa

        if self._schema is not None:
            return self._schema
        source: Any = self.layout.get("schema")
        fields = []
        for name in self.columns:
            if name in self.added:
                fields.append(pa.field(name, _added_type(name)))
            elif source is not None and name in source.names:
                fields.append(source.field(name))
            else:
                fields.append(pa.field(name, pa.string()))
        self._schema = pa.schema(fields)
        return self._schema

    def _parquet_chunk(self, rows: Sequence[Row], labels: Sequence[Labels], out: IO[bytes]) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = self.schema()
        typed = self.layout.get("schema") is not None
        known = set(self.columns)
        columns: dict[str, list[Any]] = {name: [] for name in self.columns}
        dropped = 0
        for row, lab in zip(rows, labels, strict=True):
            record = self.record(row, lab)
            dropped += sum(1 for k in record if k not in known)
            for name in self.columns:
                value = record.get(name)
                if name in self.added:
                    if isinstance(value, dict):
                        value = list(value.items())  # a map column takes (key, value) pairs
                elif not typed and value is not None:
                    value = cell(value)
                columns[name].append(value)
        table = pa.Table.from_pydict(columns, schema=schema)
        pq.write_table(table, out)
        return dropped

    # --------------------------------------------------------------------------------------- assembly

    def assemble(self, chunks: Sequence[Path], out: IO[bytes]) -> None:
        """Concatenate the committed chunks, in order, into `out` (Parquet: one row group per chunk)."""
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(out, self.schema()) as writer:
                for path in chunks:
                    writer.write_table(pq.read_table(path, schema=self.schema()))
            return
        out.write(self.header())
        for path in chunks:
            with path.open("rb") as f:
                while block := f.read(COPY_BUFFER):
                    out.write(block)


class _TsvWriter:
    """TSV rows as the TSV reader reads them (no quoting): tabs and line breaks inside values escaped."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def writerow(self, values: Sequence[str]) -> None:
        self.out.write("\t".join(v.translate(_TSV_ESCAPES) for v in values) + "\n")


def _added_type(name: str) -> Any:
    import pyarrow as pa

    if name == ENTITIES_COLUMN:
        entity = pa.struct(
            [
                ("type", pa.string()),
                ("text", pa.string()),
                ("start", pa.int64()),
                ("end", pa.int64()),
                ("score", pa.float64()),
            ]
        )
        return pa.list_(entity)
    if name.endswith("_scores"):
        return pa.map_(pa.string(), pa.float64())
    if name.endswith("_score"):
        return pa.float64()
    return pa.string()


def _tags(spans: Sequence[tuple[int, int]], entities: Sequence[dict[str, Any]]) -> list[str]:
    """IOB2 tags for tokens at character spans: a token overlapping an entity takes its type (B- on the first)."""
    tags = ["O"] * len(spans)
    for entity in entities:
        inside = [i for i, (a, b) in enumerate(spans) if a < entity["end"] and entity["start"] < b and tags[i] == "O"]
        for position, i in enumerate(inside):
            tags[i] = ("B-" if position == 0 else "I-") + str(entity["type"])
    return tags
