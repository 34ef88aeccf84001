"""Data readers: labelled text, tagged sentences and MLM text, each bad row reported with its file, line and reason.

Every reader takes `on_bad_row`: `"error"` (the default) raises `DataFormatError` at the first malformed row;
`"skip"` leaves the row out and records `(line, reason)` in `Dataset.skipped`, so nothing is dropped silently.
Rows left out on purpose (blank lines, `-DOCSTART-`, filtered knowledge-graph edges) are counted in
`Dataset.dropped`. Files are decoded line by line with strict UTF-8, so an invalid byte is reported at its line.

CSV and TSV tables are read with standard CSV quoting by default (`quoting="csv"`, as Python's csv and pandas read
them: a quoted field may hold the delimiter, a line break or `""` for one `"`); `quoting="none"` reads every `"` as
text. The SIB-200 and AfriSenti layouts are always read unquoted and NusaX quoted, as those data sets are written.
A problem with the whole file (no header, a missing column) is an error whatever the policy, with a hint that names
the options that fix it.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar, get_args

from langadapt.errors import DataFormatError

__all__ = [
    "CLASSIFICATION_FORMATS",
    "NER_FORMATS",
    "QUOTINGS",
    "ClassificationFormat",
    "Dataset",
    "MlmFormat",
    "NerFormat",
    "OnBadRow",
    "Quoting",
    "RowIssues",
    "TableFormat",
    "TextExample",
    "TokenExample",
    "read_afrisenti",
    "read_classification",
    "read_conll",
    "read_masakhaner",
    "read_ner",
    "read_nusax",
    "read_sib200",
    "read_table",
    "read_text_lines",
    "read_verbalised_triples",
    "table_rows",
]

OnBadRow = Literal["error", "skip"]
TableFormat = Literal["csv", "tsv", "jsonl", "parquet"]
ClassificationFormat = Literal["auto", "sib200", "nusax", "afrisenti", "csv", "tsv", "jsonl", "parquet"]
NerFormat = Literal["auto", "masakhaner", "conll"]
MlmFormat = Literal["auto", "text", "conceptnet", "csv", "tsv", "jsonl", "parquet"]
Quoting = Literal["csv", "none"]

CLASSIFICATION_FORMATS: tuple[str, ...] = get_args(ClassificationFormat)
NER_FORMATS: tuple[str, ...] = get_args(NerFormat)
QUOTINGS: tuple[str, ...] = get_args(Quoting)

COLUMN_FLAGS_HINT = "choose the file's columns with --text-column COLUMN and --label-column COLUMN"
REPAIR_HINT = "pass --repair-iob to read a stray I-X as B-X (each repair listed), fix the tag, or --on-bad-row skip"
QUOTING_HINT = (
    "fix the quoting of that row, pass --quoting none if every quote in the file is text, or --on-bad-row skip"
)

T = TypeVar("T")

SIB200_HEADER = ("index_id", "category", "text")
# The quoting each known layout is written with (a generic CSV/TSV table takes the reader's `quoting`).
_LAYOUTS: dict[str, Quoting] = {"sib200": "none", "afrisenti": "none", "nusax": "csv"}
NUSAX_HEADER = ("id", "text", "label")
AFRISENTI_HEADERS = (("tweet", "label"), ("ID", "tweet", "label"))

# MasakhaNER tags are checked strictly; generic CoNLL files may use any non-blank entity type.
MASAKHANER_TAG = re.compile(r"O|[BI]-[A-Z]+")
CONLL_TAG = re.compile(r"O|[BI]-\S+")

_SUFFIX_FORMATS: dict[str, TableFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(frozen=True, slots=True)
class TextExample:
    """One labelled text (topic or sentiment); `line` is the line its row starts on."""

    text: str
    label: str
    line: int


@dataclass(frozen=True, slots=True)
class TokenExample:
    """One tagged sentence (NER); `line` is the line of its first token."""

    tokens: list[str]
    tags: list[str]
    line: int


@dataclass
class Dataset(Generic[T]):
    """Examples read from files, with their label set and every row skipped, dropped or repaired on the way."""

    examples: list[T]
    labels: list[str] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    repaired: list[tuple[int, str]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    layout: str | None = None  # the reader format used: sib200, tsv, masakhaner, ...
    quoting: str | None = None  # csv or none for CSV/TSV tables, None for other files

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[T]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> T:
        return self.examples[index]

    def describe(self) -> str:
        """One line for logs: how many examples and labels, and how many rows were skipped or dropped."""
        parts = [f"{len(self.examples)} examples"]
        if self.labels:
            parts.append(f"{len(self.labels)} labels")
        parts.append(f"{len(self.skipped)} skipped (bad rows)")
        parts += [f"{n} dropped ({reason})" for reason, n in self.dropped.items()]
        if self.repaired:
            parts.append(f"{len(self.repaired)} repaired")
        return ", ".join(parts)


class RowIssues:
    """The bad-row policy for one file: raise at the first bad row, or record it and carry on."""

    def __init__(self, path: Path, on_bad_row: OnBadRow) -> None:
        if on_bad_row not in ("error", "skip"):
            raise ValueError(f"on_bad_row must be 'error' or 'skip', not {on_bad_row!r}")
        self.path = path
        self.on_bad_row = on_bad_row
        self.skipped: list[tuple[int, str]] = []
        self.dropped: Counter[str] = Counter()
        self.repaired: list[tuple[int, str]] = []

    def bad(self, line: int, reason: str, hint: str | None = None) -> None:
        """A malformed row: raise under `error` (with `hint`, else the bad-row hint), record under `skip`."""
        if self.on_bad_row == "error":
            raise DataFormatError(str(self.path), line, reason, hint)
        self.skipped.append((line, reason))

    def fatal(self, line: int, reason: str, hint: str) -> DataFormatError:
        """A problem with the whole file (header, missing column): always an error, whatever the policy.

        Skipping rows cannot fix it, so `hint` must say what does.
        """
        return DataFormatError(str(self.path), line, reason, hint)

    def dataset(
        self, examples: list[T], labels: Sequence[str] = (), layout: str | None = None, quoting: str | None = None
    ) -> Dataset[T]:
        """The examples read, with what this file's policy recorded and how the file was read."""
        return Dataset(
            examples=examples,
            labels=list(labels),
            skipped=self.skipped,
            dropped=dict(self.dropped),
            repaired=self.repaired,
            paths=[self.path],
            layout=layout,
            quoting=quoting,
        )


