"""Knowledge-graph triples as MLM sentences: ConceptNet edges read, filtered and written with the paper's template.

The template and relation phrases are those of the paper's authors (`utilities/graph2text.py` in
d-gurgurov/Injecting-Commonsense-Knowledge-into-LLMs, which produced the shared Maltese `train_cn_mt.csv`):
`{start} {predicate} {end}.`, e.g. `brain is a synonym of moħħ.`. Like theirs, self-loops and `ExternalURL`
edges are left out; unlike theirs, duplicate sentences are removed and relations without a phrase are kept,
their CamelCase name split into words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from langadapt.training.readers import Dataset, OnBadRow, RowIssues, table_rows

__all__ = [
    "PREDICATES",
    "TEMPLATE",
    "Edge",
    "Verbalisation",
    "concept_language",
    "concept_text",
    "is_url",
    "predicate",
    "read_conceptnet_edges",
    "relation_name",
    "verbalise",
    "verbalise_edges",
]

TEMPLATE = "{start} {predicate} {end}."

# Relation → predicate phrase. The first block is the authors' table, checked against the Maltese file.
PREDICATES: dict[str, str] = {
    "Antonym": "is the opposite of",
    "DerivedFrom": "is derived from",
    "DistinctFrom": "is distinct from",
    "EtymologicallyDerivedFrom": "is etymologically derived from",
    "EtymologicallyRelatedTo": "is etymologically related to",
    "FormOf": "is a form of",
    "HasContext": "has context of",
    "IsA": "is a type of",
    "RelatedTo": "is related to",
    "SimilarTo": "is similar to",
    "SymbolOf": "is a symbol of",
    "Synonym": "is a synonym of",
    # ConceptNet relations the authors' data did not contain.
    "AtLocation": "is at location",
    "CapableOf": "is capable of",
    "Causes": "causes",
    "HasA": "has a",
    "HasProperty": "has property",
    "MadeOf": "is made of",
    "PartOf": "is a part of",
    "UsedFor": "is used for",
}

_CONCEPT = re.compile(r"/c/(?P<lang>[^/\s]+)/(?P<term>[^/]+)(?:/.*)?")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_CAMEL_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z]|[^A-Za-z]|$)|[A-Z]?[a-z]+|[0-9]+")


@dataclass(frozen=True, slots=True)
class Edge:
    """One ConceptNet edge: relation name and the URIs of its two ends; `line` is where it was read."""

    rel: str
    start: str
    end: str
    line: int = 0


@dataclass
class Verbalisation:
    """Sentences written from edges, and how many edges were left out for each reason."""

    sentences: list[str]
    edges: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


def is_url(value: str) -> bool:
    """Whether an edge end is a web address rather than a concept."""
    return _URL.fullmatch(value.strip()) is not None


def concept_text(uri: str) -> str:
    """The concept's words from its URI's term, without the part-of-speech suffix: `/c/ug/سۆز/n/wn/x` → `سۆز`."""
    match = _CONCEPT.fullmatch(uri.strip())
    if match is None:
        raise ValueError(f"not a ConceptNet concept URI (/c/<language>/<term>[/...]): {uri!r}")
    return match["term"].replace("_", " ")


def concept_language(uri: str) -> str | None:
    """The ConceptNet language code of a concept URI (`/c/ug/...` → `ug`), None for anything else."""
    match = _CONCEPT.fullmatch(uri.strip())
    return match["lang"] if match else None


def relation_name(rel: str) -> str:
    """A relation's bare name: `/r/Synonym/` → `Synonym`."""
    return rel.strip().strip("/").split("/")[-1]


def predicate(rel: str) -> str:
    """The phrase for a relation (`Synonym` or `/r/Synonym`); unknown ones as lowercase words from CamelCase."""
    name = relation_name(rel)
    if name in PREDICATES:
        return PREDICATES[name]
    words = _CAMEL_WORDS.findall(name)
    return " ".join(w.lower() for w in words) if words else name


def verbalise(edges: Iterable[Edge]) -> Verbalisation:
    """Edges as `{start} {predicate} {end}.` sentences, in order, without URL ends, self-loops or duplicates."""
    result = Verbalisation(sentences=[])
    seen: set[str] = set()
    for edge in edges:
        result.edges += 1
        if relation_name(edge.rel) == "ExternalURL":
            result.dropped["ExternalURL relation"] += 1
            continue
        if is_url(edge.start) or is_url(edge.end):
            result.dropped["URL end"] += 1
            continue
        start, end = concept_text(edge.start), concept_text(edge.end)
        if start == end:
            result.dropped["self-loop"] += 1
            continue
        sentence = TEMPLATE.format(start=start, predicate=predicate(edge.rel), end=end)
        if sentence in seen:
            result.dropped["duplicate sentence"] += 1
            continue
        seen.add(sentence)
        result.sentences.append(sentence)
    return result


def verbalise_edges(edges: Iterable[Edge]) -> list[str]:
    """The sentences of `verbalise`, without the counts."""
    return verbalise(edges).sentences


def _conceptnet_language(code: str) -> str:
    """A language code as ConceptNet spells it: `uig`, `uig_Arab`, `ug` → `ug`."""
    import langcodes

    return str(langcodes.Language.get(code.replace("_", "-")).language)


def read_conceptnet_edges(
    path: str | Path, language: str | None = None, *, on_bad_row: OnBadRow = "error"
) -> Dataset[Edge]:
    """Edges from a flattened ConceptNet TSV (header with `rel`, `start`, `end`; unquoted), all kept as they are.

    With `language`, edges with neither end in that language are dropped and counted. Each end must be a concept
    URI or a URL (which `verbalise` then leaves out); anything else is a bad row.
    """
    path = Path(path)
    issues = RowIssues(path, on_bad_row)
    wanted = _conceptnet_language(language) if language else None
    edges: list[Edge] = []
    for line, values in table_rows(path, "tsv", issues, ["rel", "start", "end"], quoting="none"):
        rel, start, end = (str(v).strip() for v in values)
        if not rel:
            issues.bad(line, "empty relation")
            continue
        problem = next(
            (
                f"{name} {value!r} is neither a concept URI (/c/<language>/<term>) nor a URL"
                for name, value in (("start", start), ("end", end))
                if concept_language(value) is None and not is_url(value)
            ),
            None,
        )
        if problem:
            issues.bad(line, problem)
            continue
        if wanted and wanted not in (concept_language(start), concept_language(end)):
            issues.dropped["other language"] += 1
            continue
        edges.append(Edge(rel=rel, start=start, end=end, line=line))
    return issues.dataset(edges)
