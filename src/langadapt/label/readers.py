"""Streaming readers for labelling: one record at a time, each with the position to resume after it.

Every format reads from a position (`Position`: rows done, byte offset, lines done), so a resumed job seeks
straight to where its last committed chunk ended instead of re-reading the file. Rows are never dropped:
a record that cannot be read (bad JSON, a wrong field count, bytes that are not UTF-8) is still a row, marked
with the reason, so the output keeps one row per input record. Blank lines in JSONL, CSV and TSV are not
records (they are counted); in plain text every line is a row, and an empty one is an empty text.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langadapt.errors import LangadaptError
from langadapt.label.formats import Position, Row

BOM = b"\xef\xbb\xbf"
RAW_CHARS = 2000  # characters of an unreadable record kept for the errors file
MALFORMED, UNDECODABLE, EMPTY_TEXT, NO_LANGUAGE = "malformed", "undecodable", "empty_text", "no_language"


def _binary_lines(path: Path, start: Position) -> Iterator[tuple[int, int, bytes]]:
    """(line number, offset after the line, raw bytes) from `start`; a leading byte-order mark is dropped."""
    offset, number = start.offset, start.line
    with path.open("rb") as f:
        f.seek(offset)
        for raw in f:
            offset += len(raw)
            number += 1
            yield number, offset, raw[len(BOM) :] if number == 1 and raw.startswith(BOM) else raw


def _decode(raw: bytes) -> tuple[str, str | None]:
    """The line as text (undecodable bytes replaced by U+FFFD) and, when there were any, why it is bad."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        snippet = raw[exc.start : exc.start + 4]
        return raw.decode("utf-8", "replace"), f"invalid UTF-8 at byte {exc.start + 1} of the line ({snippet!r})"


def _chomp(text: str) -> str:
    """The line without its line ending."""
    return text[:-1].removesuffix("\r") if text.endswith("\n") else text


def _blank(raw: bytes) -> bool:
    return not raw.strip()


class Reader:
    """One input file in one format; `open()` reads its layout, `rows(position)` streams its records."""

    fmt = ""

    def __init__(self, path: Path, text_column: str, lang_column: str | None) -> None:
        self.path = path
        self.text_column = text_column
        self.lang_column = lang_column
        self.columns: list[str] = []  # the input's columns (fields), in order, once opened
        self.layout: dict[str, Any] = {}  # format details the writers need (e.g. the CoNLL separator)
        self.blank_lines = 0

    def open(self) -> Position:
        """Check the layout (header, schema, required columns) and return the position of the first row."""
        self.columns = [self.text_column] + ([self.lang_column] if self.lang_column else [])
        return Position()

    def rows(self, start: Position) -> Iterator[tuple[Row, Position]]:
        """Each row from `start`, with the position just after it."""
        raise NotImplementedError

    def skim(self, start: Position) -> Iterator[Position]:
        """The position after each row from `start`, as cheaply as the format allows (for planning)."""
        for _, position in self.rows(start):
            yield position

    def exact_total(self) -> int | None:
        """The number of rows, where the format records it without reading (Parquet)."""
        return None

    def prepare(self, row: Row) -> Row:
        """Take the text and the language code out of a readable row's fields, or say why not."""
        if row.fields is None:
            return row
        if self.text_column not in row.fields:
            row.fail(MALFORMED, f"no {self.text_column!r} field (fields: {', '.join(map(str, row.fields)) or 'none'})")
        else:
            text = row.fields[self.text_column]
            if text is not None and not isinstance(text, str):
                row.fail(MALFORMED, f"the {self.text_column!r} value is a {type(text).__name__}, not text")
            elif text is None or not text.strip():
                row.fail(EMPTY_TEXT, "empty text")
            else:
                row.text = text
        if self.lang_column is not None:
            code = row.fields.get(self.lang_column)
            if code is None or (isinstance(code, str) and not code.strip()):
                row.fail(NO_LANGUAGE, f"no language code in {self.lang_column!r}")
            elif not isinstance(code, str):
                row.fail(NO_LANGUAGE, f"the {self.lang_column!r} value is a {type(code).__name__}, not a code")
            else:
                row.lang = code.strip()
        return row

    def _missing(self, wanted: list[str], have: list[str]) -> LangadaptError:
        names = ", ".join(repr(c) for c in wanted)
        return LangadaptError(
            f"{self.path.name} has no column {names}; its columns are: {', '.join(map(repr, have)) or 'none'}",
            "name the text with --text-column and the language with --lang-column (or give --lang)",
        )