class _LabelSet:
    """Labels in first-seen order, or a fixed label list that every row must use; raw labels renamed by `names`."""

    def __init__(
        self, fixed: Sequence[str] | None, origin: str = "the given labels", names: Mapping[str, str] | None = None
    ) -> None:
        self.names = dict(names) if names else None
        self.fixed = [self.named(label) for label in fixed] if fixed is not None else None
        self.origin = origin
        self.seen: dict[str, None] = {}

    def named(self, label: str) -> str:
        """The label's name when label names were given (the raw label otherwise)."""
        return self.names.get(label, label) if self.names else label

    def problem(self, label: str) -> str | None:
        """Why the raw `label` is not acceptable, or None."""
        if not label:
            return "empty label"
        if self.names is not None and label not in self.names:
            return f"label {label!r} has no name in the label names (names are given for {', '.join(self.names)})"
        if self.fixed is not None and self.named(label) not in self.fixed:
            return f"label {self.named(label)!r} is not one of {self.fixed} ({self.origin})"
        return None

    def add(self, label: str) -> None:
        self.seen.setdefault(label, None)

    @property
    def labels(self) -> list[str]:
        return list(self.fixed) if self.fixed is not None else list(self.seen)


# ---------------------------------------------------------------------------------------------- lines, tables


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """A line whose bytes are not valid UTF-8."""

    reason: str


