"""`lang: "auto"`: each text's language from the language-ID head on the worker's own base, then its routes.

`LanguageIdentifier` holds the store's newest `lid` head for the loaded base as a table of per-sub-word scores
(`LanguageIdHead.table`, vocabulary × languages, computed once from the base's input embeddings): identifying a
batch of texts is one tokenisation, one gather and one softmax, with no transformer layer, so it adds well under
a millisecond per text to a request (measured in docs/language-id.md). `route_texts` then routes every text as if
the client had sent its language: a text identified below the confidence threshold gets a 422 asking for `lang`
instead of a guess, and a batch of texts in several languages is routed text by text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from langadapt.errors import StoreError
from langadapt.inference.errors import ServeError
from langadapt.inference.routing import Route
from langadapt.models.kinds import LID_TASK
from langadapt.models.language import display_name
from langadapt.models.language_id import LanguageIdHead, content_ids
from langadapt.models.store_view import AdapterRef, LayeredStore

log = logging.getLogger(__name__)

AUTO = "auto"
UNCERTAIN = "language_not_identified"
CANDIDATES = 3  # languages listed per detection, most probable first


def is_auto(code: str | None) -> bool:
    """Whether a client's language code asks for identification."""
    return code is not None and code.strip().lower() == AUTO


@dataclass(frozen=True)
class Detection:
    """One text's identified language, its probability, the runners-up, and whether it passes the threshold."""

    language: str
    score: float
    threshold: float
    candidates: tuple[tuple[str, float], ...] = ()

    @property
    def confident(self) -> bool:
        """Whether the text may be routed to this language (below the threshold the client must say `lang`)."""
        return self.score >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        """JSON form for responses and labelled rows."""
        return {
            "language": self.language,
            "name": display_name(self.language),
            "score": self.score,
            "confident": self.confident,
            "threshold": self.threshold,
            "candidates": [{"label": code, "score": score} for code, score in self.candidates],
        }


class LanguageIdentifier:
    """A language-ID head ready to score texts: its per-sub-word table, bias, labels and threshold."""

    def __init__(self, ref: AdapterRef, head: LanguageIdHead, embeddings: torch.Tensor, threshold: float | None = None):
        self.ref = ref
        self.labels = list(head.labels)
        self.table = head.table(embeddings)
        self.bias = head.bias.float()
        self.head = head
        self.threshold = head.threshold if threshold is None else float(threshold)

    @property
    def nbytes(self) -> int:
        """Bytes of the score table."""
        return self.table.numel() * self.table.element_size()

    def identify(self, tokenizer: Any, texts: Sequence[str]) -> list[Detection]:
        """One detection per text, in order."""
        if not texts:
            return []
        ids = content_ids(tokenizer, texts)
        vocab = self.table.shape[0]
        ids = [[i for i in row if 0 <= i < vocab] for row in ids]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
        owners = torch.tensor([n for n, row in enumerate(ids) for _ in row], dtype=torch.long)
        with torch.inference_mode():
            sums = torch.zeros((len(ids), self.table.shape[1]), dtype=torch.float32)
            if len(flat):
                sums.index_add_(0, owners, self.table.index_select(0, flat))
            counts = torch.tensor([max(1, len(row)) for row in ids], dtype=torch.float32)
            logits = self.head.calibrated(sums / counts[:, None] + self.bias, counts)
            probs = torch.softmax(logits, dim=-1)
            top, index = probs.topk(min(CANDIDATES, probs.shape[1]), dim=-1)
        out = []
        for scores, which, row in zip(top.tolist(), index.tolist(), ids, strict=True):
            candidates = tuple((self.labels[i], float(s)) for i, s in zip(which, scores, strict=True))
            # a text with no sub-word the head knows (only spaces, only unknown pieces) is never confident
            score = candidates[0][1] if row else 0.0
            out.append(Detection(candidates[0][0], score, self.threshold, candidates))
        return out