class JsonlReader(Reader):
    """JSON Lines: one object a line."""

    fmt = "jsonl"

    def open(self) -> Position:
        """The columns are the first object's keys; it must hold the text (and language) columns."""
        for row, _ in self.rows(Position()):
            if row.fields is not None:
                self.columns = list(row.fields)
                missing = [c for c in (self.text_column, self.lang_column) if c and c not in row.fields]
                if missing:
                    raise self._missing(missing, self.columns)
                break
        self.blank_lines = 0
        return Position()

    def rows(self, start: Position) -> Iterator[tuple[Row, Position]]:
        number = start.row
        for line, end, raw in _binary_lines(self.path, start):
            if _blank(raw):
                self.blank_lines += 1
                continue
            number += 1
            text, bad = _decode(raw)
            row = Row(number, line, None)
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                row.fail(MALFORMED, f"invalid JSON: {exc.msg} at column {exc.colno}")
            else:
                if isinstance(obj, dict):
                    row.fields = obj
                else:
                    row.fail(MALFORMED, f"expected a JSON object, found {type(obj).__name__}")
            if bad is not None:
                row.kind, row.error = UNDECODABLE, bad  # the encoding is the first thing to fix
            if row.error is not None:
                row.raw = _chomp(text)[:RAW_CHARS]
            yield self.prepare(row), Position(number, end, line)

    def skim(self, start: Position) -> Iterator[Position]:
        number = start.row
        for line, end, raw in _binary_lines(self.path, start):
            if _blank(raw):
                self.blank_lines += 1
            else:
                number += 1
                yield Position(number, end, line)


class TextReader(Reader):
    """Plain text: every line is one text (an empty line is an empty text, still a row)."""

    fmt = "txt"

    def open(self) -> Position:
        if self.lang_column is not None:
            raise LangadaptError(
                "plain text has no columns, so no --lang-column", "give --lang, or use JSONL, CSV, TSV or Parquet"
            )
        self.columns = ["text"]
        return Position()

    def rows(self, start: Position) -> Iterator[tuple[Row, Position]]:
        number = start.row
        for line, end, raw in _binary_lines(self.path, start):
            number += 1
            text, bad = _decode(raw)
            row = Row(number, line, {"text": _chomp(text)})
            if bad is not None:
                row.fail(UNDECODABLE, bad)
                row.raw = _chomp(text)[:RAW_CHARS]
            elif not _chomp(text).strip():
                row.fail(EMPTY_TEXT, "empty text")
            else:
                row.text = _chomp(text)
            yield row, Position(number, end, line)

    def skim(self, start: Position) -> Iterator[Position]:
        number = start.row
        for line, end, _ in _binary_lines(self.path, start):
            number += 1
            yield Position(number, end, line)


class _Feed:
    """Decoded lines for `csv.reader`, remembering where the current record started and ended, and bad bytes."""

    def __init__(self, path: Path, start: Position) -> None:
        self._lines = _binary_lines(path, start)
        self.end, self.line = start.offset, start.line
        self.first: int | None = None
        self.bad: str | None = None
        self.parts: list[str] = []

    def reset(self) -> None:
        self.first, self.bad, self.parts = None, None, []

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        line, end, raw = next(self._lines)
        text, bad = _decode(raw)
        if bad is not None and self.bad is None:
            self.bad = f"line {line}: {bad}"
        self.line, self.end = line, end
        if self.first is None:
            self.first = line
        if sum(map(len, self.parts)) < RAW_CHARS:
            self.parts.append(text)
        return text


