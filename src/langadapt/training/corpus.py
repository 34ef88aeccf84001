"""Text corpora for language adapters: train-split text only, de-duplicated, with evaluation sentences removed.

A language adapter trained on a sentence that a task is later evaluated on has seen the test. So a corpus is
built from the train splits of the labelled data sets (and free text), and every line whose key also occurs in
any dev or test split is dropped; the key is the line in NFC, case-folded, with all whitespace removed, which
is also how the data sets' READMEs count their overlaps (it matches a tokenised NER sentence to its raw text).
Every line left out is counted, by source and reason, in a JSON file beside the corpus.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from langadapt.errors import LangadaptError
from langadapt.paths import atomic_write, atomic_write_json

__all__ = [
    "HELD_OUT_SPLITS",
    "Corpus",
    "CorpusSource",
    "EvaluationText",
    "SourceCounts",
    "build_corpus",
    "build_held_out",
    "clean_line",
    "data_set_sources",
    "evaluation_text",
    "read_source",
    "sample_lines",
    "sentence_key",
    "yoruba_text_sources",
]

SourceFormat = Literal["text", "afrisenti", "sib200", "masakhaner"]
Split = Literal["train", "dev", "test"]
HELD_OUT_SPLITS: tuple[Split, ...] = ("dev", "test")

FOLDER_CODES = {"swh_Latn": "swa"}  # MAFAND, AfriSenti and MasakhaNER file Swahili under the macrolanguage


@dataclass(frozen=True)
class DataSet:
    """A labelled data set under the shared data folder: `<folder>/<language folder>/<split file>`."""

    folder: str
    split_file: str
    fmt: SourceFormat
    licence: str
    flores_folders: bool = False  # language folders named `xxx_Scrp` (SIB-200), else by ISO 639-3 code

    def path(self, root: Path, language: str, split: Split) -> Path:
        """The file of one language and split (it may not exist)."""
        folder = language if self.flores_folders else FOLDER_CODES.get(language, language.split("_")[0])
        return root / self.folder / folder / self.split_file.format(split=split)

    def every_language(self, root: Path, split: Split) -> list[Path]:
        """The files of one split for every language folder present."""
        base = root / self.folder
        folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        return [
            f / self.split_file.format(split=split)
            for f in folders
            if (f / self.split_file.format(split=split)).is_file()
        ]


DATA_SETS: dict[str, DataSet] = {
    "mafand_mt": DataSet("unlabelled/mafand_mt", "{split}.txt", "text", "CC BY-NC 4.0"),
    "sib200": DataSet("topic/sib200", "{split}.tsv", "sib200", "CC BY-SA 4.0", flores_folders=True),
    "masakhaner2": DataSet("ner/masakhaner2", "{split}.txt", "masakhaner", "CC BY-NC 4.0"),
    "afrisenti": DataSet("sentiment/afrisenti", "{split}.tsv", "afrisenti", "CC BY 4.0"),
}

YORUBA_TEXT = "unlabelled/yoruba_text"
RELIGIOUS_FILES = ("bible_bsn.txt", "bible_biblica.txt", "book_of_mormon.txt", "quran.txt")
YORUBA_TEXT_LICENCE = "GPL-3.0 (repository); speech_prompts_slr86.txt CC BY-SA 4.0"


@dataclass(frozen=True)
class CorpusSource:
    """One file of text: a data set split, or free text."""

    name: str
    path: Path
    fmt: SourceFormat = "text"
    licence: str | None = None


@dataclass
class SourceCounts:
    """What became of one source's lines."""

    path: str
    licence: str | None
    read: int = 0
    unusable: int = 0
    duplicates: int = 0
    leakage: int = 0
    kept: int = 0


@dataclass
class Corpus:
    """Cleaned lines and the count of every line left out, per source."""

    lines: list[str]
    sources: dict[str, SourceCounts]
    excluded: list[str] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)

    def counts(self) -> dict[str, object]:
        """The JSON written beside the corpus: totals, per-source counts and what was excluded."""
        totals = {k: sum(getattr(c, k) for c in self.sources.values()) for k in ("read", "unusable", "duplicates")}
        totals |= {"leakage": sum(c.leakage for c in self.sources.values()), "kept": len(self.lines)}
        return {
            "lines": len(self.lines),
            "totals": totals,
            "sources": {name: asdict(c) for name, c in self.sources.items()},
            "key": "NFC, case-folded, all whitespace removed",
            "excluded_splits": self.excluded,
            **self.notes,
        }

    def write(self, path: Path) -> Path:
        """Write the lines (one a line) to `path` and the counts to `<path stem>.counts.json`; returns the JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{line}\n" for line in self.lines).encode("utf-8")
        atomic_write(path, lambda handle: handle.write(text))
        counts = path.with_name(f"{path.stem}.counts.json")
        atomic_write_json(counts, {"file": str(path), **self.counts()}, indent=2)
        return counts


def clean_line(text: str) -> str:
    """The line as written to a corpus: NFC, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def sentence_key(text: str) -> str:
    """What two lines must share to count as the same sentence: NFC, case-folded, no whitespace at all."""
    return "".join(unicodedata.normalize("NFC", text).casefold().split())


def _usable(line: str) -> bool:
    """A line with at least one letter (tweets of emoji, numbers or links alone teach no language)."""
    return any(ch.isalpha() for ch in line)