def _lines(path: Path) -> Iterator[tuple[int, str | _Undecodable]]:
    """Each physical line (ending kept), decoded as strict UTF-8 with a leading BOM removed."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                snippet = raw[exc.start : exc.start + 4]
                yield number, _Undecodable(f"invalid UTF-8 at byte {exc.start + 1} of the line ({snippet!r})")
                continue
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text


class _LineFeed:
    """Feeds decoded lines to `csv.reader`, remembering the line each record starts on."""

    def __init__(self, path: Path, issues: RowIssues) -> None:
        self._lines = _lines(path)
        self._issues = issues
        self.start: int | None = None
        self.last = 0

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        while True:
            number, text = next(self._lines)
            self.last = number
            if isinstance(text, _Undecodable):
                self._issues.bad(number, text.reason)
                continue
            if self.start is None:
                self.start = number
            return text


def _records(
    path: Path, issues: RowIssues, fmt: Literal["csv", "tsv"], quoting: Quoting
) -> Iterator[tuple[int, list[str]]]:
    """CSV or TSV records with the line each starts on: standard CSV quoting, or none (quotes stay verbatim)."""
    feed = _LineFeed(path, issues)
    delimiter = "," if fmt == "csv" else "\t"
    if quoting == "csv":
        reader = csv.reader(feed, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, strict=True)
    elif quoting == "none":
        reader = csv.reader(feed, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        raise ValueError(f"unknown quoting {quoting!r}; use one of {', '.join(QUOTINGS)}")
    while True:
        feed.start = None
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            issues.bad(feed.start or feed.last, f"unreadable {fmt.upper()} row: {exc}", QUOTING_HINT)
            continue
        yield feed.start or feed.last, row


def _missing_column(
    issues: RowIssues, line: int, wanted: Sequence[str], have: Iterable[str], hint: str | None
) -> DataFormatError:
    """The error for columns that are not in the file, naming the ones that are (and, in `hint`, how to choose)."""
    missing = ", ".join(repr(c) for c in wanted)
    present = ", ".join(repr(c) for c in have) or "none"
    default = f"give the file a header row with the column{'s' if len(wanted) > 1 else ''} {missing}"
    return issues.fatal(line, f"no column {missing}; the columns are: {present}", hint or default)


def _delimited_rows(
    path: Path,
    fmt: Literal["csv", "tsv"],
    issues: RowIssues,
    columns: Sequence[str],
    headers: Sequence[Sequence[str]] | None,
    quoting: Quoting,
    column_hint: str | None,
    layout: str | None,
) -> Iterator[tuple[int, list[object]]]:
    """Rows of a CSV/TSV file with a header; every row must have exactly the header's field count."""
    records = _records(path, issues, fmt, quoting)
    first = next(records, None)
    if first is None:
        raise issues.fatal(1, "empty file: expected a header row", "give the file a header row naming its columns")
    line, header = first
    if headers is not None and tuple(header) not in {tuple(h) for h in headers}:
        expected = " or ".join(repr("\t".join(h) if fmt == "tsv" else ",".join(h)) for h in headers)
        hint = (
            f"this is not a {layout or 'known'} file: read it as a plain table, --format {fmt}, and {COLUMN_FLAGS_HINT}"
        )
        raise issues.fatal(line, f"header is {header!r}; expected {expected}", hint)
    missing = [c for c in columns if c not in header]
    if missing:
        raise _missing_column(issues, line, missing, header, column_hint)
    index = [header.index(c) for c in columns]
    for line, row in records:
        if not row:
            issues.dropped["blank line"] += 1
            continue
        if len(row) != len(header):
            issues.bad(line, f"{len(row)} fields, expected {len(header)} ({', '.join(header)})")
            continue
        yield line, [row[i] for i in index]


