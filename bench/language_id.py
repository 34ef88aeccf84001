"""Language identification (`lang: "auto"`): the shipped head against py3langid and lingua, in and out of domain.

    .venv/bin/python bench/language_id.py            # writes bench/results/language_id.json, docs/language-id/*.png
    .venv/bin/python bench/language_id.py --quick    # 50 texts per language and data set (smoke run)

Measured on the embedded base with the packaged default head (`any-lid`):

1. SIB-200 test (204 sentences × 36 languages, none of whose translations was trained on): accuracy and F1 per
   language of the head; py3langid and lingua on the same sentences for the languages each knows.
2. Out of domain, for the languages they share with SIB-200: AfriSenti tweets, MasakhaNER 2.0 sentences (tokens
   joined by spaces) and NusaX sentences, test splits, at most `--per-language` texts each (the first ones).
   The head answers among its 36 languages; py3langid and lingua each among the languages they share with those
   36 (a closed set, as the head's), only on the texts whose language they know.
3. The share of texts the head answers at its threshold, and how accurately (the rest get a 422 asking for lang).
4. Confusion between close languages on SIB-200 test (figure).
5. Added latency: `Engine.identify` per request (1 text and 16 texts; `--repeats` times), beside the NER labelling
   of the same request (a twentieth as many times), one torch thread.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
FIGURES = ROOT / "docs" / "language-id"
AFRISENTI = {"amh": "amh_Ethi", "hau": "hau_Latn", "ibo": "ibo_Latn", "kin": "kin_Latn", "orm": "gaz_Latn",
             "swa": "swh_Latn", "tir": "tir_Ethi", "tso": "tso_Latn", "twi": "twi_Latn", "yor": "yor_Latn"}  # fmt: skip
MASAKHANER = {"hau": "hau_Latn", "ibo": "ibo_Latn", "kin": "kin_Latn", "lug": "lug_Latn", "luo": "luo_Latn",
              "swa": "swh_Latn", "twi": "twi_Latn", "wol": "wol_Latn", "xho": "xho_Latn", "yor": "yor_Latn",
              "zul": "zul_Latn"}  # fmt: skip
NUSAX = {"acehnese": "ace_Latn", "balinese": "ban_Latn", "banjarese": "bjn_Latn", "buginese": "bug_Latn",
         "english": "eng_Latn", "indonesian": "ind_Latn", "javanese": "jav_Latn", "minangkabau": "min_Latn",
         "sundanese": "sun_Latn"}  # fmt: skip
CLOSE_GROUPS = [
    ["ace_Latn", "ban_Latn", "bjn_Latn", "bug_Latn", "ind_Latn", "jav_Latn", "min_Latn", "sun_Latn"],
    ["xho_Latn", "zul_Latn", "nya_Latn", "sna_Latn", "tso_Latn"],
    ["amh_Ethi", "tir_Ethi", "mar_Deva", "npi_Deva"],
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ data


def sib200(split: str) -> dict[str, list[str]]:
    root = DATA / "topic" / "sib200"
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        with (folder / f"{split}.tsv").open(encoding="utf-8", newline="") as handle:
            out[folder.name] = [row["text"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return out


def afrisenti(limit: int) -> dict[str, list[str]]:
    out = {}
    for folder, code in AFRISENTI.items():
        with (DATA / "sentiment" / "afrisenti" / folder / "test.tsv").open(encoding="utf-8", newline="") as handle:
            rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            out[code] = [row["tweet"] for row in rows if row["tweet"].strip()][:limit]
    return out


def masakhaner(limit: int) -> dict[str, list[str]]:
    out = {}
    for folder, code in MASAKHANER.items():
        sentences, tokens = [], []
        for line in (DATA / "ner" / "masakhaner2" / folder / "test.txt").read_text(encoding="utf-8").splitlines():
            if line.strip():
                tokens.append(line.split()[0])
            elif tokens:
                sentences.append(" ".join(tokens))
                tokens = []
        if tokens:
            sentences.append(" ".join(tokens))
        out[code] = sentences[:limit]
    return out


def nusax(limit: int) -> dict[str, list[str]]:
    out = {}
    for folder, code in NUSAX.items():
        with (DATA / "sentiment" / "nusax_senti" / folder / "test.csv").open(encoding="utf-8", newline="") as handle:
            out[code] = [row["text"] for row in csv.DictReader(handle)][:limit]
    return out


# ------------------------------------------------------------------------------------------ detectors


def head_detector(engine: Any) -> Callable[[list[str]], list[tuple[str, float, bool]]]:
    def detect(texts: list[str]) -> list[tuple[str, float, bool]]:
        found = []
        for start in range(0, len(texts), 256):
            found += [(d.language, d.score, d.confident) for d in engine.identify(texts[start : start + 256])]
        return found

    return detect


def py3langid_detector(ours: set[str]) -> tuple[set[str], Callable[[list[str]], list[str | None]]]:
    import py3langid.langid as langid

    from langadapt.models.language import canonical_language

    langid.classify("warm up")
    mapping = {}
    for code in set(langid.IDENTIFIER.nb_classes):
        try:
            canonical = canonical_language(code)
        except ValueError:
            continue
        if canonical in ours:
            mapping[code] = canonical
    langid.set_languages(sorted(mapping))

    def detect(texts: list[str]) -> list[str | None]:
        return [mapping.get(langid.classify(text)[0]) for text in texts]

    return set(mapping.values()), detect


def lingua_detector(ours: set[str]) -> tuple[set[str], Callable[[list[str]], list[str | None]]]:
    from lingua import Language, LanguageDetectorBuilder

    from langadapt.models.language import canonical_language

    mapping = {}
    for language in Language.all():
        canonical = canonical_language(language.iso_code_639_3.name.lower())
        if canonical in ours:
            mapping[language] = canonical
    detector = LanguageDetectorBuilder.from_languages(*mapping).build()

    def detect(texts: list[str]) -> list[str | None]:
        return [
            mapping.get(found) if found is not None else None
            for found in detector.detect_languages_in_parallel_of(texts)
        ]

    return set(mapping.values()), detect


# ------------------------------------------------------------------------------------------ scoring


def score_set(
    texts: dict[str, list[str]],
    head: Callable[[list[str]], list[tuple[str, float, bool]]],
    others: dict[str, tuple[set[str], Callable[[list[str]], list[str | None]]]],
    predicted: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Per language: the head's accuracy, answered share and answered accuracy; each other detector's accuracy."""
    rows: dict[str, Any] = {}
    for code, items in texts.items():
        if not items:
            continue
        found = head(items)
        if predicted is not None:
            predicted[code] = [language for language, _, _ in found]
        right = [language == code for language, _, _ in found]
        answered = [confident for _, _, confident in found]
        kept = [r for r, a in zip(right, answered, strict=True) if a]
        row: dict[str, Any] = {
            "n": len(items),
            "head": sum(right) / len(items),
            "answered": sum(answered) / len(items),
            "answered_accuracy": sum(kept) / len(kept) if kept else None,
            "confused_with": _top_confusions([language for language, _, _ in found], code),
        }
        for name, (covered, detect) in others.items():
            if code in covered:
                predictions = detect(items)
                row[name] = sum(p == code for p in predictions) / len(items)
        rows[code] = row
    return rows