def read_source(source: CorpusSource) -> list[str]:
    """The text lines of a source: a line of text, a table's text column, or a NER sentence's tokens joined."""
    from langadapt.training.readers import read_afrisenti, read_masakhaner, read_sib200, read_text_lines

    if source.fmt == "text":
        return read_text_lines(source.path).examples
    if source.fmt == "afrisenti":
        return [e.text for e in read_afrisenti(source.path)]
    if source.fmt == "sib200":
        return [e.text for e in read_sib200(source.path)]
    if source.fmt == "masakhaner":
        return [" ".join(e.tokens) for e in read_masakhaner(source.path, repair_iob=True)]
    raise ValueError(f"unknown source format {source.fmt!r}; use text, afrisenti, sib200 or masakhaner")


def data_set_sources(root: Path, language: str, split: Split) -> list[CorpusSource]:
    """The labelled data sets' files of one language and split that exist under `root`, in a fixed order."""
    out = []
    for name, data_set in DATA_SETS.items():
        path = data_set.path(root, language, split)
        if path.is_file():
            out.append(CorpusSource(f"{name}/{split}", path, data_set.fmt, data_set.licence))
    return out


@dataclass
class EvaluationText:
    """The keys of every dev and test sentence, and the files they came from."""

    keys: set[str]
    files: list[str]


def evaluation_text(root: Path) -> EvaluationText:
    """Every dev and test sentence of the labelled data sets under `root`, in every language they hold."""
    keys: set[str] = set()
    files: list[str] = []
    for data_set in DATA_SETS.values():
        for split in HELD_OUT_SPLITS:
            for path in data_set.every_language(root, split):
                keys.update(sentence_key(line) for line in read_source(CorpusSource(path.name, path, data_set.fmt)))
                files.append(str(path))
    keys.discard("")
    return EvaluationText(keys, sorted(files))


def build_corpus(sources: Sequence[CorpusSource], exclude: EvaluationText, seen: set[str] | None = None) -> Corpus:
    """Lines of `sources` in order: cleaned, unusable ones and repeats dropped, evaluation sentences removed.

    `seen` holds keys already taken elsewhere (e.g. the corpus a free-text variant is added to); they count as
    duplicates and the corpus's own keys are added to it. A source that keeps no line is an error: it means a
    wrong file (a dev or test split given as train, or the same file twice), not a small corpus.
    """
    seen = set() if seen is None else seen
    lines: list[str] = []
    counts: dict[str, SourceCounts] = {}
    for source in sources:
        count = counts[source.name] = SourceCounts(str(source.path), source.licence)
        for raw in read_source(source):
            count.read += 1
            line = clean_line(raw)
            key = sentence_key(line)
            if not _usable(line):
                count.unusable += 1
            elif key in exclude.keys:
                count.leakage += 1
            elif key in seen:
                count.duplicates += 1
            else:
                seen.add(key)
                lines.append(line)
                count.kept += 1
        if not count.kept:
            raise LangadaptError(
                f"{source.path} has no usable line left: {count.read} read, {count.unusable} without a letter, "
                f"{count.leakage} also in a dev or test split, {count.duplicates} repeated from earlier sources",
                "check it is the train split of the right language (not a dev or test split, not a file already "
                "given), or leave it out of the corpus",
            )
    return Corpus(lines, counts, exclude.files)


def build_held_out(sources: Sequence[CorpusSource], seed: int, limit: int | None = None) -> Corpus:
    """Held-out text for validation and pseudo-perplexity from dev splits: de-duplicated and interleaved (seeded
    shuffle within each source, then one line of each in turn), so that any prefix mixes the domains.

    A training corpus built with these splits excluded never holds one of these lines.
    """
    corpus = build_corpus(sources, EvaluationText(set(), []))
    by_source: list[list[str]] = []
    start = 0
    for count in corpus.sources.values():
        chunk = corpus.lines[start : start + count.kept]
        start += count.kept
        order = torch.randperm(len(chunk), generator=torch.Generator().manual_seed(seed)).tolist()
        by_source.append([chunk[i] for i in order])
    mixed = [chunk[i] for i in range(max(map(len, by_source), default=0)) for chunk in by_source if i < len(chunk)]
    corpus.lines = mixed[:limit]
    corpus.notes = {"order": f"shuffled within each source (seed {seed}), then interleaved", "limit": limit}
    return corpus


def yoruba_text_sources(root: Path, religious: bool) -> list[CorpusSource]:
    """The Yorùbá free-text files, with or without the religious ones (Bibles, Book of Mormon, Qur'an)."""
    folder = root / YORUBA_TEXT
    files = sorted(p for p in folder.glob("*.txt") if not p.name.startswith("LICENSE"))
    if not files:
        raise LangadaptError(f"no text files in {folder}", "point --data at the shared data folder")
    keep = [p for p in files if religious or p.name not in RELIGIOUS_FILES]
    return [CorpusSource(f"yoruba_text/{p.stem}", p, "text", YORUBA_TEXT_LICENCE) for p in keep]


def sample_lines(corpus: Corpus, size: int, seed: int) -> Corpus:
    """A seeded sample of `size` lines (the first `size` of one seeded order, so smaller samples nest in larger)."""
    order = torch.randperm(len(corpus.lines), generator=torch.Generator().manual_seed(seed)).tolist()
    picked = sorted(order[:size])
    sample = Corpus([corpus.lines[i] for i in picked], corpus.sources, corpus.excluded, dict(corpus.notes))
    sample.notes |= {"sampled": {"requested": size, "from": len(corpus.lines), "seed": seed}}
    return sample