def _jsonl_rows(
    path: Path, issues: RowIssues, columns: Sequence[str], column_hint: str | None
) -> Iterator[tuple[int, list[object]]]:
    """Rows of a JSON Lines file, one object a line; the first object must have every column."""
    checked = False
    for line, text in _lines(path):
        if isinstance(text, _Undecodable):
            issues.bad(line, text.reason)
            continue
        if not text.strip():
            issues.dropped["blank line"] += 1
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            issues.bad(line, f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(obj, dict):
            issues.bad(line, f"expected a JSON object, found {type(obj).__name__}")
            continue
        missing = [c for c in columns if c not in obj]
        if missing and not checked:
            raise _missing_column(issues, line, missing, obj, column_hint)
        checked = True
        if missing:
            issues.bad(line, f"no key {', '.join(repr(c) for c in missing)} (keys: {', '.join(obj)})")
            continue
        yield line, [obj[c] for c in columns]


def _parquet_rows(
    path: Path, issues: RowIssues, columns: Sequence[str], column_hint: str | None
) -> Iterator[tuple[int, list[object]]]:
    """Rows of a Parquet file; a row's `line` is its 1-based row number."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise issues.fatal(
            1, f"not a readable Parquet file: {exc}", "check the file, or pass the --format it is in"
        ) from exc
    missing = [c for c in columns if c not in names]
    if missing:
        raise _missing_column(issues, 1, missing, names, column_hint)
    table = pq.read_table(path, columns=list(columns))
    values = [table.column(c).to_pylist() for c in columns]
    for i, row in enumerate(zip(*values, strict=True), start=1):
        yield i, list(row)


def table_rows(
    path: str | Path,
    fmt: TableFormat,
    issues: RowIssues,
    columns: Sequence[str],
    *,
    headers: Sequence[Sequence[str]] | None = None,
    quoting: Quoting = "csv",
    column_hint: str | None = None,
    layout: str | None = None,
) -> Iterator[tuple[int, list[object]]]:
    """The values of `columns` in each row of a CSV, TSV, JSONL or Parquet table, with the line the row starts on.

    A missing column is a `DataFormatError` at the header line naming the columns that exist, with `column_hint`
    saying how to choose others; `headers`, when given, lists the exact CSV/TSV headers of the `layout` accepted.
    `quoting` applies to CSV and TSV.
    """
    path = Path(path)
    if fmt in ("csv", "tsv"):
        return _delimited_rows(path, fmt, issues, columns, headers, quoting, column_hint, layout)
    if fmt == "jsonl":
        return _jsonl_rows(path, issues, columns, column_hint)
    if fmt == "parquet":
        return _parquet_rows(path, issues, columns, column_hint)
    raise ValueError(f"unknown table format {fmt!r}; use one of csv, tsv, jsonl, parquet")


def _table_format(path: Path) -> TableFormat:
    """The table format a file's extension names."""
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(_SUFFIX_FORMATS))
        raise ValueError(f"cannot tell the format of {path} from its extension (known: {known}); pass fmt=")
    return fmt


def _first_line(path: Path) -> str | None:
    """The first line of a file without its line ending, or None when it is empty or not UTF-8."""
    for _, text in _lines(path):
        return None if isinstance(text, _Undecodable) else text.rstrip("\r\n")
    return None


# ---------------------------------------------------------------------------------------------- classification


def _text_examples(
    rows: Iterator[tuple[int, list[object]]],
    issues: RowIssues,
    labels: _LabelSet,
    layout: str,
    quoting: Quoting | None,
) -> Dataset[TextExample]:
    """`TextExample`s from (text, label) rows: text non-empty and kept verbatim, label stripped and checked."""
    examples: list[TextExample] = []
    for line, (text, label) in rows:
        if text is None or label is None:
            issues.bad(line, f"null {'text' if text is None else 'label'}")
            continue
        if not isinstance(text, str):
            issues.bad(line, f"text is a {type(text).__name__}, not a string")
            continue
        if isinstance(label, bool) or not isinstance(label, str | int):
            issues.bad(line, f"label is a {type(label).__name__}, not a string or integer")
            continue
        if not text.strip():
            issues.bad(line, "empty text")
            continue
        label = str(label).strip()
        problem = labels.problem(label)
        if problem:
            issues.bad(line, problem)
            continue
        label = labels.named(label)
        labels.add(label)
        examples.append(TextExample(text=text, label=label, line=line))
    return issues.dataset(examples, labels.labels, layout, quoting)


def read_table(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    fmt: TableFormat | Literal["auto"] = "auto",
    *,
    on_bad_row: OnBadRow = "error",
    labels: Sequence[str] | None = None,
    quoting: Quoting = "csv",
    label_names: Mapping[str, str] | None = None,
) -> Dataset[TextExample]:
    """Labelled text from a generic CSV, TSV, JSONL or Parquet table with named columns.

    `label_names` renames raw labels (`{"-1": "negative"}`); a raw label without a name is then a bad row.
    """
    path = Path(path)
    issues = RowIssues(path, on_bad_row)
    table_fmt = _table_format(path) if fmt == "auto" else fmt
    hint = COLUMN_FLAGS_HINT
    rows = table_rows(path, table_fmt, issues, [text_column, label_column], quoting=quoting, column_hint=hint)
    used = quoting if table_fmt in ("csv", "tsv") else None
    return _text_examples(rows, issues, _LabelSet(labels, names=label_names), table_fmt, used)