def find_head(stores: LayeredStore, fingerprint: str) -> AdapterRef | None:
    """The newest `lid` head trained on this base (the writable store's ids shadow the defaults)."""
    found = [
        c for c in stores.candidates() if c.manifest.task == LID_TASK and c.manifest.base_fingerprint == fingerprint
    ]
    if not found:
        return None
    best = max(found, key=lambda c: (c.ref.source == "store", c.ref.version))
    return best.ref


def load_identifier(
    stores: LayeredStore,
    fingerprint: str,
    embeddings: Callable[[], torch.Tensor],
    threshold: float | None = None,
) -> LanguageIdentifier:
    """The identifier for the store's newest head on this base; ServeError 503 when there is none or it is broken."""
    ref = find_head(stores, fingerprint)
    if ref is None:
        raise ServeError(
            503,
            "language_id_unavailable",
            "this server has no language-identification head for its base model",
            "send `lang` with the texts' language code, or publish one (`langadapt train lid --store ...`)",
        )
    try:
        _, folder = stores.open_ref(ref, fingerprint)
        head = LanguageIdHead.from_folder(folder)
        identifier = LanguageIdentifier(ref, head, embeddings(), threshold)
    except StoreError as err:
        raise ServeError(
            503,
            "language_id_unavailable",
            f"the language-ID head {ref} cannot be used: {err.message}",
            "send `lang`, or publish a working head",
        ) from None
    log.info("language ID: %s, %d languages, threshold %.3f", ref, len(identifier.labels), identifier.threshold)
    return identifier


# ------------------------------------------------------------------------------------------- routing


@dataclass
class AutoText:
    """One text of an `auto` request: its detection, then its route per task, or the error that answers it."""

    detection: Detection | None
    routes: dict[str, Route] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    error: ServeError | None = None


def uncertain_error(detection: Detection) -> ServeError:
    """The per-text 422 for a language identified below the threshold: ask for `lang`, never guess."""
    return ServeError(
        422,
        UNCERTAIN,
        f"the language of this text could not be identified with confidence: the best guess, "
        f"{display_name(detection.language)} ({detection.language}), scored {detection.score:.2f}, below the threshold "
        f"{detection.threshold:.2f}",
        'send `lang` with the text\'s language code (e.g. "lang": "yo"), or a longer text',
        extra={"detected": detection.as_dict()},
    )


def route_texts(
    detections: Sequence[Detection],
    resolve: Callable[[str, str], Route],
    tasks: Sequence[str],
    explicit: bool,
) -> list[AutoText]:
    """Each text's routes for its detected language, as if the client had sent that code.

    With `explicit` tasks (the client named them), a task the language lacks is that text's 404, as for a named
    language; otherwise the text runs the tasks its language has and the others are listed as unavailable.
    """
    out: list[AutoText] = []
    for detection in detections:
        if not detection.confident:
            out.append(AutoText(detection, error=uncertain_error(detection)))
            continue
        text = AutoText(detection)
        missing: dict[str, ServeError] = {}
        for task in tasks:
            try:
                text.routes[task] = resolve(task, detection.language)
            except ServeError as err:
                missing[task] = err
        if missing and (explicit or not text.routes):
            first = next(iter(missing.values()))
            detail = "; ".join(err.detail for err in missing.values())
            extra = {**first.extra, "detected": detection.as_dict()}
            text.routes.clear()
            text.error = ServeError(
                first.status,
                first.error,
                f"detected {display_name(detection.language)}: {detail}",
                first.hint,
                extra=extra,
            )
        else:
            text.unavailable = {task: err.detail for task, err in missing.items()}
        out.append(text)
    return out


def group_by_route(plans: Sequence[AutoText]) -> list[tuple[str, Route, list[int]]]:
    """(task, route, text indices) for every routed (task, language) of the texts, in first-seen order."""
    groups: dict[tuple[str, str], tuple[Route, list[int]]] = {}
    for index, plan in enumerate(plans):
        for task, route in plan.routes.items():
            groups.setdefault((task, route.language), (route, []))[1].append(index)
    return [(task, route, members) for (task, _), (route, members) in groups.items()]
