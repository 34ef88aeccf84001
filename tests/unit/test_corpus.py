"""Language-adapter corpora: train text only, no repeats, no dev or test sentence, every removal counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langadapt.errors import LangadaptError
from langadapt.training.corpus import (
    CorpusSource,
    EvaluationText,
    build_corpus,
    build_held_out,
    data_set_sources,
    evaluation_text,
    sample_lines,
    sentence_key,
    yoruba_text_sources,
)


def write(path: Path, text: str) -> Path:
    """Write a file, creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def afrisenti(*tweets: str) -> str:
    """An AfriSenti TSV with the given tweets, all neutral."""
    return "tweet\tlabel\n" + "".join(f"{t}\tneutral\n" for t in tweets)


def sib(*texts: str) -> str:
    """A SIB-200 TSV with the given texts."""
    return "index_id\tcategory\ttext\n" + "".join(f"{i}\ttravel\t{t}\n" for i, t in enumerate(texts))


def ner(*sentences: str) -> str:
    """A MasakhaNER file: each sentence's words tagged O."""
    return "\n".join("".join(f"{w} O\n" for w in s.split()) for s in sentences)


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A miniature shared data folder: Swahili in all four data sets (under `swa` and `swh_Latn`), plus Hausa."""
    root = tmp_path / "data"
    write(root / "unlabelled/mafand_mt/swa/train.txt", "Habari za leo\nhabari  za LEO\nMvua inanyesha sana\n")
    write(root / "unlabelled/mafand_mt/swa/dev.txt", "Watoto wanacheza nje\n")
    write(root / "unlabelled/mafand_mt/swa/test.txt", "Mvua inanyesha sana\n")
    write(root / "topic/sib200/swh_Latn/train.tsv", sib("Ndege inaruka juu", "Watoto wanacheza nje"))
    write(root / "topic/sib200/swh_Latn/dev.tsv", sib("Safari ya Mombasa"))
    write(root / "topic/sib200/swh_Latn/test.tsv", sib("Mlima Kilimanjaro ni mrefu"))
    write(root / "ner/masakhaner2/swa/train.txt", ner("Juma alienda Nairobi jana", "Mlima Kilimanjaro ni mrefu"))
    write(root / "ner/masakhaner2/swa/dev.txt", ner("Amina anaishi Dodoma"))
    write(root / "ner/masakhaner2/swa/test.txt", ner("Rais alizungumza leo"))
    write(root / "sentiment/afrisenti/swa/train.tsv", afrisenti("Nimefurahi sana leo", "😂😂 123", "Sannu da zuwa"))
    write(root / "sentiment/afrisenti/swa/dev.tsv", afrisenti("Sijui kabisa"))
    write(root / "sentiment/afrisenti/swa/test.tsv", afrisenti("Rais alizungumza , leo"))
    write(root / "sentiment/afrisenti/hau/test.tsv", afrisenti("Sannu da zuwa"))  # another language's test
    return root


def test_keys_ignore_case_spacing_and_unicode_composition() -> None:
    assert sentence_key("Habari  za\tLEO") == sentence_key("habari za leo")
    assert sentence_key("Rais alizungumza , leo") == sentence_key("Rais alizungumza, leo")
    assert sentence_key("Ọ̀la") == sentence_key("O\u0323\u0300la")  # decomposed and composed Yoruba
    assert sentence_key("habari za leo") != sentence_key("habari za jana")


def test_sources_follow_each_data_sets_folder_names(shared: Path) -> None:
    train = data_set_sources(shared, "swh_Latn", "train")
    assert [s.name for s in train] == ["mafand_mt/train", "sib200/train", "masakhaner2/train", "afrisenti/train"]
    assert train[1].path == shared / "topic/sib200/swh_Latn/train.tsv"
    assert train[0].path == shared / "unlabelled/mafand_mt/swa/train.txt"
    assert data_set_sources(shared, "hau_Latn", "train") == []


def test_corpus_drops_repeats_and_every_dev_or_test_sentence_and_counts_them(shared: Path, tmp_path: Path) -> None:
    exclude = evaluation_text(shared)
    corpus = build_corpus(data_set_sources(shared, "swh_Latn", "train"), exclude)

    assert corpus.lines == ["Habari za leo", "Ndege inaruka juu", "Juma alienda Nairobi jana", "Nimefurahi sana leo"]
    counts = corpus.sources
    assert (counts["mafand_mt/train"].duplicates, counts["mafand_mt/train"].leakage) == (1, 1)  # in MAFAND test
    assert counts["sib200/train"].leakage == 1  # a MAFAND dev line
    assert counts["masakhaner2/train"].leakage == 1  # a SIB test sentence
    assert counts["afrisenti/train"].unusable == 1  # no letter in it
    assert counts["afrisenti/train"].leakage == 1  # a Hausa test tweet: every language's splits are excluded
    keys = {sentence_key(line) for line in corpus.lines}
    assert not keys & exclude.keys

    written = corpus.write(tmp_path / "out/swh_Latn/train.txt")
    report = json.loads(written.read_text(encoding="utf-8"))
    assert (tmp_path / "out/swh_Latn/train.txt").read_text(encoding="utf-8").splitlines() == corpus.lines
    assert report["totals"] == {"read": 10, "unusable": 1, "duplicates": 1, "leakage": 4, "kept": 4}
    assert str(shared / "sentiment/afrisenti/hau/test.tsv") in report["excluded_splits"]
    assert report["sources"]["sib200/train"]["licence"] == "CC BY-SA 4.0"


def test_a_source_with_no_usable_line_left_is_an_error_naming_it(shared: Path, tmp_path: Path) -> None:
    leaked = write(tmp_path / "copy-of-test.txt", "Mvua inanyesha sana\n\n")
    with pytest.raises(LangadaptError, match=r"copy-of-test\.txt has no usable line left") as err:
        build_corpus([CorpusSource("oops", leaked)], evaluation_text(shared))
    assert "1 also in a dev or test split" in str(err.value) and "train split" in err.value.hint


def test_held_out_text_mixes_the_dev_splits_and_never_meets_the_corpus(shared: Path) -> None:
    corpus = build_corpus(data_set_sources(shared, "swh_Latn", "train"), evaluation_text(shared))
    held_out = build_held_out(data_set_sources(shared, "swh_Latn", "dev"), seed=0)
    assert held_out.lines == ["Watoto wanacheza nje", "Safari ya Mombasa", "Amina anaishi Dodoma", "Sijui kabisa"]
    assert not {sentence_key(x) for x in held_out.lines} & {sentence_key(x) for x in corpus.lines}
    assert build_held_out(data_set_sources(shared, "swh_Latn", "dev"), seed=0, limit=2).lines == held_out.lines[:2]


def test_free_text_variants_skip_the_base_corpus_and_nest(shared: Path) -> None:
    folder = shared / "unlabelled/yoruba_text"
    write(folder / "bible_bsn.txt", "".join(f"Ẹsẹ {i} ti Bibeli\n" for i in range(30)))
    write(folder / "blog.txt", "".join(f"Ọ̀rọ̀ bulọọgi {i}\n" for i in range(10)) + "Habari za leo\n")
    write(folder / "LICENSE-repository-GPL-3.0.txt", "GPL\n")
    assert [s.name for s in yoruba_text_sources(shared, religious=False)] == ["yoruba_text/blog"]

    exclude = evaluation_text(shared)
    seen = {sentence_key(line) for line in build_corpus(data_set_sources(shared, "swh_Latn", "train"), exclude).lines}
    pool = build_corpus(yoruba_text_sources(shared, religious=True), exclude, seen=seen)
    assert len(pool.lines) == 40 and pool.sources["yoruba_text/blog"].duplicates == 1  # already in the base corpus
    small, large = sample_lines(pool, 10, seed=1), sample_lines(pool, 25, seed=1)
    assert len(small.lines) == 10 and set(small.lines) < set(large.lines)
    assert small.counts()["sampled"] == {"requested": 10, "from": 40, "seed": 1}
    assert sample_lines(pool, 10, seed=2).lines != small.lines


def test_an_empty_evaluation_set_excludes_nothing(tmp_path: Path) -> None:
    text = write(tmp_path / "a.txt", "one line\nanother line\n")
    corpus = build_corpus([CorpusSource("a", text)], EvaluationText(set(), []))
    assert corpus.lines == ["one line", "another line"]
