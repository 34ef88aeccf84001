"""The PyTorch reference every export is checked against, and the tokenised text it is checked on.

The reference is the `adapters` library model with ``Stack(language, task)`` active, loaded from the store by the
same calls training and the torch backend use (checksums and base fingerprint verified). Text is tokenised with
the base model's own tokenizer and right-padded into batches, as the serving engine pads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from langadapt.export.errors import ExportError
from langadapt.models.bank import AdapterWeights
from langadapt.models.heads import Head
from langadapt.models.kinds import ADAPTER_ARTIFACT, FULL_KIND, LABEL_HEAD_TYPES, LANGUAGE_TASK, MODEL_ARTIFACT
from langadapt.models.manifest import SourceAdapter
from langadapt.models.store_view import STORE, address, source_in

if TYPE_CHECKING:
    from langadapt.models.base import BaseModelInfo
    from langadapt.models.manifest import Manifest
    from langadapt.models.store import AdapterStore
    from langadapt.models.store_view import LayeredStore

__all__ = [
    "Batch",
    "ReferenceStack",
    "StackSources",
    "encode",
    "load_reference",
    "reference_logits",
    "resolve_sources",
]


@dataclass(frozen=True)
class StackSources:
    """The stored adapters one stack is made of: a task adapter, and the language adapter under it (if any).

    Each with the layer of the store view it came from (`store` or `default`), so an artifact names exactly the
    adapters it was exported from even when a store id shadows a packaged default of the same id.
    """

    task: Manifest
    language: Manifest | None
    task_source: str = STORE
    language_source: str = STORE

    def as_sources(self) -> list[SourceAdapter]:
        """Ids, versions, kinds and layers, in stack order, for an artifact manifest's `sources`."""
        roles: tuple[Literal["language", "task"], ...] = ("language", "task")
        rows = zip(roles, (self.language, self.task), (self.language_source, self.task_source), strict=True)
        return [
            SourceAdapter(role=role, id=m.id, version=m.version, kind=m.kind, source=source)  # type: ignore[arg-type]
            for role, m, source in rows
            if m is not None
        ]


def resolve_sources(
    store: AdapterStore | LayeredStore,
    task_adapter_id: str,
    lang_adapter_id: str | None,
    *,
    task_version: int | None = None,
    lang_version: int | None = None,
) -> StackSources:
    """The manifests of a stack's adapters, refusing a task adapter without a head or a non-MLM language adapter.

    Names resolve through the store view when `store` is one (`default:<id>` for a packaged default).
    """
    task = store.get(task_adapter_id, task_version)
    if task.head_type not in LABEL_HEAD_TYPES or task.task == LANGUAGE_TASK:
        raise ExportError(
            f"{task.id} v{task.version} is a {task.task} adapter without a classification or tagging head",
            "export a task adapter (topic, sentiment, ner); language adapters are exported under one",
        )
    if task.artifact not in (ADAPTER_ARTIFACT, MODEL_ARTIFACT):
        raise ExportError(f"{task.id} is an {task.artifact} artifact, not an adapter", "pass a task adapter's id")
    language, language_source = None, STORE
    if lang_adapter_id is not None:
        language, language_source = store.get(lang_adapter_id, lang_version), source_in(store, lang_adapter_id)
        if language.task != LANGUAGE_TASK:
            raise ExportError(
                f"{language.id} is a {language.task} adapter, not a language (mlm) adapter",
                "pass --lang-adapter the id of an adapter trained with `langadapt train lang`",
            )
        if task.kind == FULL_KIND:
            raise ExportError(
                f"{task.id} is a fully fine-tuned model; it takes no language adapter", "leave out the language adapter"
            )
    return StackSources(task, language, source_in(store, task_adapter_id), language_source)


@dataclass
class ReferenceStack:
    """An `adapters` model with one stack active, the same stack's parsed weights, and its head."""

    model: Any
    members: list[AdapterWeights | None]
    head: Head
    sources: StackSources

    @property
    def head_type(self) -> str:
        """`classification` or `tagging`."""
        return self.head.head_type


def load_reference(store: AdapterStore | LayeredStore, sources: StackSources, info: BaseModelInfo) -> ReferenceStack:
    """Load the stack from the store onto the base model and activate it; the fingerprint must match."""
    from langadapt.models.modeling import (
        activate,
        drop_heads,
        load_adapter_model,
        load_language_adapter,
        load_task_adapter,
        module_name,
    )

    model = load_adapter_model(info)
    drop_heads(model)
    task, lang = sources.task, sources.language
    task_name = address(store, task.id, sources.task_source)
    lang_name = address(store, lang.id, sources.language_source) if lang is not None else ""
    if lang is not None:
        load_language_adapter(model, store, lang_name, lang.version, info=info)
    load_task_adapter(model, store, task_name, task.version, info=info)
    if task.kind == FULL_KIND:
        model.active_adapters = None
        model.active_head = module_name(task.id)
    else:
        activate(model, module_name(task.id), module_name(lang.id) if lang is not None else None)
    model.eval()
    task_folder = store.path(task_name, task.version)
    members: list[AdapterWeights | None] = []
    if task.kind != FULL_KIND:
        lang_weights = AdapterWeights.from_folder(store.path(lang_name, lang.version)) if lang is not None else None
        members = [lang_weights, AdapterWeights.from_folder(task_folder)]
    head = Head.from_folder(task_folder)
    if head.labels != list(task.labels) and task.labels:
        raise ExportError(
            f"{task.id} v{task.version}: its head's labels {head.labels} differ from its manifest's {task.labels}",
            "republish the adapter from the folder save_adapter wrote",
        )
    return ReferenceStack(model=model, members=members, head=head, sources=sources)


@dataclass
class Batch:
    """Right-padded token ids and mask (int64), the rows they hold, and each token's word index (tagging)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    rows: list[int]
    word_ids: list[list[int | None]] | None = None

    def feeds(self) -> dict[str, np.ndarray]:
        """The inputs of a fused graph."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def encode(
    tokenizer: Any,
    texts: Sequence[str] | Sequence[Sequence[str]],
    *,
    max_length: int = 128,
    batch_size: int = 16,
    words: bool = False,
) -> list[Batch]:
    """Tokenise `texts` (word lists when `words`) into right-padded batches of `batch_size`, cut at `max_length`."""
    if not texts:
        raise ExportError("no text to verify the export on", "give at least one text")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches: list[Batch] = []
    for start in range(0, len(texts), batch_size):
        chunk = [list(t) if words else t for t in texts[start : start + batch_size]]
        encoded = tokenizer(chunk, truncation=True, max_length=max_length, is_split_into_words=words)
        rows = encoded["input_ids"]
        longest = max(len(r) for r in rows)
        ids = np.full((len(rows), longest), pad, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        word_ids = [encoded.word_ids(i) for i in range(len(rows))] if words else None
        batches.append(Batch(ids, mask, list(range(start, start + len(rows))), word_ids))
    return batches


@torch.no_grad()
def reference_logits(model: Any, batches: Sequence[Batch]) -> list[np.ndarray]:
    """The reference model's logits (float32) for each batch."""
    out = []
    for batch in batches:
        ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
        out.append(model(input_ids=ids, attention_mask=mask).logits.float().numpy())
    return out