class DelimitedReader(Reader):
    """CSV (standard quoting, fields may span lines) or TSV (no quoting) with a header row."""

    def __init__(self, path: Path, text_column: str, lang_column: str | None, fmt: str) -> None:
        super().__init__(path, text_column, lang_column)
        self.fmt = fmt
        self.header: list[str] = []

    def _reader(self, feed: _Feed) -> Any:
        if self.fmt == "csv":
            return csv.reader(feed, delimiter=",", quoting=csv.QUOTE_MINIMAL, strict=True)
        return csv.reader(feed, delimiter="\t", quoting=csv.QUOTE_NONE)

    def _records(self, start: Position) -> Iterator[tuple[_Feed, list[str] | None, str | None]]:
        """(feed, record or None, csv error) for each record; blank lines are counted, not returned."""
        feed = _Feed(self.path, start)
        reader = self._reader(feed)
        while True:
            feed.reset()
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield feed, None, f"unreadable {self.fmt.upper()} record: {exc}"
                continue
            if not record:
                self.blank_lines += 1
                continue
            yield feed, record, None

    def open(self) -> Position:
        for feed, record, problem in self._records(Position()):
            if record is None or feed.bad is not None:
                raise LangadaptError(f"{self.path.name}: its header row is unreadable ({problem or feed.bad})", "")
            if len(set(record)) != len(record):
                duplicates = sorted({c for c in record if record.count(c) > 1})
                raise LangadaptError(
                    f"{self.path.name}: the header names {', '.join(map(repr, duplicates))} more than once",
                    "give every column its own name",
                )
            self.header = self.columns = list(record)
            missing = [c for c in (self.text_column, self.lang_column) if c and c not in record]
            if missing:
                raise self._missing(missing, self.columns)
            self.blank_lines = 0
            return Position(0, feed.end, feed.line)
        raise LangadaptError(f"{self.path.name} is empty: a {self.fmt.upper()} file needs a header row", "")

    def rows(self, start: Position) -> Iterator[tuple[Row, Position]]:
        number = start.row
        for feed, record, problem in self._records(start):
            number += 1
            row = Row(number, feed.first, None)
            if record is None:
                row.fail(MALFORMED, problem or "unreadable record")
            elif len(record) != len(self.header):
                row.fail(MALFORMED, f"{len(record)} fields, expected {len(self.header)} ({', '.join(self.header)})")
            else:
                row.fields = dict(zip(self.header, record, strict=True))
            if feed.bad is not None:
                row.kind, row.error = UNDECODABLE, feed.bad
            if row.error is not None:
                row.raw = "".join(feed.parts).rstrip("\r\n")[:RAW_CHARS]
            yield self.prepare(row), Position(number, feed.end, feed.line)


class ParquetReader(Reader):
    """Parquet, read by record batches from the row group that holds the starting row."""

    fmt = "parquet"
    BATCH = 1024

    def _file(self) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise LangadaptError(f"{self.path.name} is not a readable Parquet file: {exc}", "") from exc

    def open(self) -> Position:
        schema = self._file().schema_arrow
        self.columns = list(schema.names)
        self.layout = {"schema": schema}
        missing = [c for c in (self.text_column, self.lang_column) if c and c not in self.columns]
        if missing:
            raise self._missing(missing, self.columns)
        return Position()

    def exact_total(self) -> int | None:
        return int(self._file().metadata.num_rows)

    def rows(self, start: Position) -> Iterator[tuple[Row, Position]]:
        pf = self._file()
        metadata = pf.metadata
        first, group_start = 0, 0
        while first < metadata.num_row_groups and group_start + metadata.row_group(first).num_rows <= start.row:
            group_start += metadata.row_group(first).num_rows
            first += 1
        skip, number = start.row - group_start, start.row
        groups = list(range(first, metadata.num_row_groups))
        if not groups:
            return
        for batch in pf.iter_batches(batch_size=self.BATCH, row_groups=groups):
            records = batch.to_pylist()
            if skip:
                records, skip = records[skip:], max(0, skip - len(records))
            for record in records:
                number += 1
                yield self.prepare(Row(number, None, record)), Position(number)

    def skim(self, start: Position) -> Iterator[Position]:
        for number in range(start.row + 1, (self.exact_total() or 0) + 1):
            yield Position(number)


