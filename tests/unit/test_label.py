"""`langadapt label` on a tiny model: every format in and out, bad rows, mixed languages, refusals, kill -9."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from langadapt.errors import LangadaptError
from langadapt.inference.engine import Engine
from langadapt.inference.settings import InferenceSettings
from langadapt.label.cli_label import register
from langadapt.label.formats import Position
from langadapt.label.job import PAUSE_ENV, LabelJob
from langadapt.label.options import LabelSettings
from langadapt.label.readers import reader_for
from langadapt.models.base import resolve_base_model
from langadapt.models.store import AdapterStore
from langadapt.serve.synthetic import AdapterFactory

YO = [
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá .",
    "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja .",
    "Ijọba ti kede pé àwọn ilé-ìwé yóò ṣí padà .",
]
HA = ["Shugaban kasa ya ziyarci Legas ranar Litinin .", "Yaran sun tafi makaranta a Kano jiya ."]
LONG = " ".join(YO * 6)  # several windows at max_length 24


@dataclass
class World:
    base: str
    store: AdapterStore
    factory: AdapterFactory
    engine: Engine

    def options(self, source: Path, output: Path, **overrides: Any) -> LabelSettings:
        fields: dict[str, Any] = {
            "tasks": ("ner", "sentiment"),
            "base": self.base,
            "store": str(self.store.root),
            "defaults": None,
            "threads": 1,
            "chunk_rows": 4,
            "progress": False,
        }
        fields.update(overrides)
        return LabelSettings(input=source, output=output, **fields)


@pytest.fixture(scope="module")
def world(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path_factory.mktemp("label-store"))
    factory = AdapterFactory(info, seed=11)
    yo_lang = factory.publish_language_adapter(store, "yor_Latn")
    for task in ("ner", "sentiment"):
        factory.publish_task_adapter(store, "yor_Latn", task, language_adapter=yo_lang, max_length=24, stride=6)
        factory.publish_task_adapter(store, "hau_Latn", task)
    engine = Engine(InferenceSettings(base=str(tiny_xlmr_dir), store=str(store.root), defaults=None, threads=1))
    return World(str(tiny_xlmr_dir), store, factory, engine)


def run(options: LabelSettings) -> dict[str, Any]:
    return LabelJob(options, notify=lambda _: None).run()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------ inputs


def write_input(fmt: str, path: Path, texts: list[str], langs: list[str] | None = None) -> Path:
    """`texts` (with an `id` column and optionally a `lang` column) in one of the input formats."""
    rows = [{"id": str(i), "text": t, **({"lang": langs[i]} if langs else {})} for i, t in enumerate(texts)]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt in ("csv", "tsv"):
        with path.open("w", encoding="utf-8", newline="") as f:
            dialect: dict[str, Any] = (
                {"delimiter": ","} if fmt == "csv" else {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
            )
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n", **dialect)
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)
    elif fmt == "conll":
        path.write_text("".join("\n".join(f"{tok} O" for tok in t.split()) + "\n\n" for t in texts), encoding="utf-8")
    elif fmt == "txt":
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def expected_labels(world: World, lang: str, texts: list[str]) -> list[dict[str, Any]]:
    """What the engine says for each text, labelled directly."""
    sentiment = world.engine.label("sentiment", lang, texts)
    ner = world.engine.label("ner", lang, texts)
    return [
        {
            "sentiment_label": s.label,
            "sentiment_scores": dict(s.scores),
            "ner_entities": [(e.type, e.start, e.end, e.text) for e in n.entities],
        }
        for s, n in zip(sentiment, ner, strict=True)
    ]


def assert_labels_match(row: dict[str, Any], expected: dict[str, Any]) -> None:
    assert row["label_error"] is None
    assert row["sentiment_label"] == expected["sentiment_label"]
    labels = sorted(expected["sentiment_scores"])
    np.testing.assert_allclose(
        [row["sentiment_scores"][k] for k in labels], [expected["sentiment_scores"][k] for k in labels], atol=2e-5
    )
    got = [(e["type"], e["start"], e["end"], e["text"]) for e in row["ner_entities"]]
    assert got == expected["ner_entities"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "parquet", "conll", "txt"])
def test_every_input_format_gives_each_text_its_own_labels(world: World, tmp_path: Path, fmt: str) -> None:
    texts = [*YO, LONG, YO[0]]
    source = write_input(fmt, tmp_path / f"in.{fmt}", texts)
    out = tmp_path / "out.jsonl"
    summary = run(world.options(source, out, lang="yo"))
    assert (summary["rows"], summary["labelled"], summary["errors"]) == (len(texts), len(texts), 0)
    rows = read_jsonl(out)
    assert [r["text"] for r in rows] == texts
    if fmt in ("jsonl", "csv", "tsv", "parquet"):
        assert [r["id"] for r in rows] == [str(i) for i in range(len(texts))]  # original fields, in order
    if fmt == "conll":
        assert rows[0]["tokens"] == texts[0].split() and rows[0]["conll_columns"][0] == ["O"]
    for row, expected in zip(rows, expected_labels(world, "yo", texts), strict=True):
        assert_labels_match(row, expected)
    for entity in rows[3]["ner_entities"]:
        assert LONG[entity["start"] : entity["end"]] == entity["text"]  # character offsets into the text
    assert max(e["start"] for e in rows[3]["ner_entities"]) > len(LONG) // 2  # the whole long text was read
    assert out.with_name("out.jsonl.errors.jsonl").read_text() == ""
    assert not out.with_name("out.jsonl.partial").exists()


def read_output(fmt: str, path: Path) -> list[dict[str, Any]]:
    """Rows of an output file, with JSON-text columns decoded (CSV, TSV) and maps as dicts (Parquet)."""
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "parquet":
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            row["sentiment_scores"] = dict(row["sentiment_scores"]) if row["sentiment_scores"] is not None else None
        return rows
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(
            f, delimiter="," if fmt == "csv" else "\t", quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE
        )
        rows = list(reader)
    for row in rows:
        for key in ("ner_entities", "sentiment_scores", "sentiment_score"):
            row[key] = json.loads(row[key]) if row[key] else None
        row["label_error"] = row["label_error"] or None
        row["sentiment_label"] = row["sentiment_label"] or None
    return rows


def conll_sentences(path: Path) -> list[tuple[list[str], list[tuple[str, str]]]]:
    """(comment lines, (token, tag) pairs) per sentence of a CoNLL output."""
    sentences, comments, tokens = [], [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            if comments or tokens:
                sentences.append((comments, tokens))
            comments, tokens = [], []
        elif line.startswith("# "):
            comments.append(line)
        else:
            token, tag = line.split(" ")
            tokens.append((token, tag))
    return sentences


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "conll"])
def test_every_output_format_holds_the_same_rows_as_jsonl(world: World, tmp_path: Path, fmt: str) -> None:
    texts = [*YO, "tab\there", "", 'a "quoted",\nline', HA[0]]
    source = write_input("jsonl", tmp_path / "in.jsonl", texts, ["yo"] * 6 + ["sw"])
    run(world.options(source, tmp_path / "ref.jsonl", lang_column="lang"))
    reference = read_jsonl(tmp_path / "ref.jsonl")
    out = tmp_path / f"out.{fmt}"
    run(world.options(source, out, lang_column="lang"))
    if fmt == "conll":
        sentences = conll_sentences(out)
        assert len(sentences) == len(reference)
        for (comments, tokens), row in zip(sentences, reference, strict=True):
            assert [t for t, _ in tokens] == row["text"].split()
            if row["label_error"]:
                assert {tag for _, tag in tokens} <= {"_"} and any("label_error" in c for c in comments)
                continue
            assert f"# sentiment = {row['sentiment_label']} {row['sentiment_score']}" in comments
            starts = {e["start"]: e["type"] for e in row["ner_entities"]}
            at = 0
            for token, tag in tokens:
                at = row["text"].index(token, at)
                if at in starts:  # a token where an entity starts opens it
                    assert tag == f"B-{starts[at]}"
                at += len(token)
            assert sum(tag.startswith("B-") for _, tag in tokens) <= len(row["ner_entities"])
        return
    rows = read_output(fmt, out)
    assert len(rows) == len(reference)
    for got, want in zip(rows, reference, strict=True):
        assert got["id"] == want["id"] and got["label_error"] == want["label_error"]
        assert got["text"] == (want["text"].replace("\t", "\\t").replace("\n", "\\n") if fmt == "tsv" else want["text"])
        assert (got["sentiment_label"], got["sentiment_score"]) == (want["sentiment_label"], want["sentiment_score"])
        assert got["sentiment_scores"] == want["sentiment_scores"]
        assert got["ner_entities"] == want["ner_entities"]


def test_conll_in_and_out_keeps_tokens_columns_and_documents(world: World, tmp_path: Path) -> None:
    source = tmp_path / "in.conll"
    source.write_text(
        "-DOCSTART- -X- -X- O\n\nỌmọ\tB-PER\nnáà\tO\n\nShugaban\tO\nkasa\tO\n\n\n"
        "-DOCSTART- -X- -X- O\n\nLegas\tB-LOC\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.conll"
    summary = run(world.options(source, out, tasks=("ner",), lang="yo", chunk_rows=1))
    assert summary["rows"] == 3
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[:2] == ["-DOCSTART- -X- -X- O", ""]
    assert [line.split("\t")[:2] for line in lines[2:4]] == [["Ọmọ", "B-PER"], ["náà", "O"]]  # gold column kept
    assert all(len(line.split("\t")) == 3 for line in lines if line and not line.startswith("-DOCSTART-"))
    assert lines.count("-DOCSTART- -X- -X- O") == 2


# ------------------------------------------------------------------------------------------ readers


def make_tricky(fmt: str, path: Path) -> Path:
    """Files with the cases positions must survive: blank lines, multi-line CSV fields, a BOM, documents."""
    if fmt == "jsonl":
        path.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n\n{"text": "b"}\n{bad\n   \n{"text": "\xc3\xa9"}\n{"text": "c"}')
    elif fmt == "csv":
        path.write_text('text,n\na,1\n"two\nlines",2\n\nb,3,extra\n"c ""q""",4\n', encoding="utf-8")
    elif fmt == "tsv":
        path.write_text('text\tn\na\t1\n"b\t2\n\nc\t3\n', encoding="utf-8")
    elif fmt == "txt":
        path.write_bytes(b"a\n\nb\r\nc \xff\nd")
    elif fmt == "conll":
        path.write_text("-DOCSTART- O\n\na O\nb O\n\n\nc O\n-DOCSTART- O\nd O\n\ne O", encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.table({"text": [f"t{i}" for i in range(10)]}), path, row_group_size=3)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "txt", "conll", "parquet"])
