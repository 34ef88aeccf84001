"""Build the language-adapter corpora of the quality experiment from the shared data folder.

Per language: `<out>/<lang>/train.txt`, every train-split text of MAFAND-MT (African side), SIB-200, MasakhaNER 2.0
(sentences joined) and AfriSenti, de-duplicated, with every sentence of any dev or test split of those data sets
(all their languages) removed; `<out>/<lang>/heldout.txt`, the dev splits of the language, interleaved, for
validation loss and pseudo-perplexity. For Yorùbá also free-text variants from `unlabelled/yoruba_text`, each to be
given together with train.txt (they hold no line of it): 10^4 and 10^5 lines, with and without the religious
files; a size larger than the lines available is written whole, named `-all`. Each file has a
`<name>.counts.json` beside it; `<out>/summary.json` holds them all.

Usage: python scripts/build-corpora.py --out /work/quality/corpora [--data ../shared/data] [--langs hau_Latn ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from langadapt.errors import LangadaptError
from langadapt.models.language import canonical_language
from langadapt.training.corpus import (
    build_corpus,
    build_held_out,
    data_set_sources,
    evaluation_text,
    sample_lines,
    sentence_key,
    yoruba_text_sources,
)

LANGUAGES = ["hau_Latn", "yor_Latn", "swh_Latn", "ibo_Latn", "kin_Latn"]
YORUBA_SIZES = [10_000, 100_000]
SEED = 42


def size_label(size: int) -> str:
    """1e4 for 10000."""
    return f"1e{len(str(size)) - 1}" if str(size).strip("0") == "1" else str(size)


def main() -> int:
    """Build every corpus and print one summary line per file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--out", type=Path, required=True, help="where the corpora go (outside the repository)")
    parser.add_argument("--langs", nargs="+", default=LANGUAGES, help="languages (any accepted code form)")
    parser.add_argument("--yoruba-sizes", nargs="*", type=int, default=YORUBA_SIZES, help="free-text variant sizes")
    args = parser.parse_args()

    exclude = evaluation_text(args.data)
    print(f"{len(exclude.keys)} dev/test sentences from {len(exclude.files)} files are excluded", flush=True)
    summary: dict[str, object] = {}
    for language in map(canonical_language, args.langs):
        folder = args.out / language
        corpus = build_corpus(data_set_sources(args.data, language, "train"), exclude)
        summary[f"{language}/train"] = json.loads(corpus.write(folder / "train.txt").read_text(encoding="utf-8"))
        held_out = build_held_out(data_set_sources(args.data, language, "dev"), seed=SEED)
        summary[f"{language}/heldout"] = json.loads(held_out.write(folder / "heldout.txt").read_text(encoding="utf-8"))
        if language == "yor_Latn" and args.yoruba_sizes:
            for religious in (True, False):
                seen = {sentence_key(line) for line in corpus.lines}
                pool = build_corpus(yoruba_text_sources(args.data, religious), exclude, seen=seen)
                subset = "with-religious" if religious else "no-religious"
                for size in sorted(args.yoruba_sizes):
                    name = f"yoruba_text-{subset}-{size_label(size) if size < len(pool.lines) else 'all'}"
                    sample = sample_lines(pool, size, SEED)
                    summary[f"{language}/{name}"] = json.loads(
                        sample.write(folder / f"{name}.txt").read_text(encoding="utf-8")
                    )
                    if size >= len(pool.lines):
                        break
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, counts in summary.items():
        totals = counts["totals"]  # type: ignore[index]
        print(
            f"{name:42} kept {totals['kept']:>7}  read {totals['read']:>7}  duplicates {totals['duplicates']:>6}  "
            f"leakage {totals['leakage']:>5}  unusable {totals['unusable']:>4}"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LangadaptError as err:
        print(f"error: {err.message}\nhint: {err.hint}", file=sys.stderr)
        sys.exit(2)
