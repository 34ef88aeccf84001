"""ConceptNet edges → sentences: concept text from URIs, the authors' phrases, and every edge left out counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from langadapt.errors import DataFormatError
from langadapt.training.kg import (
    PREDICATES,
    Edge,
    concept_language,
    concept_text,
    is_url,
    predicate,
    read_conceptnet_edges,
    verbalise,
    verbalise_edges,
)

HEADER = "concept\turi\trel\tstart\tend\tdataset\tsources\tlicense\tweight\tsurfaceText\tsurfaceStart\tsurfaceEnd\n"


def edge_row(concept: str, rel: str, start: str, end: str) -> str:
    """One row of the flattened ConceptNet TSV, with plausible values in the columns the reader ignores."""
    uri = f"/a/[/r/{rel}/,{start}/,{end}/]"
    rest = ["/d/wiktionary/en", "/s/resource/wiktionary/en", "cc:by-sa/4.0", "1.0", "", "a", "b"]
    return "\t".join([concept, uri, rel, start, end, *rest]) + "\n"


def test_concept_text_takes_the_term_without_part_of_speech() -> None:
    assert concept_text("/c/ug/سۆز/n/wn/communication") == "سۆز"
    assert concept_text("/c/ug/سۆز") == "سۆز"
    assert concept_text("/c/ug/يامغۇر_ياغماق/v/") == "يامغۇر ياغماق"
    assert concept_text("/c/en/excuse_me") == "excuse me"
    assert concept_language("/c/fr/jungle/n/wikt/fr_1") == "fr"
    assert concept_language("http://fr.wiktionary.org/wiki/x") is None
    with pytest.raises(ValueError, match="not a ConceptNet concept URI"):
        concept_text("/r/Synonym")


def test_urls_are_recognised() -> None:
    assert is_url("http://fr.wiktionary.org/wiki/جاڭگال")
    assert is_url("https://example.org/x")
    assert not is_url("/c/en/http")


def test_predicates_match_the_authors_maltese_file() -> None:
    # Phrases as they appear in kg/conceptnet_gurgurov/mlt/train_cn_mt.csv, written by the paper's authors.
    assert predicate("Synonym") == "is a synonym of"
    assert predicate("Antonym") == "is the opposite of"
    assert predicate("HasContext") == "has context of"
    assert predicate("IsA") == "is a type of"
    assert predicate("EtymologicallyDerivedFrom") == "is etymologically derived from"
    assert predicate("SimilarTo") == "is similar to"
    assert predicate("/r/RelatedTo/") == "is related to"


def test_unknown_relation_becomes_lowercase_words() -> None:
    assert "ObstructedBy" not in PREDICATES
    assert predicate("ObstructedBy") == "obstructed by"
    assert predicate("HasFirstSubevent") == "has first subevent"
    assert predicate("/r/dbpedia/genre") == "genre"
    assert predicate("ExternalURL") == "external url"


def test_verbalise_template_and_drops() -> None:
    edges = [
        Edge("RelatedTo", "/c/ug/جاڭگال", "/c/fr/jungle"),
        Edge("Synonym", "/c/fr/jungle/n/wikt/fr_1", "/c/ug/جاڭگال"),
        Edge("ExternalURL", "/c/ug/جاڭگال", "http://fr.wiktionary.org/wiki/جاڭگال"),
        Edge("Synonym", "/c/fr/panama", "/c/ug/panama"),  # same text at both ends: a self-loop
        Edge("RelatedTo", "/c/ug/x", "https://example.org/x"),  # a URL end under another relation
        Edge("RelatedTo", "/c/ug/جاڭگال/n", "/c/fr/jungle"),  # the first sentence again (listed under jungle)
        Edge("HasContext", "/c/ug/بوستان", "/c/fr/géographie"),
        Edge("Antonym", "/c/mt/żgħir", "/c/mt/kbir"),
        Edge("NotDesires", "/c/en/cat", "/c/en/bath_water"),
    ]
    result = verbalise(edges)
    assert result.sentences == [
        "جاڭگال is related to jungle.",
        "jungle is a synonym of جاڭگال.",
        "بوستان has context of géographie.",
        "żgħir is the opposite of kbir.",
        "cat not desires bath water.",
    ]
    assert result.edges == 9
    assert result.dropped == {"ExternalURL relation": 1, "self-loop": 1, "URL end": 1, "duplicate sentence": 1}
    assert verbalise_edges(edges) == result.sentences


def test_read_conceptnet_edges(tmp_path: Path) -> None:
    path = tmp_path / "edges.tsv"
    path.write_text(
        HEADER
        + edge_row("جاڭگال", "RelatedTo", "/c/ug/جاڭگال", "/c/fr/jungle")
        + edge_row("جاڭگال", "ExternalURL", "/c/ug/جاڭگال", "http://fr.wiktionary.org/wiki/جاڭگال")
        + edge_row("x", "Synonym", "/c/fr/a", "/c/de/b")
        + edge_row("x", "Synonym", '/c/ug/"q"', "/c/en/quote"),
        encoding="utf-8",
    )
    ds = read_conceptnet_edges(path)
    assert [(e.rel, e.line) for e in ds] == [("RelatedTo", 2), ("ExternalURL", 3), ("Synonym", 4), ("Synonym", 5)]
    assert ds[3].start == '/c/ug/"q"'  # unquoted: quote characters stay
    only_ug = read_conceptnet_edges(path, language="uig_Arab")
    assert [e.line for e in only_ug] == [2, 3, 5]
    assert only_ug.dropped == {"other language": 1}
    assert verbalise_edges(only_ug) == ["جاڭگال is related to jungle.", '"q" is a synonym of quote.']


def test_read_conceptnet_edges_malformed_rows(tmp_path: Path) -> None:
    path = tmp_path / "edges.tsv"
    good = edge_row("a", "RelatedTo", "/c/ug/a", "/c/en/b")
    path.write_text(
        HEADER
        + good
        + "a\t/a/x\tRelatedTo\t/c/ug/a\n"
        + edge_row("a", "RelatedTo", "ug/a", "/c/en/b")
        + edge_row("a", "", "/c/ug/a", "/c/en/b"),
        encoding="utf-8",
    )
    with pytest.raises(DataFormatError) as info:
        read_conceptnet_edges(path)
    assert info.value.line == 3 and "4 fields, expected 12" in info.value.reason
    ds = read_conceptnet_edges(path, on_bad_row="skip")
    assert len(ds) == 1
    assert [line for line, _ in ds.skipped] == [3, 4, 5]
    assert "start 'ug/a' is neither a concept URI" in ds.skipped[1][1]
    assert ds.skipped[2][1] == "empty relation"


def test_read_conceptnet_edges_needs_rel_start_end_columns(tmp_path: Path) -> None:
    path = tmp_path / "edges.tsv"
    path.write_text("concept\turi\trelation\tstart\tend\nx\t/a/\tSynonym\t/c/ug/a\t/c/en/b\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        read_conceptnet_edges(path)
    assert info.value.line == 1
    assert "no column 'rel'" in info.value.reason and "'relation'" in info.value.reason