def test_readers_resume_at_any_row_as_if_read_through(tmp_path: Path, fmt: str) -> None:
    reader = reader_for(fmt, make_tricky(fmt, tmp_path / f"f.{fmt}"), "text", None)
    start = reader.open()
    through = list(reader.rows(start))
    assert [row.number for row, _ in through] == list(range(1, len(through) + 1))
    assert [p for _, p in through] == list(reader.skim(start))
    for i in range(len(through)):
        fresh = reader_for(fmt, reader.path, "text", None)  # as a new process would
        fresh.open()
        resumed = [(r.number, r.fields, r.error) for r, _ in fresh.rows(through[i][1])]
        assert resumed == [(r.number, r.fields, r.error) for r, _ in through[i + 1 :]]


def test_readers_say_what_is_wrong_with_each_row(tmp_path: Path) -> None:
    reader = reader_for("jsonl", make_tricky("jsonl", tmp_path / "f.jsonl"), "text", None)
    rows = [row for row, _ in reader.rows(reader.open())]
    assert [(r.number, r.line, r.text, r.kind) for r in rows] == [
        (1, 1, "a", None),
        (2, 3, "b", None),
        (3, 4, None, "malformed"),
        (4, 6, "é", None),
        (5, 7, "c", None),
    ]
    assert reader.blank_lines == 2
    reader = reader_for("csv", make_tricky("csv", tmp_path / "f.csv"), "text", None)
    rows = [row for row, _ in reader.rows(reader.open())]
    assert [(r.number, r.line, r.text, r.kind) for r in rows] == [
        (1, 2, "a", None),
        (2, 3, "two\nlines", None),
        (3, 6, None, "malformed"),
        (4, 7, 'c "q"', None),
    ]
    reader = reader_for("txt", make_tricky("txt", tmp_path / "f.txt"), "text", None)
    rows = [row for row, _ in reader.rows(reader.open())]
    assert [(r.text, r.kind) for r in rows] == [
        ("a", None),
        (None, "empty_text"),
        ("b", None),
        (None, "undecodable"),
        ("d", None),
    ]
    reader = reader_for("conll", make_tricky("conll", tmp_path / "f.conll"), "text", None)
    rows = [row for row, _ in reader.rows(reader.open())]
    assert [(r.text, r.line, (r.fields or {}).get("conll_prefix")) for r in rows] == [
        ("a b", 3, ["-DOCSTART- O"]),
        ("c", 7, []),
        ("d", 9, ["-DOCSTART- O"]),
        ("e", 11, []),
    ]