def _top_confusions(predicted: Sequence[str], truth: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code in predicted:
        if code != truth:
            counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1])[:3])


def averages(rows: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Means over languages: the head on all, and head vs each detector on the languages that detector covers."""
    out: dict[str, Any] = {"head": statistics.mean(r["head"] for r in rows.values())}
    out["answered"] = statistics.mean(r["answered"] for r in rows.values())
    for name in names:
        covered = [r for r in rows.values() if name in r]
        if covered:
            out[name] = {
                "languages": len(covered),
                name: statistics.mean(r[name] for r in covered),
                "head_same_languages": statistics.mean(r["head"] for r in covered),
            }
    return out


# ------------------------------------------------------------------------------------------ latency


def latency(engine: Any, repeats: int) -> dict[str, Any]:
    yo = "Adébáyọ̀ Ògúndélé ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja, ó sì lọ sí Èkó lánàá."
    sw = "Rais wa Kenya alizungumza na waandishi wa habari jijini Nairobi siku ya Jumatatu."
    out: dict[str, Any] = {}
    for size in (1, 16):
        texts = [yo if i % 2 == 0 else sw for i in range(size)]
        engine.identify(texts)
        engine.label("ner", "yo", texts)
        identify, label = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            engine.identify(texts)
            identify.append(time.perf_counter() - started)
        for _ in range(max(3, repeats // 20)):  # a forward pass costs thousands of identifications
            started = time.perf_counter()
            engine.label("ner", "yo", texts)
            label.append(time.perf_counter() - started)
        out[f"{size}_texts"] = {
            "identify_ms_median": 1000 * statistics.median(identify),
            "identify_ms_p90": 1000 * sorted(identify)[int(0.9 * len(identify))],
            "ner_ms_median": 1000 * statistics.median(label),
            "added_share": statistics.median(identify) / statistics.median(label),
        }
    identifier = engine._identifier[1]
    out["table_mib"] = identifier.nbytes / 2**20
    return out


# ------------------------------------------------------------------------------------------ figure


def confusion_figure(labels: list[str], confusion: list[list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = np.array(confusion, dtype=float)
    rates = matrix / matrix.sum(axis=1, keepdims=True)
    figure, axes = plt.subplots(1, len(CLOSE_GROUPS), figsize=(16, 5.4), gridspec_kw={"width_ratios": [8, 5, 4]})
    for axis, group in zip(axes, CLOSE_GROUPS, strict=True):
        index = [labels.index(code) for code in group]
        sub = rates[np.ix_(index, index)]
        axis.imshow(sub, cmap="Blues", vmin=0, vmax=1)
        names = [code.split("_")[0] for code in group]
        axis.set_xticks(range(len(group)), names, rotation=45)
        axis.set_yticks(range(len(group)), names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        for i in range(len(group)):
            for j in range(len(group)):
                count = int(matrix[index[i], index[j]])
                if count:
                    colour = "white" if sub[i, j] > 0.5 else "black"
                    axis.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    axes[0].set_title("Indonesian and its neighbours")
    axes[1].set_title("Southern Bantu (Nguni and others)")
    axes[2].set_title("Ethiopic, Devanagari")
    figure.suptitle("Language-ID head on SIB-200 test: counts of 204 sentences per language (rows), close groups")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 texts per language and data set")
    parser.add_argument("--per-language", type=int, default=500, help="out-of-domain texts per language")
    parser.add_argument("--repeats", type=int, default=200, help="latency repetitions")
    args = parser.parse_args()
    limit = 50 if args.quick else args.per_language

    import torch

    from langadapt.inference.engine import Engine
    from langadapt.inference.settings import InferenceSettings

    torch.set_num_threads(1)
    engine = Engine(InferenceSettings(threads=1, store=tempfile.mkdtemp(prefix="lid-bench-")))  # only the defaults
    engine.identify(["warm up"])
    identifier = engine._identifier[1]
    manifest = engine.stores.store(identifier.ref.source).get(identifier.ref.id, identifier.ref.version)
    ours = set(identifier.labels)
    head = head_detector(engine)
    others = {"py3langid": py3langid_detector(ours), "lingua": lingua_detector(ours)}
    names = list(others)
    log(f"head {identifier.ref}: {len(ours)} languages, threshold {identifier.threshold:.3f}")
    log("py3langid covers " + " ".join(sorted(others["py3langid"][0])))
    log("lingua covers " + " ".join(sorted(others["lingua"][0])))

    results: dict[str, Any] = {
        "head": {"ref": str(identifier.ref), "threshold": identifier.threshold, "manifest_metrics": manifest.metrics},
        "covered": {name: sorted(covered) for name, (covered, _) in others.items()},
        "machine": {"python": platform.python_version(), "torch_threads": 1},
    }
    sib_test = sib200("test")
    if args.quick:
        sib_test = {code: texts[:limit] for code, texts in sib_test.items()}
    sets = {
        "sib200_test": sib_test,
        "afrisenti_test": afrisenti(limit),
        "masakhaner_test": masakhaner(limit),
        "nusax_test": nusax(limit),
    }
    predicted: dict[str, list[str]] = {}
    for name, texts in sets.items():
        log(f"scoring {name} ({sum(len(t) for t in texts.values())} texts)")
        rows = score_set(texts, head, others, predicted if name == "sib200_test" else None)
        results[name] = {"languages": rows, "average": averages(rows, names)}
    labels = identifier.labels
    confusion = [[0] * len(labels) for _ in labels]
    for code, found in predicted.items():
        for language in found:
            confusion[labels.index(code)][labels.index(language)] += 1
    results["sib200_test"]["confusion"] = {"labels": labels, "counts": confusion}
    confusion_figure(labels, confusion, FIGURES / "confusion.png")
    log("latency")
    results["latency"] = latency(engine, 20 if args.quick else args.repeats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "language_id.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {RESULTS / 'language_id.json'} and {FIGURES / 'confusion.png'}")


if __name__ == "__main__":
    main()
