"""Parity checks of exported graphs against the PyTorch reference, at stated tolerances.

- fp32 fused graph: max absolute logit difference ≤ `FP32_ATOL` on tokenised text (padding positions excluded).
- int8 / fp16 fused graph: predicted-label agreement ≥ `MIN_AGREEMENT` and task metric within `MAX_METRIC_DELTA`
  (one point) on a labelled set; without one, on the verification text scored against the reference's own
  predictions (recorded as such).
- swappable graph: one mixed batch of ≥ `MIN_SWAPPABLE_STACKS` different stacks, rows of different lengths and
  padding, gives row for row the logits of each stack run alone in the reference (≤ `FP32_ATOL` in fp32).

A failed check raises `ParityError` carrying the figures; the exporters publish only after a check passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from langadapt.export.errors import ExportError, ParityError
from langadapt.export.reference import Batch, ReferenceStack, encode, reference_logits
from langadapt.export.texts import VERIFICATION_TEXTS

if TYPE_CHECKING:
    from langadapt.export.runtime import FusedRuntime, SwappableRuntime
    from langadapt.models.bank import AdapterWeights, BankLayout
    from langadapt.models.heads import Head
    from langadapt.models.store import AdapterStore
    from langadapt.models.store_view import LayeredStore

__all__ = [
    "FP32_ATOL",
    "MAX_METRIC_DELTA",
    "MIN_AGREEMENT",
    "MIN_SWAPPABLE_STACKS",
    "CheckStack",
    "LabelledSet",
    "check_fused",
    "check_swappable",
    "verify_artifact",
]

FP32_ATOL = 1e-4
MIN_AGREEMENT = 0.99
MAX_METRIC_DELTA = 0.01  # one point of a metric in [0, 1]
MIN_SWAPPABLE_STACKS = 6
VERIFY_MAX_LENGTH = 128
_IOB = re.compile(r"^(O|[BI]-.+)$")


@dataclass(frozen=True)
class LabelledSet:
    """Texts with gold labels: strings and labels (classification), or word lists and one tag per word (tagging)."""

    texts: Sequence[str] | Sequence[Sequence[str]]
    labels: Sequence[str] | Sequence[Sequence[str]]
    source: str = "caller"

    def __post_init__(self) -> None:
        if not self.texts or len(self.texts) != len(self.labels):
            raise ExportError(
                f"a labelled set needs as many labels as texts, and at least one: {len(self.texts)} texts, "
                f"{len(self.labels)} labels",
                "pass texts and labels of equal length",
            )
        if self.words:
            for i, (words, tags) in enumerate(zip(self.texts, self.labels, strict=True)):
                if isinstance(tags, str) or len(words) != len(tags):
                    raise ExportError(f"labelled example {i}: {len(words)} words, {len(tags)} tags", "one tag a word")

    @property
    def words(self) -> bool:
        """Whether the texts are pre-split words (a tagging set)."""
        return not isinstance(self.texts[0], str)

    @classmethod
    def from_file(
        cls, path: Path | str, task: str, *, max_examples: int | None = 500, seed: int = 0, repair_iob: bool = False
    ) -> LabelledSet:
        """Read a task's labelled file (any format the training readers accept); a seeded sample of `max_examples`.

        `repair_iob` reads NER files as training read them with `--repair-iob` (a stray I-X becomes B-X).
        """
        from langadapt.training.readers import read_classification, read_ner

        path = Path(path)
        if not path.is_file():
            raise ExportError(f"labelled file {path} does not exist", "check the --eval path")
        if task == "ner":
            tagged = read_ner(path, repair_iob=repair_iob).examples
            pairs: list[tuple[Any, Any]] = [(list(e.tokens), list(e.tags)) for e in tagged]
        else:
            pairs = [(e.text, e.label) for e in read_classification(path).examples]
        if max_examples is not None and len(pairs) > max_examples:
            chosen = np.random.default_rng(seed).choice(len(pairs), size=max_examples, replace=False)
            pairs = [pairs[i] for i in sorted(chosen.tolist())]
        if not pairs:
            raise ExportError(f"{path} holds no labelled examples", "check the file and its format")
        return cls([p[0] for p in pairs], [p[1] for p in pairs], source=f"{path.name} ({len(pairs)} examples)")


def _as_words(texts: Sequence[str]) -> list[list[str]]:
    return [t.split() or [t] for t in texts]


def _argmax_rows(logits: np.ndarray, batch: Batch, head_type: str) -> list[Any]:
    """Per row: the label index (classification) or the per-token label indices of real tokens (tagging)."""
    best = logits.argmax(-1)
    if head_type == "classification":
        return [int(k) for k in best]
    return [best[i, : int(batch.attention_mask[i].sum())].tolist() for i in range(len(best))]


def _word_labels(token_labels: list[int], word_ids: list[int | None], n_words: int) -> list[int]:
    """Each word's label: its first sub-token's; words the truncation cut get -1."""
    out = [-1] * n_words
    seen: set[int] = set()
    for position, word in enumerate(word_ids[: len(token_labels)]):
        if word is not None and word not in seen and word < n_words:
            seen.add(word)
            out[word] = token_labels[position]
    return out


def _metric(head_type: str, labels: Sequence[str], gold: Sequence[Any], predicted: Sequence[Any]) -> tuple[str, float]:
    """The task figure: macro-F1 (classification), strict IOB2 entity F1 (IOB tag sets) or word accuracy."""
    from langadapt.training.metrics import classification_metrics, ner_metrics

    if head_type == "classification":
        return "macro_f1", classification_metrics(list(gold), list(predicted))["macro_f1"]
    if all(_IOB.match(label) for label in labels):
        return "f1", ner_metrics([list(g) for g in gold], [list(p) for p in predicted])["f1"]
    pairs = [(g, p) for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True)]
    return "accuracy", sum(g == p for g, p in pairs) / max(1, len(pairs))


@dataclass
class _Tally:
    """Running figures over batches: largest and mean difference, label agreement, per-row predictions."""

    max_diff: float = 0.0
    diff_sum: float = 0.0
    diff_count: int = 0
    agree: int = 0
    compared: int = 0
    flip_margin: float = 0.0  # the widest reference top-2 logit margin among flipped predictions
    ref_rows: list[Any] = field(default_factory=list)
    got_rows: list[Any] = field(default_factory=list)

    def add(self, ref: np.ndarray, got: np.ndarray, batch: Batch, head_type: str) -> None:
        if ref.shape != got.shape:
            raise ParityError(f"the graph returned logits of shape {got.shape}, the reference {ref.shape}")
        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        if head_type == "tagging":
            diff = diff[batch.attention_mask.astype(bool)]
        if not np.isfinite(diff).all():
            self.max_diff = float("inf")
        else:
            self.max_diff = max(self.max_diff, float(diff.max()))
        self.diff_sum += float(np.nan_to_num(diff, nan=1e9, posinf=1e9).sum())
        self.diff_count += diff.size
        top2 = np.sort(ref, axis=-1)[..., -2:]
        margin, flipped = top2[..., 1] - top2[..., 0], ref.argmax(-1) != got.argmax(-1)
        if head_type == "tagging":
            margin, flipped = margin[batch.attention_mask.astype(bool)], flipped[batch.attention_mask.astype(bool)]
        if flipped.any():
            self.flip_margin = max(self.flip_margin, float(margin[flipped].max()))
        ref_rows, got_rows = _argmax_rows(ref, batch, head_type), _argmax_rows(got, batch, head_type)
        for r, g in zip(ref_rows, got_rows, strict=True):
            pairs = [(r, g)] if head_type == "classification" else list(zip(r, g, strict=True))
            self.agree += sum(a == b for a, b in pairs)
            self.compared += len(pairs)
        self.ref_rows += ref_rows
        self.got_rows += got_rows


def _run_set(
    runtime: Callable[[Batch], np.ndarray], reference: ReferenceStack, batches: list[Batch], tally: _Tally
) -> None:
    for batch, ref in zip(batches, reference_logits(reference.model, batches), strict=True):
        tally.add(ref, runtime(batch), batch, reference.head_type)


def _names(
    rows: list[Any], batches: list[Batch], n_words: Sequence[int], head_type: str, labels: Sequence[str]
) -> list[Any]:
    """Label names per example: one per text, or one per word (cut words `O`)."""
    if head_type == "classification":
        return [labels[k] for k in rows]
    word_ids = [w for b in batches for w in (b.word_ids or [])]
    out = []
    for tokens, ids, n in zip(rows, word_ids, n_words, strict=True):
        out.append([labels[k] if k >= 0 else "O" for k in _word_labels(tokens, ids, n)])
    return out


def check_fused(
    runtime: FusedRuntime,
    reference: ReferenceStack,
    tokenizer: Any,
    *,
    precision: str,
    texts: Sequence[str] = VERIFICATION_TEXTS,
    labelled: LabelledSet | None = None,
    max_length: int = VERIFY_MAX_LENGTH,
) -> dict[str, Any]:
    """Compare a fused graph with the reference; return the figures, or raise `ParityError` with them."""
    head_type, labels = reference.head_type, reference.head.labels
    words = head_type == "tagging"
    if labelled is not None and labelled.words != words:
        raise ExportError(
            f"the labelled set is {'tagged words' if labelled.words else 'texts'}, the head is {head_type}",
            "give tagged sentences for a tagging head and labelled texts for a classification head",
        )

    def run(batch: Batch) -> np.ndarray:
        return runtime.run(batch.input_ids, batch.attention_mask)

    tally = _Tally()
    plain: Sequence[Any] = _as_words(texts) if words else texts
    plain_batches = encode(tokenizer, plain, max_length=max_length, words=words)
    _run_set(run, reference, plain_batches, tally)
    if labelled is not None:
        scored = _Tally()
        scored_batches = encode(tokenizer, labelled.texts, max_length=max_length, words=words)
        _run_set(run, reference, scored_batches, scored)
        tally.max_diff = max(tally.max_diff, scored.max_diff)
        tally.diff_sum += scored.diff_sum
        tally.diff_count += scored.diff_count
        tally.agree += scored.agree
        tally.compared += scored.compared
        tally.flip_margin = max(tally.flip_margin, scored.flip_margin)
        n_words = [len(t) for t in labelled.texts]
        gold: list[Any] = list(labelled.labels)
        ref_names = _names(scored.ref_rows, scored_batches, n_words, head_type, labels)
        got_names = _names(scored.got_rows, scored_batches, n_words, head_type, labels)
        source = f"labelled set: {labelled.source}"
    else:
        n_words = [len(t) for t in plain]
        ref_names = _names(tally.ref_rows, plain_batches, n_words, head_type, labels)
        got_names = _names(tally.got_rows, plain_batches, n_words, head_type, labels)
        gold = ref_names
        source = f"reference predictions on {len(plain)} verification texts (no labelled set given)"
    metric_name, ref_metric = _metric(head_type, labels, gold, ref_names)
    _, got_metric = _metric(head_type, labels, gold, got_names)
    agreement = tally.agree / max(1, tally.compared)
    figures: dict[str, Any] = {
        "precision": precision,
        "checked_on": runtime.device,
        "texts": len(plain) + (len(labelled.texts) if labelled is not None else 0),
        "max_length": max_length,
        "max_abs_diff": tally.max_diff,
        "mean_abs_diff": tally.diff_sum / max(1, tally.diff_count),
        "agreement": agreement,
        "compared": tally.compared,
        "flipped": tally.compared - tally.agree,
        "flipped_max_reference_margin": tally.flip_margin,
        "metric": {
            "name": metric_name,
            "reference": ref_metric,
            "export": got_metric,
            "delta": got_metric - ref_metric,
            "source": source,
        },
    }
    if precision == "fp32":
        figures["tolerance"] = {"max_abs_diff": FP32_ATOL}
        failed = not tally.max_diff <= FP32_ATOL
        why = f"max |logit difference| {tally.max_diff:.3g} > {FP32_ATOL:g}"
    else:
        figures["tolerance"] = {"agreement": MIN_AGREEMENT, "metric_delta": MAX_METRIC_DELTA}
        delta = abs(got_metric - ref_metric)
        failed = not (agreement >= MIN_AGREEMENT and delta <= MAX_METRIC_DELTA)
        why = (
            f"label agreement {agreement:.4f} (needs ≥ {MIN_AGREEMENT}), {metric_name} {got_metric:.4f} vs "
            f"reference {ref_metric:.4f} (needs within {MAX_METRIC_DELTA}); the flipped predictions had reference "
            f"top-2 logit margins ≤ {tally.flip_margin:.2f}"
        )
    figures["passed"] = not failed
    if failed:
        raise ParityError(
            f"the {precision} graph does not match the PyTorch reference: {why}",
            "nothing was published; export fp32, or report the figures if an fp32 export fails",
            figures,
        )
    return figures


@dataclass
class CheckStack:
    """One stack of a swappable check: its module names in the reference model, parsed weights and head."""

    key: str
    language: str | None
    task: str
    members: list[AdapterWeights | None]
    head: Head


def check_swappable(
    runtime: SwappableRuntime,
    model: Any,
    layout: BankLayout,
    stacks: Sequence[CheckStack],
    tokenizer: Any,
    *,
    precision: str = "fp32",
    texts: Sequence[str] = VERIFICATION_TEXTS,
    rows_per_stack: int = 2,
    max_length: int = 48,
) -> dict[str, Any]:
    """One mixed batch over every stack vs each row's stack alone in the reference; figures, or `ParityError`.

    fp32 must match within `FP32_ATOL`; fp16 must agree on `MIN_AGREEMENT` of the predicted labels.
    """
    from langadapt.models.bank import AdapterBank
    from langadapt.models.modeling import activate

    if len(stacks) < MIN_SWAPPABLE_STACKS:
        raise ExportError(f"the swappable check needs ≥ {MIN_SWAPPABLE_STACKS} stacks, got {len(stacks)}")
    bank = AdapterBank(layout, capacity=len(stacks) + 1)
    for stack in stacks:
        bank.add_members(stack.key, stack.members)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: list[tuple[CheckStack, list[int]]] = []
    for s, stack in enumerate(stacks):
        for r in range(rows_per_stack):
            text = texts[(s * rows_per_stack + r * 7) % len(texts)]
            rows.append((stack, tokenizer(text, truncation=True, max_length=max_length)["input_ids"]))
    order = np.random.default_rng(0).permutation(len(rows))  # stacks interleaved: none owns a block of the batch
    rows = [rows[i] for i in order]
    longest = max(len(ids) for _, ids in rows)
    input_ids = np.full((len(rows), longest), pad, dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for b, (_, ids) in enumerate(rows):
        input_ids[b, : len(ids)] = ids
        mask[b, : len(ids)] = 1
    index = np.array([bank.index_of(stack.key) for stack, _ in rows], dtype=np.int64)
    tensors = {name: t.numpy() for name, t in bank.tensors().items()}
    hidden = torch.from_numpy(runtime.hidden_states(input_ids, mask, index, tensors))

    per_stack: dict[str, float] = {}
    agree = compared = 0
    with torch.no_grad():
        for b, (stack, ids) in enumerate(rows):
            activate(model, stack.task, stack.language)
            row = torch.tensor([ids])
            ref = model(input_ids=row, attention_mask=torch.ones_like(row)).logits[0].float()
            got = stack.head(hidden[b : b + 1, : len(ids)])[0].float()
            diff = float((ref - got).abs().max()) if bool(torch.isfinite(got).all()) else float("inf")
            per_stack[stack.key] = max(per_stack.get(stack.key, 0.0), diff)
            same = ref.argmax(-1) == got.argmax(-1)
            agree += int(same.sum())
            compared += same.numel()
    worst = max(per_stack.values())
    agreement = agree / max(1, compared)
    figures: dict[str, Any] = {
        "precision": precision,
        "checked_on": runtime.device,
        "stacks": len(stacks),
        "rows": len(rows),
        "lengths": sorted({len(ids) for _, ids in rows}),
        "max_abs_diff": worst,
        "max_abs_diff_per_stack": per_stack,
        "agreement": agreement,
    }
    if precision == "fp32":
        figures["tolerance"] = {"max_abs_diff": FP32_ATOL}
        failed = not worst <= FP32_ATOL
        bad = sorted(k for k, v in per_stack.items() if not v <= FP32_ATOL)
        why = f"max |logit difference| {worst:.3g} > {FP32_ATOL:g} (stacks {bad})"
    else:
        figures["tolerance"] = {"agreement": MIN_AGREEMENT}
        failed = not agreement >= MIN_AGREEMENT
        why = f"label agreement {agreement:.4f} < {MIN_AGREEMENT}"
    figures["passed"] = not failed
    if failed:
        raise ParityError(
            f"the {precision} swappable graph's mixed batch differs from each stack alone: {why}",
            "nothing was published; report the figures",
            figures,
        )
    return figures


def verify_artifact(
    store: LayeredStore | AdapterStore,
    artifact_id: str,
    version: int | None = None,
    *,
    labelled: LabelledSet | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Re-run an artifact's parity check: checksums (store), then the graph against the PyTorch reference."""
    manifest = store.get(artifact_id, version)
    if manifest.artifact == "onnx-fused":
        from langadapt.export.fused import reverify_fused

        return reverify_fused(store, manifest, labelled=labelled, device=device, threads=threads)
    if manifest.artifact == "onnx-swappable":
        from langadapt.export.swappable import reverify_swappable

        return reverify_swappable(store, manifest, device=device, threads=threads)
    raise ExportError(
        f"{manifest.id} v{manifest.version} is an {manifest.artifact!r}, not an ONNX export",
        "pass the id of an onnx-fused or onnx-swappable artifact (`langadapt adapters list`)",
    )