# ------------------------------------------------------------------------------------------ bad rows


def test_bad_rows_go_to_the_errors_file_with_row_numbers_and_stay_in_the_output(world: World, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"text": YO[0], "lang": "yo"}),
        json.dumps({"text": "   ", "lang": "yo"}),
        "{not json",
        "",
        json.dumps({"text": YO[1], "lang": "xx-nope"}),
        json.dumps({"text": YO[1], "lang": "swh"}),
        json.dumps({"text": HA[0], "lang": "ha"}),
        json.dumps([1, 2]),
        json.dumps({"text": YO[2]}),
        json.dumps({"text": 7, "lang": "yo"}),
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"text": "\xff\xfe", "lang": "yo"}\n'
    source.write_bytes(data)
    out = tmp_path / "out.jsonl"
    summary = run(world.options(source, out, lang_column="lang"))
    assert (summary["rows"], summary["labelled"], summary["errors"], summary["blank_lines"]) == (10, 2, 8, 1)
    assert summary["errors_by_kind"] == {
        "empty_text": 1,
        "malformed": 3,
        "unknown_language": 1,
        "no_adapter": 1,
        "no_language": 1,
        "undecodable": 1,
    }
    errors = read_jsonl(tmp_path / "out.jsonl.errors.jsonl")
    assert [(e["row"], e["line"], e["kind"]) for e in errors] == [
        (2, 2, "empty_text"),
        (3, 3, "malformed"),
        (4, 5, "unknown_language"),
        (5, 6, "no_adapter"),
        (7, 8, "malformed"),
        (8, 9, "no_language"),
        (9, 10, "malformed"),
        (10, 11, "undecodable"),
    ]
    assert errors[1]["raw"] == "{not json" and "invalid JSON" in errors[1]["reason"]
    assert "swh_Latn" in errors[3]["reason"] and "hau_Latn, yor_Latn" in errors[3]["reason"]
    rows = read_jsonl(out)
    assert len(rows) == 10  # every row, in order, the bad ones with null labels and the reason
    assert [r["label_error"] is None for r in rows] == [
        True,
        False,
        False,
        False,
        False,
        True,
        False,
        False,
        False,
        False,
    ]
    assert rows[5]["text"] == HA[0] and rows[5]["sentiment_label"] is not None
    assert rows[1]["text"] == "   " and rows[1]["label_error"] == "empty text"  # its fields are kept
    assert rows[2] == {  # an unreadable record: only the added columns
        "ner_entities": None,
        "sentiment_label": None,
        "sentiment_score": None,
        "sentiment_scores": None,
        "label_error": errors[1]["reason"],
    }
    assert rows[3]["text"] == YO[1] and rows[3]["sentiment_label"] is None and rows[3]["ner_entities"] is None


