"""Data readers on small synthetic files: happy paths, every malformed-row kind at its exact line, skip policy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from langadapt.errors import DataFormatError
from langadapt.training.mlm_text import read_mlm_text
from langadapt.training.readers import (
    Dataset,
    TextExample,
    TokenExample,
    read_afrisenti,
    read_classification,
    read_conll,
    read_masakhaner,
    read_ner,
    read_nusax,
    read_sib200,
    read_table,
    read_text_lines,
    read_verbalised_triples,
)

BAD_UTF8 = b"caf\xe9 au lait"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    """Write a file (text as UTF-8, bytes as they are) and return its path."""
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@contextmanager
def raises_at(line: int, *fragments: str) -> Iterator[None]:
    """Expect a DataFormatError at `line` whose reason contains every fragment."""
    with pytest.raises(DataFormatError) as info:
        yield
    err = info.value
    assert err.line == line, f"reported line {err.line}, expected {line}: {err}"
    for fragment in fragments:
        assert fragment in err.reason, f"{fragment!r} not in {err.reason!r}"


# ------------------------------------------------------------------------------------------------ SIB-200

SIB = 'index_id\tcategory\ttext\n1\ttravel\tA trip.\n2\tsports\tA "match".\n3\ttravel\tAnother trip.\n'


def test_sib200_reads_rows_with_lines_and_first_seen_labels(tmp_path: Path) -> None:
    ds = read_sib200(write(tmp_path, "train.tsv", SIB))
    assert ds.examples == [
        TextExample("A trip.", "travel", 2),
        TextExample('A "match".', "sports", 3),
        TextExample("Another trip.", "travel", 4),
    ]
    assert ds.labels == ["travel", "sports"]
    assert ds.skipped == []
    assert ds.paths == [tmp_path / "train.tsv"]


def test_sib200_takes_label_order_from_labels_txt(tmp_path: Path) -> None:
    write(tmp_path, "labels.txt", "science/technology\nsports\ntravel\n\n")
    ds = read_sib200(write(tmp_path, "train.tsv", SIB))
    assert ds.labels == ["science/technology", "sports", "travel"]


def test_sib200_label_outside_labels_txt_is_a_bad_row(tmp_path: Path) -> None:
    write(tmp_path, "labels.txt", "travel\nsports\n")
    path = write(tmp_path, "train.tsv", SIB + "4\tfood\tSoup.\n")
    with raises_at(5, "'food'", "labels.txt"):
        read_sib200(path)


def test_sib200_wrong_header_is_an_error_at_line_1(tmp_path: Path) -> None:
    path = write(tmp_path, "train.tsv", "id\tlabel\ttext\n1\ttravel\tx\n")
    with raises_at(1, "header", "index_id"):
        read_sib200(path)


def test_a_known_layout_forced_on_another_header_says_to_read_a_plain_table(tmp_path: Path) -> None:
    """`--format sib200` on a news file: the hint names --format tsv and the column flags, never --on-bad-row."""
    path = write(tmp_path, "train.tsv", NEWS_TSV)
    for policy in ("error", "skip"):
        with pytest.raises(DataFormatError) as info:
            read_classification(path, fmt="sib200", on_bad_row=policy)  # type: ignore[arg-type]
        assert info.value.line == 1
        assert "not a sib200 file" in info.value.hint
        assert "--format tsv" in info.value.hint and "--label-column" in info.value.hint
        assert "--on-bad-row" not in info.value.hint


def test_sib200_wrong_field_count_empty_text_and_empty_label(tmp_path: Path) -> None:
    body = SIB + "4\ttravel\n5\ttravel\t  \n6\t\tText.\n7\ttravel\tfine\textra\n"
    path = write(tmp_path, "train.tsv", body)
    with raises_at(5, "2 fields, expected 3"):
        read_sib200(path)
    ds = read_sib200(path, on_bad_row="skip")
    assert [line for line, _ in ds.skipped] == [5, 6, 7, 8]
    assert "empty text" in ds.skipped[1][1]
    assert "empty label" in ds.skipped[2][1]
    assert "4 fields, expected 3" in ds.skipped[3][1]
    assert len(ds) == 3


def test_error_names_file_line_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "train.tsv", SIB + "4\ttravel\n")
    with pytest.raises(DataFormatError) as info:
        read_sib200(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and ":5:" in str(info.value)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    with raises_at(1, "empty file"):
        read_sib200(write(tmp_path, "train.tsv", ""))


def test_unknown_bad_row_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_bad_row"):
        read_sib200(write(tmp_path, "train.tsv", SIB), on_bad_row="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ NusaX

NUSAX = (
    'id,text,label\n1,plain text,positive\n2,"quoted, with comma",negative\n3,"two\nlines",neutral\n4,after,positive\n'
)


def test_nusax_standard_quoting_and_multiline_rows_keep_line_numbers(tmp_path: Path) -> None:
    ds = read_nusax(write(tmp_path, "train.csv", NUSAX))
    assert [(e.text, e.line) for e in ds] == [
        ("plain text", 2),
        ("quoted, with comma", 3),
        ("two\nlines", 4),
        ("after", 6),
    ]
    assert ds.labels == ["positive", "negative", "neutral"]


def test_nusax_unclosed_quote_is_reported_where_the_row_starts(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", 'id,text,label\n1,ok,positive\n2,"never closed,negative\n3,x,neutral\n')
    with raises_at(3, "unreadable CSV row"):
        read_nusax(path)


def test_nusax_stray_quote_after_quoted_field(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", 'id,text,label\n1,"a"b,positive\n2,ok,negative\n')
    ds = read_nusax(path, on_bad_row="skip")
    assert [line for line, _ in ds.skipped] == [2]
    assert [e.line for e in ds] == [3]


def test_nusax_wrong_header(tmp_path: Path) -> None:
    with raises_at(1, "header"):
        read_nusax(write(tmp_path, "train.csv", "text,label\nx,positive\n"))


# ------------------------------------------------------------------------------------------------ AfriSenti


def test_afrisenti_keeps_raw_quotes_verbatim(tmp_path: Path) -> None:
    tweets = ['"quoted" start', 'Yorùbá ṣá """"..àyà"""" áha', 'he said "hi', '"']
    body = "tweet\tlabel\n" + "".join(
        f"{t}\t{lab}\n" for t, lab in zip(tweets, ["negative", "positive"] * 2, strict=True)
    )
    ds = read_afrisenti(write(tmp_path, "train.tsv", body))
    assert [e.text for e in ds] == tweets
    assert ds.labels == ["negative", "positive"]


def test_afrisenti_three_column_layout(tmp_path: Path) -> None:
    path = write(tmp_path, "dev.tsv", "ID\ttweet\tlabel\nor_1\tHar'a\tneutral\nor_2\tfacemask\tnegative\n")
    ds = read_afrisenti(path)
    assert ds.examples == [TextExample("Har'a", "neutral", 2), TextExample("facemask", "negative", 3)]


def test_afrisenti_every_row_has_the_header_field_count(tmp_path: Path) -> None:
    path = write(tmp_path, "train.tsv", "tweet\tlabel\nok\tpositive\na\ttab\tnegative\nlonely\n")
    with raises_at(3, "3 fields, expected 2"):
        read_afrisenti(path)
    ds = read_afrisenti(path, on_bad_row="skip")
    assert ds.skipped == [(3, "3 fields, expected 2 (tweet, label)"), (4, "1 fields, expected 2 (tweet, label)")]
    assert len(ds) == 1


def test_afrisenti_fixed_labels_reject_others(tmp_path: Path) -> None:
    path = write(tmp_path, "dev.tsv", "tweet\tlabel\na\tpositive\nb\tmixed\n")
    with raises_at(3, "'mixed'"):
        read_afrisenti(path, labels=["negative", "neutral", "positive"])
    ds = read_afrisenti(path, labels=["negative", "neutral", "positive"], on_bad_row="skip")
    assert ds.labels == ["negative", "neutral", "positive"]
    assert len(ds) == 1 and len(ds.skipped) == 1


# ------------------------------------------------------------------------------------------------ encoding


@pytest.mark.parametrize(
    ("name", "head", "tail"),
    [
        ("train.tsv", b"tweet\tlabel\nfine\tpositive\n", b"\tnegative\nalso fine\tneutral\n"),
        ("train.csv", b"id,text,label\n1,fine,positive\n2,", b",negative\n3,also fine,neutral\n"),
    ],
)
def test_invalid_utf8_is_reported_at_its_line(tmp_path: Path, name: str, head: bytes, tail: bytes) -> None:
    path = write(tmp_path, name, head + BAD_UTF8 + tail)
    with raises_at(3, "invalid UTF-8"):
        read_classification(path)
    ds = read_classification(path, on_bad_row="skip")
    assert [line for line, _ in ds.skipped] == [3]
    assert [e.text for e in ds] == ["fine", "also fine"]
    assert [e.line for e in ds] == [2, 4]


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "\ufefftext,label\nhello,a\n")
    assert read_table(path).examples == [TextExample("hello", "a", 2)]


# ------------------------------------------------------------------------------------------------ generic tables


def test_table_csv_and_tsv_with_named_columns(tmp_path: Path) -> None:
    csv_path = write(tmp_path, "d.csv", 'sentence,y,other\n"a, b",pos,1\nc,neg,2\n')
    ds = read_table(csv_path, "sentence", "y")
    assert ds.examples == [TextExample("a, b", "pos", 2), TextExample("c", "neg", 3)]
    assert (ds.layout, ds.quoting) == ("csv", "csv")
    tsv_path = write(tmp_path, "d.tsv", 'sentence\ty\n"a" b\tpos\n')
    unquoted = read_table(tsv_path, "sentence", "y", quoting="none")
    assert unquoted.examples == [TextExample('"a" b', "pos", 2)]
    assert (unquoted.layout, unquoted.quoting) == ("tsv", "none")
    with pytest.raises(DataFormatError) as info:  # a quote that opens a field must close it, under CSV quoting
        read_table(tsv_path, "sentence", "y")
    assert info.value.line == 2 and "--quoting none" in info.value.hint


# A news TSV as exported by spreadsheets and pandas: a headline quoted because it holds `"` and a line break.
NEWS_TSV = (
    "category\theadline\ttext\turl\n"
    'politics\t"Minister says ""no""\nto new tax"\tThe minister spoke.\thttp://a\n'
    'sports\tPlain headline\t"He said ""goal"""\thttp://b\n'
    'sports\tHe said "hi" there\tA text.\thttp://c\n'
)