DOCSTART = "-DOCSTART-"


class ConllReader(Reader):
    """CoNLL: a token per line (token first, any other columns after it), sentences separated by blank lines.

    A sentence is a row; its text is its tokens joined by single spaces. `-DOCSTART-` lines are kept with the
    sentence that follows them (`conll_prefix`), other columns (e.g. gold tags) in `conll_columns`.
    """

    fmt = "conll"

    def open(self) -> Position:
        if self.lang_column is not None:
            raise LangadaptError("CoNLL has no columns to name, so no --lang-column", "give --lang")
        separator, extra, docstart = " ", False, False
        for _, _, raw in _binary_lines(self.path, Position()):
            body = _chomp(_decode(raw)[0])
            if not body.strip():
                continue
            if body.split()[0] == DOCSTART:
                docstart = True
                continue
            separator = "\t" if "\t" in body else " "
            extra = len(self._split(body, separator)) > 1
            break
        self.layout = {"separator": separator}
        optional = (["conll_columns"] if extra else []) + (["conll_prefix"] if docstart else [])
        self.columns = ["text", "tokens", *optional]
        return Position()

    @staticmethod
    def _split(body: str, separator: str) -> list[str]:
        return body.split("\t") if separator == "\t" else body.split()

    def rows(self, start: Position) -> Iterator[tuple[Row, Position]]:
        separator = self.layout.get("separator", " ")
        number = start.row
        tokens: list[str] = []
        columns: list[list[str]] = []
        prefix: list[str] = []
        first: int | None = None
        bad: str | None = None

        def sentence() -> Row:
            fields: dict[str, Any] = {"text": " ".join(tokens), "tokens": list(tokens)}
            if "conll_columns" in self.columns:
                fields["conll_columns"] = [list(c) for c in columns]
            if "conll_prefix" in self.columns:
                fields["conll_prefix"] = list(prefix)
            row = Row(number, first, fields)
            if bad is not None:
                row.fail(UNDECODABLE, bad)
                row.raw = fields["text"][:RAW_CHARS]
            else:
                row.text = fields["text"]
            return row

        before = start
        for line, end, raw in _binary_lines(self.path, start):
            text, problem = _decode(raw)
            body = _chomp(text)
            is_docstart = bool(body.strip()) and body.split()[0] == DOCSTART
            if tokens and (not body.strip() or is_docstart):
                number += 1
                # A blank line belongs to the sentence it ends; a -DOCSTART- line to the next sentence.
                yield (
                    sentence(),
                    Position(number, before.offset, before.line) if is_docstart else Position(number, end, line),
                )
                tokens, columns, prefix, first, bad = [], [], [], None, None
            if is_docstart:
                prefix.append(body)
            elif body.strip():
                parts = self._split(body, separator)
                tokens.append(parts[0])
                columns.append(parts[1:])
                first = first or line
                if problem is not None and bad is None:
                    bad = f"line {line}: {problem}"
            before = Position(number, end, line)
        if tokens:
            number += 1
            yield sentence(), Position(number, before.offset, before.line)


def reader_for(fmt: str, path: Path, text_column: str, lang_column: str | None) -> Reader:
    """The reader for a format."""
    if fmt == "jsonl":
        return JsonlReader(path, text_column, lang_column)
    if fmt in ("csv", "tsv"):
        return DelimitedReader(path, text_column, lang_column, fmt)
    if fmt == "parquet":
        return ParquetReader(path, text_column, lang_column)
    if fmt == "conll":
        return ConllReader(path, text_column, lang_column)
    if fmt == "txt":
        return TextReader(path, text_column, lang_column)
    raise LangadaptError(f"unknown input format {fmt!r}", "")
