"""Train the language-identification head (`models.language_id`) from SIB-200's parallel splits, then publish it.

A run is a sequence of named steps sharing nothing but their arguments:

1. `read_parallel`: every language's train / dev / test sentences, keyed by SIB-200's `index_id`, and a check that
   no id (the same sentence, translated) is in two splits;
2. `with_short_spans`: each sentence plus random spans of a few of its words, so the head (and its threshold) also
   see the short texts clients send;
3. `embed`: each text as the mean of its sub-words' rows of the base's input embedding matrix, and their count;
4. `fit_head`: a multinomial logistic regression on standardised features (L-BFGS), the L2 strength chosen on
   dev, the standardisation folded into the weights;
5. `calibrate_length`: the logits' scale as a function of the text's sub-word count, fitted on dev;
6. `choose_threshold`: the lowest confidence at which dev precision (sentences and short spans) reaches the goal;
7. `evaluate`: accuracy, macro F1 and per-language F1 on test, and on test's short spans what share is answered
   and how accurately at that threshold;
8. `publish_head`: the head into the store as `any-lid` (task `lid`), metrics and licence in its manifest.
"""

from __future__ import annotations

import csv
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from langadapt.errors import LangadaptError
from langadapt.models.base import load_tokenizer, resolve_base_model
from langadapt.models.kinds import LANGUAGE_ID, LID_KIND, LID_TASK
from langadapt.models.language import canonical_language
from langadapt.models.language_id import FEATURES, LanguageIdHead, content_ids, mean_rows, read_input_embeddings
from langadapt.models.manifest import Manifest, adapter_id
from langadapt.models.store import AdapterStore

SPLITS = ("train", "dev", "test")
SPAN_WORDS = (1, 2, 3, 5, 8)  # lengths of the short spans added per sentence
LICENCE = "CC-BY-SA-4.0"  # SIB-200 (FLORES-200 text)


@dataclass(frozen=True)
class LanguageIdSettings:
    """What one language-ID training run reads, how it fits, and where it publishes."""

    data: Path = field(metadata={"help": "SIB-200 folder: <lang>/{train,dev,test}.tsv with index_id and text"})
    base: str = field(default="embedded", metadata={"help": "base model whose input embeddings the head reads"})
    store: str | None = field(default=None, metadata={"help": "store to publish into (None: do not publish)"})
    languages: tuple[str, ...] = field(default=(), metadata={"help": "language folders to use (empty: all)"})
    spans_per_sentence: int = field(default=2, metadata={"help": "short spans added per sentence, every split"})
    strengths: tuple[float, ...] = field(default=(1e-3, 1e-4, 1e-5), metadata={"help": "L2 strengths tried"})
    precision: float = field(default=0.99, metadata={"help": "dev precision the confidence threshold must reach"})
    max_iter: int = field(default=100, metadata={"help": "L-BFGS iterations per strength"})
    seed: int = field(default=13, metadata={"help": "seed of the span sampling"})
    cache: Path | None = field(default=None, metadata={"help": "folder to cache features in (reruns are cheap)"})


@dataclass
class Split:
    """One split of every language: texts, their language index, their sentence id, and whether a short span."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    short: list[bool] = field(default_factory=list)

    def add(self, text: str, label: int, ident: int, short: bool = False) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.ids.append(ident)
        self.short.append(short)


# ---------------------------------------------------------------------------------------------- steps


def read_parallel(data: Path, languages: Sequence[str] = ()) -> tuple[list[str], dict[str, Split]]:
    """Canonical codes in label order, and every split of every language; refuses a sentence id in two splits."""
    folders = [data / name for name in languages] if languages else sorted(p for p in data.iterdir() if p.is_dir())
    if not folders:
        raise LangadaptError(f"no language folders in {data}", "point --data at SIB-200's folder (<lang>/train.tsv)")
    codes = [canonical_language(folder.name) for folder in folders]
    splits = {name: Split() for name in SPLITS}
    seen: dict[str, set[int]] = {name: set() for name in SPLITS}
    for label, folder in enumerate(folders):
        for name in SPLITS:
            path = folder / f"{name}.tsv"
            if not path.is_file():
                raise LangadaptError(f"missing {path}", "every language needs train.tsv, dev.tsv and test.tsv")
            with path.open(encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                    ident = int(row["index_id"])
                    splits[name].add(row["text"], label, ident)
                    seen[name].add(ident)
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        shared = seen[a] & seen[b]
        if shared:
            raise LangadaptError(
                f"{len(shared)} sentence ids are in both {a} and {b} (e.g. {sorted(shared)[:3]})",
                "split by index_id so that no sentence's translation is in two splits",
            )
    return codes, splits


def with_short_spans(split: Split, per_sentence: int, seed: int) -> Split:
    """The split plus `per_sentence` random spans of 1-8 consecutive words of each sentence (marked short)."""
    rng = random.Random(seed)  # noqa: S311 - sampling spans, not secrets
    out = Split()
    for text, label, ident in zip(split.texts, split.labels, split.ids, strict=True):
        out.add(text, label, ident)
        words = text.split()
        for _ in range(per_sentence):
            size = min(len(words), rng.choice(SPAN_WORDS))
            start = rng.randrange(len(words) - size + 1)
            out.add(" ".join(words[start : start + size]), label, ident, short=True)
    return out


def embed(
    tokenizer: Any, embeddings: torch.Tensor, texts: Sequence[str], batch: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Each text as the mean of its sub-words' input embeddings ([N, H] float32), and its sub-word count ([N])."""
    rows: list[np.ndarray] = []
    counts: list[int] = []
    for start in range(0, len(texts), batch):
        ids = content_ids(tokenizer, texts[start : start + batch])
        rows.append(mean_rows(embeddings, ids).numpy())
        counts.extend(len(row) for row in ids)
    features = np.concatenate(rows) if rows else np.zeros((0, embeddings.shape[1]), dtype=np.float32)
    return features, np.array(counts, dtype=np.float32)