def test_tsv_is_read_with_standard_csv_quoting_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, "train.tsv", NEWS_TSV)
    ds = read_classification(path, text_column="headline", label_column="category")
    assert ds.examples == [
        TextExample('Minister says "no"\nto new tax', "politics", 2),
        TextExample("Plain headline", "sports", 4),
        TextExample('He said "hi" there', "sports", 5),  # a quote inside a field is text
    ]
    assert (ds.layout, ds.quoting) == ("tsv", "csv")
    text = read_classification(path, text_column="text", label_column="category")
    assert text[1].text == 'He said "goal"'
    with raises_at(2, "2 fields, expected 4"):  # read unquoted, the two-line headline breaks the row
        read_classification(path, text_column="headline", label_column="category", quoting="none")


@pytest.mark.parametrize(
    ("name", "content", "missing"),
    [
        ("train.tsv", NEWS_TSV, "'label'"),
        ("train.csv", "tweet,label\nhello,1\n", "'text'"),
        ("train.jsonl", '{"tweet": "hello", "label": 1}\n', "'text'"),
    ],
)
def test_a_missing_column_names_the_column_flags_not_the_bad_row_policy(
    tmp_path: Path, name: str, content: str, missing: str
) -> None:
    path = write(tmp_path, name, content)
    for policy in ("error", "skip"):  # skipping rows cannot fix a header, so it is never offered
        with pytest.raises(DataFormatError) as info:
            read_classification(path, on_bad_row=policy)  # type: ignore[arg-type]
        err = info.value
        assert err.line == 1
        assert f"no column {missing}; the columns are: " in err.reason
        assert "--text-column" in err.hint and "--label-column" in err.hint
        assert "--on-bad-row" not in err.hint