def _known_layout(
    path: Path,
    layout: str,
    headers: Sequence[Sequence[str]],
    columns: Sequence[str],
    on_bad_row: OnBadRow,
    label_set: _LabelSet,
) -> Dataset[TextExample]:
    """Labelled text from a data set's own CSV/TSV layout, read with the quoting it is written with."""
    issues = RowIssues(path, on_bad_row)
    fmt: Literal["csv", "tsv"] = "csv" if layout == "nusax" else "tsv"
    quoting = _LAYOUTS[layout]
    rows = table_rows(path, fmt, issues, columns, headers=headers, quoting=quoting, layout=layout)
    return _text_examples(rows, issues, label_set, layout, quoting)


def read_sib200(
    path: str | Path,
    *,
    on_bad_row: OnBadRow = "error",
    labels: Sequence[str] | None = None,
    label_names: Mapping[str, str] | None = None,
) -> Dataset[TextExample]:
    """SIB-200 topic TSV (`index_id category text`); labels in the order of the `labels.txt` beside it."""
    path = Path(path)
    label_set = _LabelSet(labels, names=label_names)
    labels_file = path.parent / "labels.txt"
    if labels is None and labels_file.is_file():
        label_set = _LabelSet(_read_label_file(labels_file), origin=str(labels_file), names=label_names)
    return _known_layout(path, "sib200", [SIB200_HEADER], ["text", "category"], on_bad_row, label_set)


def _read_label_file(path: Path) -> list[str]:
    """A label list, one label a line, blank lines ignored."""
    issues = RowIssues(path, "error")
    labels: list[str] = []
    for line, text in _lines(path):
        if isinstance(text, _Undecodable):
            issues.bad(line, text.reason)
            continue
        label = text.strip()
        if label in labels:
            raise issues.fatal(line, f"label {label!r} listed twice", "list each label once")
        if label:
            labels.append(label)
    if not labels:
        raise issues.fatal(1, "no labels in the label file", "list the labels, one a line")
    return labels


def read_nusax(
    path: str | Path,
    *,
    on_bad_row: OnBadRow = "error",
    labels: Sequence[str] | None = None,
    label_names: Mapping[str, str] | None = None,
) -> Dataset[TextExample]:
    """NusaX-Senti CSV (`id,text,label`, standard quoting; a text may span lines)."""
    label_set = _LabelSet(labels, names=label_names)
    return _known_layout(Path(path), "nusax", [NUSAX_HEADER], ["text", "label"], on_bad_row, label_set)


def read_afrisenti(
    path: str | Path,
    *,
    on_bad_row: OnBadRow = "error",
    labels: Sequence[str] | None = None,
    label_names: Mapping[str, str] | None = None,
) -> Dataset[TextExample]:
    """AfriSenti TSV (`tweet label`, or `ID tweet label`), unquoted so tweets keep their `"` verbatim."""
    label_set = _LabelSet(labels, names=label_names)
    return _known_layout(Path(path), "afrisenti", AFRISENTI_HEADERS, ["tweet", "label"], on_bad_row, label_set)


def _classification_format(path: Path) -> ClassificationFormat:
    """A known data set by its header, else the generic table format by extension."""
    fmt = _table_format(path)
    if fmt not in ("csv", "tsv"):
        return fmt
    header = tuple((_first_line(path) or "").split("\t" if fmt == "tsv" else ","))
    if fmt == "tsv" and header == SIB200_HEADER:
        return "sib200"
    if fmt == "tsv" and header in AFRISENTI_HEADERS:
        return "afrisenti"
    if fmt == "csv" and header == NUSAX_HEADER:
        return "nusax"
    return fmt


def read_classification(
    path: str | Path,
    *,
    fmt: ClassificationFormat = "auto",
    text_column: str | None = None,
    label_column: str | None = None,
    on_bad_row: OnBadRow = "error",
    labels: Sequence[str] | None = None,
    quoting: Quoting = "csv",
    label_names: Mapping[str, str] | None = None,
) -> Dataset[TextExample]:
    """Labelled text for topic or sentiment, format told by extension and header unless `fmt` names it.

    Naming a column reads the file as a generic table; `labels` fixes the label set (pass the training
    labels, named, when reading dev or test data) and makes any other label a bad row. `quoting` applies to
    generic CSV/TSV tables; `label_names` renames raw labels.
    """
    path = Path(path)
    if fmt not in CLASSIFICATION_FORMATS:
        raise ValueError(f"unknown classification format {fmt!r}; use one of {', '.join(CLASSIFICATION_FORMATS)}")
    if fmt == "auto":
        named = text_column is not None or label_column is not None
        fmt = _table_format(path) if named else _classification_format(path)
    if fmt == "sib200":
        return read_sib200(path, on_bad_row=on_bad_row, labels=labels, label_names=label_names)
    if fmt == "nusax":
        return read_nusax(path, on_bad_row=on_bad_row, labels=labels, label_names=label_names)
    if fmt == "afrisenti":
        return read_afrisenti(path, on_bad_row=on_bad_row, labels=labels, label_names=label_names)
    return read_table(
        path,
        text_column or "text",
        label_column or "label",
        fmt,
        on_bad_row=on_bad_row,
        labels=labels,
        quoting=quoting,
        label_names=label_names,
    )