def test_a_csv_row_with_the_wrong_field_count_is_a_bad_row(world: World, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"id,text\n1,{YO[0]}\n2,{YO[1]},surplus\n3,{YO[2]}\n", encoding="utf-8")
    summary = run(world.options(source, tmp_path / "out.csv", lang="yo"))
    assert (summary["rows"], summary["errors"]) == (3, 1)
    [error] = read_jsonl(tmp_path / "out.csv.errors.jsonl")
    assert (error["row"], error["line"], error["kind"]) == (2, 3, "malformed") and "3 fields, expected 2" in error[
        "reason"
    ]
    with (tmp_path / "out.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["1", "", "3"] and rows[1]["label_error"].startswith("3 fields")


# ------------------------------------------------------------------------------------- languages


def test_each_row_is_labelled_by_its_own_languages_adapters(world: World, tmp_path: Path) -> None:
    texts = [YO[0], HA[0], YO[1], HA[1], YO[2], LONG, HA[0]]
    langs = ["yo", "hau", "yor_Latn", "ha", "yor", "yo", "hau_Latn"]
    source = write_input("jsonl", tmp_path / "mixed.jsonl", texts, langs)
    summary = run(world.options(source, tmp_path / "mixed.out.jsonl", lang_column="lang", chunk_rows=5))
    assert set(summary["adapters"]["ner"]) == {"yor_Latn", "hau_Latn"}
    assert summary["adapters"]["ner"]["yor_Latn"]["stack"] == "yor_Latn-mlm-seq_bn@v1+yor_Latn-ner@v1"
    assert summary["adapters"]["sentiment"]["hau_Latn"]["stack"] == "hau_Latn-sentiment@v1"
    mixed = read_jsonl(tmp_path / "mixed.out.jsonl")
    for lang, picked in (("yo", [0, 2, 4, 5]), ("ha", [1, 3, 6])):
        alone = write_input("jsonl", tmp_path / f"{lang}.jsonl", [texts[i] for i in picked])
        run(world.options(alone, tmp_path / f"{lang}.out.jsonl", lang=lang))
        for i, row in zip(picked, read_jsonl(tmp_path / f"{lang}.out.jsonl"), strict=True):
            assert mixed[i]["sentiment_label"] == row["sentiment_label"]
            np.testing.assert_allclose(mixed[i]["sentiment_score"], row["sentiment_score"], atol=2e-5)
            assert [(e["type"], e["start"], e["end"]) for e in mixed[i]["ner_entities"]] == [
                (e["type"], e["start"], e["end"]) for e in row["ner_entities"]
            ]
    yo_only = expected_labels(world, "yo", [YO[0]])[0]
    ha_only = expected_labels(world, "ha", [HA[0]])[0]
    assert yo_only["sentiment_scores"] != ha_only["sentiment_scores"]  # the two adapters really differ


# ---------------------------------------------------------------------------------- resume, refusals


class CrashError(Exception):
    """Stands in for a crash after some chunks were committed."""


def interrupted_run(options: LabelSettings, monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Run a job that dies after `after` committed chunks, leaving its partial directory."""
    commit = LabelJob._commit
    calls = {"n": 0}

    def dying(self: LabelJob, *args: Any) -> None:
        if calls["n"] == after:
            raise CrashError
        calls["n"] += 1
        commit(self, *args)

    with monkeypatch.context() as patch:
        patch.setattr(LabelJob, "_commit", dying)
        with pytest.raises(CrashError):
            run(options)


def test_a_partial_job_resumes_and_refuses_a_changed_input_options_or_adapters(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [YO[i % 3] + f" {i}" for i in range(20)]
    source = write_input("jsonl", tmp_path / "in.jsonl", texts)
    out = tmp_path / "out.jsonl"
    options = world.options(source, out, lang="yo")
    run(world.options(source, tmp_path / "ref.jsonl", lang="yo"))

    interrupted_run(options, monkeypatch, after=2)
    checkpoint = json.loads((tmp_path / "out.jsonl.partial" / "checkpoint.json").read_text())
    assert checkpoint["chunks"] == 2 and checkpoint["position"]["row"] == 8 and not out.exists()

    for changed, message in [
        (options.model_copy(update={"tasks": ("sentiment",)}), "other options"),
        (options.model_copy(update={"lang": "ha"}), "other options"),
        (options.model_copy(update={"output_format": "csv"}), "other options"),
        (options.model_copy(update={"text_column": "id"}), "other options"),
    ]:
        with pytest.raises(LangadaptError, match=message) as caught:
            run(changed)
        assert "--restart" in caught.value.hint

    original = source.read_bytes()
    source.write_bytes(original.replace(b"0", b"9", 1))  # same size, other content
    with pytest.raises(LangadaptError, match="changed since") as caught:
        run(options)
    assert "head_sha256" in caught.value.message and "--restart" in caught.value.hint
    source.write_bytes(original)
    os.utime(source, ns=(checkpoint["input"]["mtime_ns"], checkpoint["input"]["mtime_ns"]))

    summary = run(options)  # the same job resumes where it stopped
    assert summary["resumed_from_row"] == 8 and summary["rows"] == 20
    assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    assert run(options)["already_complete"] is True  # a finished job is recognised, not redone

    with pytest.raises(LangadaptError, match="already exists"):
        run(options.model_copy(update={"tasks": ("ner",)}))
    restarted = run(options.model_copy(update={"tasks": ("ner",), "restart": True}))
    assert restarted["rows"] == 20 and "sentiment_label" not in read_jsonl(out)[0]


def test_new_adapter_versions_are_not_mixed_into_a_partial_output(
    tiny_xlmr_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path / "store")
    factory = AdapterFactory(info, seed=2)
    factory.publish_task_adapter(store, "yor_Latn", "sentiment")
    world = World(str(tiny_xlmr_dir), store, factory, None)  # type: ignore[arg-type]
    source = write_input("jsonl", tmp_path / "in.jsonl", [YO[i % 3] for i in range(12)])
    options = world.options(source, tmp_path / "out.jsonl", tasks=("sentiment",), lang="yo")
    interrupted_run(options, monkeypatch, after=1)
    factory.publish_task_adapter(store, "yor_Latn", "sentiment")  # v2
    with pytest.raises(LangadaptError, match="adapters changed") as caught:
        run(options)
    assert "yor_Latn-sentiment@v1" in caught.value.message and "yor_Latn-sentiment@v2" in caught.value.message


@pytest.mark.parametrize("step", ["summary", "cleanup"])
def test_a_crash_while_finishing_is_finished_by_the_next_run(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    from langadapt.label import checkpoint, job

    source = write_input("jsonl", tmp_path / "in.jsonl", [YO[i % 3] for i in range(9)])
    options = world.options(source, tmp_path / "out.jsonl", lang="yo")
    with monkeypatch.context() as patch:
        if step == "summary":  # output and errors file in place, no summary yet, checkpoint still there
            patch.setattr(job, "write_json", lambda *_: (_ for _ in ()).throw(CrashError()))
        else:  # summary written, checkpoint removed, the partial directory not yet
            patch.setattr(checkpoint.shutil, "rmtree", lambda *_, **__: (_ for _ in ()).throw(CrashError()))
        with pytest.raises(CrashError):
            run(options)
    assert (tmp_path / "out.jsonl.partial").is_dir()
    summary = run(options)
    assert summary["rows"] == 9 and len(read_jsonl(tmp_path / "out.jsonl")) == 9
    assert summary.get("already_complete", False) is (step == "cleanup")
    assert not (tmp_path / "out.jsonl.partial").exists()


# ---------------------------------------------------------------------------------------- kill -9


def committed_chunks(checkpoint: Path) -> int:
    try:
        return int(json.loads(checkpoint.read_text())["chunks"])
    except (OSError, ValueError):
        return -1


def test_killed_at_random_points_it_resumes_with_every_row_exactly_once(world: World, tmp_path: Path) -> None:
    texts = [(YO + HA)[i % 5] + f" {i}" for i in range(240)]
    langs = ["yo", "yo", "yo", "ha", "ha"] * 48
    texts[17], texts[101], langs[150] = "", " ", "zz-unknown"
    source = write_input("jsonl", tmp_path / "in.jsonl", texts, langs)
    options = world.options(source, tmp_path / "ref.jsonl", lang_column="lang", chunk_rows=8)
    run(options)
    reference = (tmp_path / "ref.jsonl").read_bytes()
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "langadapt.cli", "label", str(source), "-o", str(out), "--lang-column", "lang"]
    command += ["--task", "ner,sentiment", "--base", world.base, "--store", str(world.store.root), "--no-defaults"]
    command += ["--threads", "1", "--chunk-rows", "8", "--no-progress", "--json"]
    env = {**os.environ, PAUSE_ENV: "0.02", "OMP_NUM_THREADS": "1"}
    checkpoint = tmp_path / "out.jsonl.partial" / "checkpoint.json"
    chances = random.Random(6)
    killed_mid_run = 0
    # 30 chunks: kill once the checkpoint reaches each target (the last one: while finishing the output)
    for target in [*sorted(chances.sample(range(1, 30), 3)), 30]:
        before = committed_chunks(checkpoint)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if committed_chunks(checkpoint) >= max(target, before + 1):
                time.sleep(chances.uniform(0, 0.1))  # land anywhere in a commit: chunk, errors, checkpoint
                break
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            chunks = committed_chunks(checkpoint)
            killed_mid_run += 0 < chunks < 30
            if chunks >= 0:
                assert json.loads(checkpoint.read_text())["position"]["row"] == 8 * chunks
    assert killed_mid_run >= 2
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=True)
    summary = json.loads(finished.stdout)
    assert summary["rows"] == 240 and summary["errors"] == 3 and summary["resumed_from_row"] > 0
    assert out.read_bytes() == reference  # row by row, byte for byte: each row once, in order
    assert (tmp_path / "out.jsonl.errors.jsonl").read_bytes() == (tmp_path / "ref.jsonl.errors.jsonl").read_bytes()
    assert [e["row"] for e in read_jsonl(tmp_path / "out.jsonl.errors.jsonl")] == [18, 102, 151]
    assert not (tmp_path / "out.jsonl.partial").exists()


# -------------------------------------------------------------------------------------------- CLI


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A stand-in for the main CLI."""

    register(app)
    return app


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["--task", "ner"], "say which language", "--lang"),
        (["--task", "ner", "--lang", "yo", "--lang-column", "lang"], "say which language", "--lang"),
        (["--task", "pos", "--lang", "yo"], "bad task list", "ner, sentiment, topic"),
        (["--task", "ner", "--lang", "yorubba"], "unknown language", "yor_Latn"),
        (["--task", "ner", "--lang", "sw"], "no ner adapter for Swahili", "hau_Latn, yor_Latn"),
        (["--task", "ner", "--lang", "yo", "--text-column", "body"], "no column 'body'", "--text-column"),
        (["--task", "sentiment", "--lang", "yo", "--output-format", "conll"], "needs --task ner", "add ner"),
        (["--task", "ner", "--lang", "yo", "--format", "xml"], "unknown input format", "jsonl"),
    ],
)
def test_bad_invocations_say_what_to_fix(
    world: World, tmp_path: Path, args: list[str], message: str, hint: str
) -> None:
    source = write_input("jsonl", tmp_path / "in.jsonl", YO)
    base = ["label", str(source), "-o", str(tmp_path / "out.jsonl"), "--base", world.base]
    base += ["--store", str(world.store.root), "--no-defaults"]
    result = CliRunner().invoke(cli(), [*base, *args])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and message in result.output
    assert "hint:" in result.output and hint in result.output
    assert "Traceback" not in result.output


def test_the_cli_prints_a_summary_as_text_or_json(world: World, tmp_path: Path) -> None:
    source = write_input("txt", tmp_path / "in.txt", [*YO, ""])
    args = ["label", str(source), "-o", str(tmp_path / "out.jsonl"), "--task", "sentiment", "--lang", "yo"]
    args += ["--base", world.base, "--store", str(world.store.root), "--no-defaults", "--no-progress"]
    result = CliRunner().invoke(cli(), [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["labelled"], summary["errors"]) == (4, 3, 1)
    assert summary["adapters"]["sentiment"]["yor_Latn"]["task_adapter"] == {
        "id": "yor_Latn-sentiment",
        "version": 1,
        "source": "store",
    }
    assert summary["rows_per_s"] > 0 and summary["output"].endswith("out.jsonl")
    again = CliRunner().invoke(cli(), args)
    assert (
        again.exit_code == 0
        and "already complete" in again.output
        and "4 rows: 3 labelled, 1 with errors" in again.output
    )


def test_positions_round_trip() -> None:
    assert Position.from_dict(Position(3, 40, 5).as_dict()) == Position(3, 40, 5)