def test_label_names_rename_raw_labels_and_refuse_unnamed_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", "text,label\nbad,-1\nmeh,0\ngood,1\nodd,2\n")
    names = {"-1": "negative", "0": "neutral", "1": "positive"}
    with raises_at(5, "label '2' has no name"):
        read_classification(path, label_names=names)
    ds = read_classification(path, label_names=names, on_bad_row="skip")
    assert [(e.text, e.label) for e in ds] == [("bad", "negative"), ("meh", "neutral"), ("good", "positive")]
    assert ds.labels == ["negative", "neutral", "positive"]
    dev = read_classification(path, label_names=names, labels=["negative", "positive"], on_bad_row="skip")
    assert [e.label for e in dev] == ["negative", "positive"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("d.csv", "sentence,y\na,pos\n"),
        ("d.tsv", "sentence\ty\na\tpos\n"),
        ("d.jsonl", '{"sentence": "a", "y": "pos"}\n'),
    ],
)
def test_table_missing_column_names_the_columns_that_exist(tmp_path: Path, name: str, content: str) -> None:
    with raises_at(1, "no column 'text'", "'sentence', 'y'"):
        read_table(write(tmp_path, name, content), "text", "y")
    with pytest.raises(DataFormatError) as info:
        read_table(write(tmp_path, name, content), "text", "y")
    assert "--text-column" in info.value.hint