# ---------------------------------------------------------------------------------------------- NER


def _split_masakhaner(body: str) -> tuple[str, str] | str:
    """`token TAG` with exactly one space, or the reason it is not."""
    parts = body.split(" ")
    if len(parts) != 2 or not all(parts):
        return f"expected 'token TAG' separated by one space, found {body!r}"
    return parts[0], parts[1]


def _split_conll(body: str) -> tuple[str, str] | str:
    """Token in the first whitespace-separated column, tag in the last, or the reason there are not two."""
    parts = body.split()
    if len(parts) < 2:
        return f"expected a token and a tag separated by whitespace, found {body!r}"
    return parts[0], parts[-1]


def _read_tagged(
    path: Path,
    *,
    split: Callable[[str], tuple[str, str] | str],
    tag_pattern: re.Pattern[str],
    docstart: bool,
    on_bad_row: OnBadRow,
    labels: Sequence[str] | None,
    repair_iob: bool,
) -> Dataset[TokenExample]:
    """Sentences of `token tag` lines separated by blank lines; tags checked as IOB2."""
    issues = RowIssues(path, on_bad_row)
    tag_set = _LabelSet(labels, origin="the given tags")
    examples: list[TokenExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    broken = False  # the sentence being read had a bad row (skip policy): drop all of it

    def end_sentence() -> None:
        nonlocal tokens, tags, broken
        if tokens and not broken:
            for tag in tags:
                tag_set.add(tag)
            examples.append(TokenExample(tokens=tokens, tags=tags, line=start))
        tokens, tags, broken = [], [], False

    def bad(line: int, reason: str, hint: str | None = None) -> None:
        nonlocal broken
        if not broken:  # one record per dropped sentence
            issues.bad(line, reason, hint)
        broken = True

    for line, text in _lines(path):
        if isinstance(text, _Undecodable):
            if not tokens and not broken:
                start = line
            bad(line, text.reason)
            continue
        body = text.rstrip("\r\n")
        if not body.strip():
            end_sentence()
            continue
        if docstart and body.split()[0] == "-DOCSTART-":
            end_sentence()
            issues.dropped["-DOCSTART- line"] += 1
            continue
        if not tokens and not broken:
            start = line
        parsed = split(body)
        if isinstance(parsed, str):
            bad(line, parsed)
            continue
        token, tag = parsed
        if not tag_pattern.fullmatch(tag):
            bad(line, f"tag {tag!r} is not an IOB2 tag (O, B-TYPE or I-TYPE, pattern {tag_pattern.pattern})")
            continue
        previous = tags[-1] if tags else "O"
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            reason = f"tag {tag} follows {previous}: an I- tag must continue an entity of the same type (IOB2)"
            if not repair_iob:
                bad(line, reason, REPAIR_HINT)
                continue
            tag = "B-" + tag[2:]
            issues.repaired.append((line, f"{reason}; read as {tag}"))
        problem = tag_set.problem(tag)
        if problem:
            bad(line, problem)
            continue
        tokens.append(token)
        tags.append(tag)
    end_sentence()
    return issues.dataset(examples, tag_set.labels, layout="conll" if docstart else "masakhaner")


def read_masakhaner(
    path: str | Path,
    *,
    on_bad_row: OnBadRow = "error",
    labels: Sequence[str] | None = None,
    repair_iob: bool = False,
) -> Dataset[TokenExample]:
    """MasakhaNER CoNLL: `token TAG` with one space, blank line between sentences, strict IOB2 tags.

    A bad row drops its whole sentence under `skip` (one `skipped` entry per sentence). `repair_iob` reads an
    `I-X` that starts an entity as `B-X` (as conlleval and seqeval's default mode do) and lists it in `repaired`.
    """
    return _read_tagged(
        Path(path),
        split=_split_masakhaner,
        tag_pattern=MASAKHANER_TAG,
        docstart=False,
        on_bad_row=on_bad_row,
        labels=labels,
        repair_iob=repair_iob,
    )


def read_conll(
    path: str | Path,
    *,
    on_bad_row: OnBadRow = "error",
    labels: Sequence[str] | None = None,
    repair_iob: bool = False,
) -> Dataset[TokenExample]:
    """Generic CoNLL: token in the first whitespace-separated column, IOB2 tag in the last, `-DOCSTART-` ignored."""
    return _read_tagged(
        Path(path),
        split=_split_conll,
        tag_pattern=CONLL_TAG,
        docstart=True,
        on_bad_row=on_bad_row,
        labels=labels,
        repair_iob=repair_iob,
    )


def _ner_format(path: Path, peek: int = 200) -> Literal["masakhaner", "conll"]:
    """`masakhaner` when the first lines are all `token TAG` with one space, else generic `conll`."""
    seen = 0
    for _, text in _lines(path):
        if isinstance(text, _Undecodable):
            break
        body = text.rstrip("\r\n")
        if not body:
            continue
        if isinstance(_split_masakhaner(body), str):
            return "conll"
        seen += 1
        if seen >= peek:
            break
    return "masakhaner"


def read_ner(
    path: str | Path,
    *,
    fmt: NerFormat = "auto",
    on_bad_row: OnBadRow = "error",
    labels: Sequence[str] | None = None,
    repair_iob: bool = False,
) -> Dataset[TokenExample]:
    """Tagged sentences for NER: strict MasakhaNER layout when the file has it, generic CoNLL otherwise."""
    path = Path(path)
    if fmt == "auto":
        fmt = _ner_format(path)
    if fmt not in ("masakhaner", "conll"):
        raise ValueError(f"unknown NER format {fmt!r}; use auto, masakhaner or conll")
    reader = read_masakhaner if fmt == "masakhaner" else read_conll
    return reader(path, on_bad_row=on_bad_row, labels=labels, repair_iob=repair_iob)


# ---------------------------------------------------------------------------------------------- MLM text


def read_text_lines(path: str | Path, *, on_bad_row: OnBadRow = "error") -> Dataset[str]:
    """Plain text, one sentence a line, stripped; blank lines are dropped and counted."""
    path = Path(path)
    issues = RowIssues(path, on_bad_row)
    examples: list[str] = []
    for line, text in _lines(path):
        if isinstance(text, _Undecodable):
            issues.bad(line, text.reason)
            continue
        sentence = text.strip()
        if not sentence:
            issues.dropped["blank line"] += 1
            continue
        examples.append(sentence)
    return issues.dataset(examples)


def _text_column(
    path: Path, column: str, fmt: TableFormat, on_bad_row: OnBadRow, quoting: Quoting = "csv"
) -> Dataset[str]:
    """One text column of a table, stripped; empty cells are dropped and counted."""
    issues = RowIssues(path, on_bad_row)
    examples: list[str] = []
    hint = f"put the text in a column named {column!r}, or give it as plain text, one sentence a line"
    for line, (text,) in table_rows(path, fmt, issues, [column], quoting=quoting, column_hint=hint):
        if text is not None and not isinstance(text, str):
            issues.bad(line, f"text is a {type(text).__name__}, not a string")
            continue
        sentence = (text or "").strip()
        if not sentence:
            issues.dropped["empty text"] += 1
            continue
        examples.append(sentence)
    return issues.dataset(examples, layout=fmt, quoting=quoting if fmt in ("csv", "tsv") else None)


def read_verbalised_triples(path: str | Path, *, on_bad_row: OnBadRow = "error") -> Dataset[str]:
    """Knowledge-graph triples already written as sentences: a CSV with a `text` column (one sentence a row)."""
    return _text_column(Path(path), "text", "csv", on_bad_row)


def _mlm_format(path: Path) -> MlmFormat:
    """A table or ConceptNet edge TSV by extension and header; anything else is plain text."""
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        return "text"
    if fmt == "tsv":
        header = (_first_line(path) or "").split("\t")
        if {"rel", "start", "end"} <= set(header):
            return "conceptnet"
    return fmt