def fit_head(
    train: tuple[np.ndarray, np.ndarray],
    dev: tuple[np.ndarray, np.ndarray],
    labels: list[str],
    strengths: Sequence[float],
    max_iter: int,
) -> tuple[LanguageIdHead, dict[str, float]]:
    """The best head on dev accuracy among L2 `strengths`; standardisation folded in; dev accuracy per strength.

    A multinomial logistic regression, `mean cross-entropy + strength · |W|²`, fitted by full-batch L-BFGS in float32
    (strongest first, each fit starting from the previous solution: the path converges in few iterations).
    """
    x, y = torch.from_numpy(train[0]).float(), torch.from_numpy(train[1]).long()
    mean, std = x.mean(dim=0), x.std(dim=0) + 1e-6
    x = (x - mean) / std
    dev_x, dev_y = (torch.from_numpy(dev[0]).float() - mean) / std, torch.from_numpy(dev[1]).long()
    weight = torch.zeros((len(labels), x.shape[1]), requires_grad=True)
    bias = torch.zeros(len(labels), requires_grad=True)
    scores: dict[str, float] = {}
    best: tuple[float, float, torch.Tensor, torch.Tensor] | None = None
    for strength in sorted(strengths, reverse=True):
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure(strength: float = strength, optimizer: torch.optim.LBFGS = optimizer) -> torch.Tensor:
            optimizer.zero_grad()
            loss = functional.cross_entropy(x @ weight.T + bias, y) + strength * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            accuracy = float(((dev_x @ weight.T + bias).argmax(dim=1) == dev_y).float().mean())
        scores[str(strength)] = accuracy
        if best is None or accuracy > best[0]:
            best = (accuracy, strength, weight.detach().clone(), bias.detach().clone())
    assert best is not None
    _, strength, fitted, offset = best
    folded = fitted / std[None, :]
    head = LanguageIdHead(labels, folded, offset - folded @ mean, extra={"l2": strength})
    return head, scores