def test_table_jsonl_rows(tmp_path: Path) -> None:
    lines = [
        '{"text": "one", "label": "a"}',
        "",
        '{"text": "two", "label": 1}',
        "{broken",
        '["not", "an", "object"]',
        '{"text": "three"}',
        '{"text": 3, "label": "a"}',
        '{"text": "four", "label": null}',
        '{"text": "five", "label": "b"}',
    ]
    path = write(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    with raises_at(4, "invalid JSON"):
        read_table(path)
    ds = read_table(path, on_bad_row="skip")
    assert ds.examples == [TextExample("one", "a", 1), TextExample("two", "1", 3), TextExample("five", "b", 9)]
    assert [line for line, _ in ds.skipped] == [4, 5, 6, 7, 8]
    assert "expected a JSON object" in ds.skipped[1][1]
    assert "no key 'label'" in ds.skipped[2][1]
    assert "text is a int" in ds.skipped[3][1]
    assert "null label" in ds.skipped[4][1]
    assert ds.dropped == {"blank line": 1}
    assert ds.labels == ["a", "1", "b"]


def test_table_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["x", None, "z"], "label": ["p", "q", "p"], "n": [1, 2, 3]}), path)
    with raises_at(2, "null text"):
        read_table(path)
    ds = read_table(path, on_bad_row="skip")
    assert ds.examples == [TextExample("x", "p", 1), TextExample("z", "p", 3)]
    with raises_at(1, "no column 'sentence'", "'text', 'label', 'n'"):
        read_table(path, "sentence")


def test_table_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    with raises_at(1, "not a readable Parquet file"):
        read_table(write(tmp_path, "d.parquet", "text,label\n"))


def test_classification_dispatch_by_header_and_columns(tmp_path: Path) -> None:
    sib = write(tmp_path, "sib.tsv", SIB)
    senti = write(tmp_path, "senti.tsv", 'tweet\tlabel\n"q"\tpositive\n')
    nusax = write(tmp_path, "nusax.csv", NUSAX)
    other = write(tmp_path, "other.tsv", "body\ttopic\nhello\tgreeting\n")
    assert read_classification(sib).labels == ["travel", "sports"]
    assert read_classification(senti).examples == [TextExample('"q"', "positive", 2)]
    assert len(read_classification(nusax)) == 4
    ds = read_classification(other, text_column="body", label_column="topic")
    assert ds.examples == [TextExample("hello", "greeting", 2)]
    # a named column reads a known layout as a plain table, with the table's quoting
    assert read_classification(senti, text_column="tweet").examples == [TextExample("q", "positive", 2)]
    unquoted = read_classification(senti, text_column="tweet", quoting="none")
    assert unquoted.examples == [TextExample('"q"', "positive", 2)]
    assert (read_classification(senti).layout, read_classification(senti).quoting) == ("afrisenti", "none")
    with pytest.raises(ValueError, match="tsvx"):
        read_classification(senti, fmt="tsvx")  # type: ignore[arg-type]
    with raises_at(1, "no column 'text'"):
        read_classification(other)
    with pytest.raises(ValueError, match="fmt="):
        read_classification(write(tmp_path, "data.xyz", "a"))


# ------------------------------------------------------------------------------------------------ CoNLL

MASAKHANER = "Bàbá O\nGàní B-PER\nAdams I-PER\nlọ O\n\nNí O\nÈkó B-LOC\n\n\nỌdún B-DATE\n2020 I-DATE\n"


