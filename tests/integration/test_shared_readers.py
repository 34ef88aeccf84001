"""The readers on the real shared data (../shared/data): row counts, label sets and quirks the READMEs describe."""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

import pytest

from langadapt.errors import DataFormatError
from langadapt.training.kg import PREDICATES, read_conceptnet_edges, verbalise
from langadapt.training.mlm_text import read_mlm_text
from langadapt.training.readers import (
    read_afrisenti,
    read_classification,
    read_masakhaner,
    read_ner,
    read_nusax,
    read_sib200,
    read_text_lines,
    read_verbalised_triples,
)

pytestmark = pytest.mark.data

SIB_LABELS = ["science/technology", "travel", "politics", "sports", "health", "entertainment", "geography"]
IOB2_TAGS = {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"}
SENTIMENT = {"positive", "neutral", "negative"}


def physical_lines(path: Path) -> int:
    """Newline count of a file: its data rows plus a header where it has one."""
    return path.read_bytes().count(b"\n")


def test_sib200_hau_splits_and_label_order(shared_data: Path) -> None:
    folder = shared_data / "topic" / "sib200" / "hau_Latn"
    listed = [line for line in (folder / "labels.txt").read_text(encoding="utf-8").splitlines() if line]
    train = read_classification(folder / "train.tsv")
    assert len(train) == 701 and train.skipped == []
    assert train.labels == listed == SIB_LABELS
    assert (train[0].line, train[-1].line) == (2, 702)
    assert train[0].label == "geography" and train[0].text.startswith("Kasar turkiya")
    counts = {label: sum(e.label == label for e in train) for label in SIB_LABELS}
    assert counts == {
        "science/technology": 176,
        "travel": 138,
        "politics": 102,
        "sports": 85,
        "health": 77,
        "entertainment": 65,
        "geography": 58,
    }
    assert len(read_sib200(folder / "dev.tsv", labels=train.labels)) == 99
    assert len(read_sib200(folder / "test.tsv", labels=train.labels)) == 204


def test_sib200_is_parallel_across_languages(shared_data: Path) -> None:
    hau = read_sib200(shared_data / "topic" / "sib200" / "hau_Latn" / "train.tsv")
    uig = read_sib200(shared_data / "topic" / "sib200" / "uig_Arab" / "train.tsv")
    assert [e.label for e in hau] == [e.label for e in uig]


def test_afrisenti_yor_train_keeps_quotes(shared_data: Path) -> None:
    path = shared_data / "sentiment" / "afrisenti" / "yor" / "train.tsv"
    ds = read_classification(path)
    assert len(ds) == 8522 and ds.skipped == []
    assert set(ds.labels) == SENTIMENT
    raw = path.read_text(encoding="utf-8")
    # Every `"` in the file is in a tweet, so the texts must hold every one of them.
    assert sum(e.text.count('"') for e in ds) == raw.count('"') > 0
    assert ds[1].text == 'Yorùbá nbú\'yàn ṣá """"""""..àyà wanle bí òkú ìbànújẹ́"""""""" áha! :) #eebu #Yoruba'


@pytest.mark.parametrize("lang", ["arq", "ary", "kin", "por", "tso", "orm"])
def test_afrisenti_every_file_reads_whole(shared_data: Path, lang: str) -> None:
    for path in sorted((shared_data / "sentiment" / "afrisenti" / lang).glob("*.tsv")):
        ds = read_afrisenti(path)
        assert len(ds) == physical_lines(path) - 1, path
        assert set(ds.labels) == SENTIMENT


def test_nusax_javanese_splits(shared_data: Path) -> None:
    folder = shared_data / "sentiment" / "nusax_senti" / "javanese"
    train = read_classification(folder / "train.csv")
    assert len(train) == 500 and set(train.labels) == SENTIMENT
    assert {label: sum(e.label == label for e in train) for label in SENTIMENT} == {
        "negative": 192,
        "neutral": 119,
        "positive": 189,
    }
    assert len(read_nusax(folder / "valid.csv", labels=train.labels)) == 100
    assert len(read_nusax(folder / "test.csv", labels=train.labels)) == 400


def test_nusax_toba_batak_multiline_texts_keep_line_numbers(shared_data: Path) -> None:
    path = shared_data / "sentiment" / "nusax_senti" / "toba_batak" / "train.csv"
    ds = read_nusax(path)
    assert len(ds) == 500
    assert sum("\n" in e.text for e in ds) == 19
    with path.open(encoding="utf-8", newline="") as f:
        expected = list(csv.DictReader(f))
    assert [(e.text, e.label) for e in ds] == [(row["text"], row["label"]) for row in expected]
    # each row starts on the line after the previous row's last line
    for before, after in zip(ds.examples, ds.examples[1:], strict=False):
        assert after.line == before.line + before.text.count("\n") + 1
    assert ds[-1].line + ds[-1].text.count("\n") == physical_lines(path)


def test_masakhaner_yor_train(shared_data: Path) -> None:
    path = shared_data / "ner" / "masakhaner2" / "yor" / "train.txt"
    # The file has one IOB2 slip: an I-LOC straight after O.
    with pytest.raises(DataFormatError) as info:
        read_ner(path)
    assert info.value.line == 56179 and "I-LOC follows O" in info.value.reason
    skipped = read_ner(path, on_bad_row="skip")
    assert len(skipped) == 6875 and [line for line, _ in skipped.skipped] == [56179]
    repaired = read_ner(path, repair_iob=True)
    assert len(repaired) == 6876 and repaired.skipped == []
    assert [line for line, _ in repaired.repaired] == [56179]
    assert set(repaired.labels) == IOB2_TAGS and len(repaired.labels) == 9
    # the file is not NFC-normalised (Yorùbá tone marks are often decomposed); readers keep text as it is
    assert [unicodedata.normalize("NFC", t) for t in repaired[0].tokens[:2]] == ["Bàbá", "tó"]
    assert repaired[0].line == 1
    assert all(len(e.tokens) == len(e.tags) > 0 for e in repaired)


@pytest.mark.parametrize(
    ("lang", "train", "dev", "test"),
    [("hau", 5716, 816, 1633), ("ibo", 7634, 1090, 2181), ("twi", 4240, 605, 1211), ("zul", 5848, 836, 1670)],
)
def test_masakhaner_counts_match_readme(shared_data: Path, lang: str, train: int, dev: int, test: int) -> None:
    folder = shared_data / "ner" / "masakhaner2" / lang
    counts = [len(read_masakhaner(folder / f"{split}.txt", repair_iob=True)) for split in ("train", "dev", "test")]
    assert counts == [train, dev, test]


def test_mafand_yor_text_lines(shared_data: Path) -> None:
    folder = shared_data / "unlabelled" / "mafand_mt" / "yor"
    train = read_text_lines(folder / "train.txt")
    assert len(train) == 6644 and train.skipped == [] and train.dropped == {}
    assert train[0].startswith("Ilé-iṣẹ́ Agbóhùnsáfẹ́fẹ́ Ìbílẹ̀")
    both = read_mlm_text([folder / "train.txt", folder / "dev.txt"])
    assert len(both) == 6644 + 1544


def test_conceptnet_uig_edges_verbalised(shared_data: Path) -> None:
    path = shared_data / "kg" / "conceptnet_gurgurov" / "uig" / "conceptnet_edges_ug.tsv"
    edges = read_conceptnet_edges(path, language="uig")
    assert len(edges) == 4351 and edges.skipped == [] and edges.dropped == {}
    result = verbalise(edges.examples)
    assert result.dropped == {"ExternalURL relation": 1110, "self-loop": 16, "duplicate sentence": 358}
    assert len(result.sentences) == 2867 == len(set(result.sentences))
    assert not any("://" in s or "wiktionary" in s for s in result.sentences)
    # An independent recomputation in the authors' way (term after /c/<lang>/, self-loops and URLs out), deduplicated.
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    expected: dict[str, None] = {}
    for row in rows:
        if row["rel"] == "ExternalURL":
            continue
        start, end = (row[k].split("/")[3].replace("_", " ") for k in ("start", "end"))
        if start != end:
            expected.setdefault(f"{start} {PREDICATES[row['rel']]} {end}.", None)
    assert result.sentences == list(expected)
    assert read_mlm_text(path).examples == result.sentences


def test_conceptnet_mlt_verbalised_triples(shared_data: Path) -> None:
    folder = shared_data / "kg" / "conceptnet_gurgurov" / "mlt"
    train = read_verbalised_triples(folder / "train_cn_mt.csv")
    val = read_verbalised_triples(folder / "val_cn_mt.csv")
    assert (len(train), len(val)) == (7720, 858)
    assert train[1] == "raven is a synonym of għarab."
    # Every sentence the authors wrote uses one of our predicate phrases and the `{start} {predicate} {end}.` form.
    phrases = [f" {p} " for p in PREDICATES.values()]
    assert all(s.endswith(".") and any(p in s for p in phrases) for s in [*train, *val])