def calibrate_length(head: LanguageIdHead, features: np.ndarray, counts: np.ndarray, labels: np.ndarray) -> None:
    """Set the head's `scale · n^power` on the logits to the values that maximise dev likelihood."""
    logits = (torch.from_numpy(features).float() @ head.weight.T + head.bias).detach()
    n = torch.from_numpy(counts).float().clamp(min=1.0)
    y = torch.from_numpy(labels).long()
    log_scale, power = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_scale, power], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = functional.cross_entropy(logits * (log_scale.exp() * n.pow(power))[:, None], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    head.scale, head.power = float(log_scale.detach().exp()), float(power.detach())


def probabilities(head: LanguageIdHead, features: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Softmax of the head's length-calibrated logits for precomputed mean-embedding features."""
    with torch.no_grad():
        logits = torch.from_numpy(features).float() @ head.weight.T + head.bias
        return torch.softmax(head.calibrated(logits, torch.from_numpy(counts)), dim=-1).numpy()


def choose_threshold(probs: np.ndarray, labels: np.ndarray, precision: float) -> float:
    """The lowest confidence t such that the predictions with confidence ≥ t are right at least `precision` of the time.

    Walking from the most confident prediction down, the cut is placed after the last point where the running
    precision still reaches the goal; the threshold is that prediction's confidence.
    """
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    order = np.argsort(-confidence, kind="stable")
    running = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    meets = np.nonzero(running >= precision)[0]
    if len(meets) == 0:
        return 1.0
    return float(confidence[order[meets[-1]]])


def evaluate(probs: np.ndarray, labels: np.ndarray, codes: list[str], threshold: float) -> dict[str, Any]:
    """Accuracy, macro F1, per-language F1, the confusion matrix, and answered share / accuracy at the threshold."""
    from sklearn.metrics import confusion_matrix, f1_score

    predicted = probs.argmax(axis=1)
    confident = probs.max(axis=1) >= threshold
    per_language = f1_score(labels, predicted, labels=list(range(len(codes))), average=None, zero_division=0)
    return {
        "n": len(labels),
        "accuracy": float((predicted == labels).mean()),
        "macro_f1": float(per_language.mean()),
        "f1": {code: float(score) for code, score in zip(codes, per_language, strict=True)},
        "answered": float(confident.mean()),
        "answered_accuracy": float((predicted[confident] == labels[confident]).mean()) if confident.any() else None,
        "confusion": confusion_matrix(labels, predicted, labels=list(range(len(codes)))).tolist(),
    }


def publish_head(
    store: AdapterStore, head: LanguageIdHead, info: Any, metrics: dict[str, Any], training: dict[str, Any]
) -> Manifest:
    """The head into the store as the next version of `any-lid`."""
    with tempfile.TemporaryDirectory(prefix="langadapt-lid-") as tmp:
        head.save(Path(tmp))
        manifest = {
            "id": adapter_id(None, LID_TASK),
            "language": None,
            "task": LID_TASK,
            "kind": LID_KIND,
            "labels": head.labels,
            "head_type": LANGUAGE_ID,
            "base_model": info.id,
            "base_fingerprint": info.fingerprint,
            "metrics": metrics,
            "training": training,
            "extra": {"threshold": head.threshold, "features": FEATURES},
        }
        return store.publish(Path(tmp), manifest)


# ------------------------------------------------------------------------------------------------ run


def train_language_id(settings: LanguageIdSettings) -> dict[str, Any]:
    """Every step in order; the summary (metrics, threshold, the published id and version when published)."""
    started = time.perf_counter()
    info = resolve_base_model(settings.base)
    tokenizer = load_tokenizer(info)
    embeddings = read_input_embeddings(Path(info.path))
    codes, splits = read_parallel(settings.data, settings.languages)
    expanded = {
        name: with_short_spans(split, settings.spans_per_sentence, settings.seed + i)
        for i, (name, split) in enumerate(splits.items())
    }
    embedded = {name: _cached_features(settings, info, tokenizer, embeddings, name, s) for name, s in expanded.items()}
    features = {name: found[0] for name, found in embedded.items()}
    counts = {name: found[1] for name, found in embedded.items()}
    labels = {name: np.array(s.labels) for name, s in expanded.items()}
    short = {name: np.array(s.short) for name, s in expanded.items()}
    head, by_strength = fit_head(
        (features["train"], labels["train"]),
        (features["dev"], labels["dev"]),
        codes,
        settings.strengths,
        settings.max_iter,
    )
    calibrate_length(head, features["dev"], counts["dev"], labels["dev"])
    dev_probs = probabilities(head, features["dev"], counts["dev"])
    head.threshold = choose_threshold(dev_probs, labels["dev"], settings.precision)
    test_probs = probabilities(head, features["test"], counts["test"])
    full, spans = ~short["test"], short["test"]
    test = evaluate(test_probs[full], labels["test"][full], codes, head.threshold)
    test_spans = evaluate(test_probs[spans], labels["test"][spans], codes, head.threshold)
    dev = evaluate(dev_probs[~short["dev"]], labels["dev"][~short["dev"]], codes, head.threshold)
    metrics = {
        "test": {k: v for k, v in test.items() if k != "confusion"},
        "test_short_spans": {k: test_spans[k] for k in ("n", "accuracy", "answered", "answered_accuracy")},
        "validation": {k: dev[k] for k in ("n", "accuracy", "macro_f1")},
        "dev_accuracy_by_l2": by_strength,
        "threshold": head.threshold,
        "length_calibration": {"scale": head.scale, "power": head.power},
        "threshold_rule": f"lowest dev confidence with precision >= {settings.precision} (sentences + short spans)",
    }
    summary: dict[str, Any] = {
        "labels": codes,
        "metrics": metrics,
        "confusion": test["confusion"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    if settings.store is not None:
        params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()}
        training = {
            "data": [str(settings.data / "<lang>" / f"{name}.tsv") for name in ("train", "dev")],
            "licence": LICENCE,
            "params": {**params, "examples": {name: len(s.texts) for name, s in expanded.items()}},
        }
        manifest = publish_head(AdapterStore(settings.store), head, info, metrics, training)
        summary.update(id=manifest.id, version=manifest.version)
    return summary


def _cached_features(
    settings: LanguageIdSettings, info: Any, tokenizer: Any, embeddings: torch.Tensor, name: str, split: Split
) -> tuple[np.ndarray, np.ndarray]:
    """`embed` of a split, cached under `settings.cache` by base fingerprint, split and span settings."""
    if settings.cache is None:
        return embed(tokenizer, embeddings, split.texts)
    key = f"{info.fingerprint[:16]}-{name}-{len(split.texts)}-s{settings.spans_per_sentence}-{settings.seed}.npz"
    path = settings.cache / key
    if path.is_file():
        with np.load(path) as stored:
            return stored["features"], stored["counts"]
    features, counts = embed(tokenizer, embeddings, split.texts)
    settings.cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=features, counts=counts)
    return features, counts