def test_masakhaner_sentences_start_lines_and_tags(tmp_path: Path) -> None:
    ds = read_masakhaner(write(tmp_path, "train.txt", MASAKHANER))
    assert ds.examples == [
        TokenExample(["Bàbá", "Gàní", "Adams", "lọ"], ["O", "B-PER", "I-PER", "O"], 1),
        TokenExample(["Ní", "Èkó"], ["O", "B-LOC"], 6),
        TokenExample(["Ọdún", "2020"], ["B-DATE", "I-DATE"], 10),
    ]
    assert ds.labels == ["O", "B-PER", "I-PER", "B-LOC", "B-DATE", "I-DATE"]


def test_masakhaner_accepts_crlf_line_endings(tmp_path: Path) -> None:
    ds = read_masakhaner(write(tmp_path, "train.txt", MASAKHANER.replace("\n", "\r\n")))
    assert [e.line for e in ds] == [1, 6, 10]
    assert ds[0].tags == ["O", "B-PER", "I-PER", "O"]


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("Ibadan I-LOC", "tag I-LOC follows O"),  # I- after O
        ("Ibadan I-PER", "tag I-PER follows B-LOC"),  # I- after another type
        ("Ibadan B-loc", "not an IOB2 tag"),
        ("Ibadan LOC", "not an IOB2 tag"),
        ("Ibadan E-LOC", "not an IOB2 tag"),
        ("Ibadan  O", "separated by one space"),
        ("Ibadan\tO", "separated by one space"),
        ("Ibadan O extra", "separated by one space"),
        ("Ibadan", "separated by one space"),
    ],
)
def test_masakhaner_malformed_rows(tmp_path: Path, bad_line: str, fragment: str) -> None:
    previous = "Èkó B-LOC" if "follows B-LOC" in fragment else "ní O"
    path = write(tmp_path, "train.txt", f"Mo O\nlọ O\n\nWọ́n O\n{previous}\n{bad_line}\nlọ O\n\nÓ O\n")
    with raises_at(6, fragment):
        read_masakhaner(path)


def test_masakhaner_i_tag_at_sentence_start_is_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "Mo B-PER\n\nAdams I-PER\n")
    with raises_at(3, "tag I-PER follows O"):
        read_masakhaner(path)
    with pytest.raises(DataFormatError) as info:
        read_masakhaner(path)
    assert "--repair-iob" in info.value.hint  # the option that reads it, named where the error is


def test_masakhaner_skip_drops_whole_sentence_once(tmp_path: Path) -> None:
    text = "A O\nB I-PER\nC X\nD O\n\nE B-ORG\nF I-ORG\n\nG I-LOC\n"
    ds = read_masakhaner(write(tmp_path, "train.txt", text), on_bad_row="skip")
    assert ds.examples == [TokenExample(["E", "F"], ["B-ORG", "I-ORG"], 6)]
    assert [line for line, _ in ds.skipped] == [2, 9]  # one entry per dropped sentence, at its first bad row
    assert ds.labels == ["B-ORG", "I-ORG"]  # labels only from the sentences kept


def test_masakhaner_repair_reads_stray_i_as_b_and_lists_it(tmp_path: Path) -> None:
    text = "A O\nB I-LOC\nC I-LOC\nD B-PER\nE I-DATE\n"
    ds = read_masakhaner(write(tmp_path, "train.txt", text), repair_iob=True)
    assert ds[0].tags == ["O", "B-LOC", "I-LOC", "B-PER", "B-DATE"]
    assert [line for line, _ in ds.repaired] == [2, 5]
    assert "read as B-LOC" in ds.repaired[0][1]
    assert ds.skipped == []


def test_masakhaner_invalid_utf8_line(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", b"A O\n\nB O\n" + BAD_UTF8.replace(b" ", b"_") + b" O\nC O\n\nD O\n")
    with raises_at(4, "invalid UTF-8"):
        read_masakhaner(path)
    ds = read_masakhaner(path, on_bad_row="skip")
    assert [e.line for e in ds] == [1, 7]
    assert [line for line, _ in ds.skipped] == [4]


def test_masakhaner_fixed_tag_set(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "A B-PER\n\nB B-MISC\n")
    with raises_at(3, "'B-MISC'"):
        read_masakhaner(path, labels=["O", "B-PER", "I-PER"])


def test_conll_generic_columns_and_docstart(tmp_path: Path) -> None:
    text = "-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\tGerman  JJ  B-MISC\n\n-DOCSTART- O\nPeter NNP B-per\n"
    ds = read_conll(write(tmp_path, "eng.conll", text))
    assert ds.examples == [
        TokenExample(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], 3),
        TokenExample(["Peter"], ["B-per"], 8),
    ]
    assert ds.dropped == {"-DOCSTART- line": 2}


def test_conll_generic_malformed_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "d.conll", "EU B-ORG\nlonely\n\nx O\ny I-LOC\n\nz B-\n")
    with raises_at(2, "a token and a tag"):
        read_conll(path)
    ds = read_conll(path, on_bad_row="skip")
    assert ds.skipped[0][0] == 2 and ds.skipped[1][0] == 5 and ds.skipped[2][0] == 7
    assert "I-LOC follows O" in ds.skipped[1][1]
    assert len(ds) == 0


def test_ner_dispatch(tmp_path: Path) -> None:
    strict = write(tmp_path, "m.txt", MASAKHANER)
    generic = write(tmp_path, "g.txt", "EU\tB-ORG\nrejects\tO\n")
    assert len(read_ner(strict)) == 3
    assert read_ner(generic)[0].tags == ["B-ORG", "O"]
    with raises_at(1, "separated by one space"):
        read_ner(generic, fmt="masakhaner")


# ------------------------------------------------------------------------------------------------ MLM text


def test_text_lines_strip_and_count_blank_lines(tmp_path: Path) -> None:
    ds = read_text_lines(write(tmp_path, "train.txt", "  first line \n\n   \nsecond\r\nthird"))
    assert ds.examples == ["first line", "second", "third"]
    assert ds.dropped == {"blank line": 2}
    assert ds.labels == []


def test_text_lines_invalid_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", b"one\ntwo\n" + BAD_UTF8 + b"\nfour\n")
    with raises_at(3, "invalid UTF-8"):
        read_text_lines(path)
    ds = read_text_lines(path, on_bad_row="skip")
    assert ds.examples == ["one", "two", "four"]
    assert [line for line, _ in ds.skipped] == [3]


def test_verbalised_triples(tmp_path: Path) -> None:
    path = write(tmp_path, "train_cn_mt.csv", 'text\nraven is a synonym of għarab.\n""\n"a, b is related to c."\n')
    ds = read_verbalised_triples(path)
    assert ds.examples == ["raven is a synonym of għarab.", "a, b is related to c."]
    assert ds.dropped == {"empty text": 1}
    with raises_at(1, "no column 'text'"):
        read_verbalised_triples(write(tmp_path, "other.csv", "sentence\nx\n"))


def test_mlm_text_from_several_files_of_several_kinds(tmp_path: Path) -> None:
    text = write(tmp_path, "train.yor", b"Mo lo.\n" + BAD_UTF8 + b"\n\n")
    table = write(tmp_path, "train.csv", "text\nraven is a synonym of għarab.\n")
    jsonl = write(tmp_path, "more.jsonl", '{"sentence": "Ọ dára."}\n')
    header = "concept\turi\trel\tstart\tend\n"
    edges = write(
        tmp_path,
        "edges.tsv",
        header
        + "سۆز\t/a/1\tSynonym\t/c/ug/سۆز\t/c/en/word\n"
        + "سۆز\t/a/2\tExternalURL\t/c/ug/سۆز\thttp://x.org/w\n"
        + "word\t/a/1\tSynonym\t/c/ug/سۆز/n\t/c/en/word\n",
    )
    ds = read_mlm_text([text, table, edges], on_bad_row="skip")
    assert ds.examples == ["Mo lo.", "raven is a synonym of għarab.", "سۆز is a synonym of word."]
    assert ds.skipped == [(2, f"{text}: invalid UTF-8 at byte 4 of the line (b'\\xe9 au')")]
    assert ds.dropped == {"blank line": 1, "ExternalURL relation": 1, "duplicate sentence": 1}
    assert ds.paths == [text, table, edges]
    assert read_mlm_text(jsonl, text_column="sentence").examples == ["Ọ dára."]
    with raises_at(2, "invalid UTF-8"):
        read_mlm_text([text, table])


def test_dataset_container_and_description(tmp_path: Path) -> None:
    ds = read_afrisenti(write(tmp_path, "t.tsv", "tweet\tlabel\na\tpositive\nb\n\nc\tnegative\n"), on_bad_row="skip")
    assert isinstance(ds, Dataset)
    assert len(ds) == 2 and [e.text for e in ds] == ["a", "c"] and ds[1].line == 5
    assert ds.describe() == "2 examples, 2 labels, 1 skipped (bad rows), 1 dropped (blank line)"
