"""Builders shared by the export tests: a tiny store holding language and task adapters of every kind."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from adapters import AutoAdapterModel

from langadapt.export.runtime import cuda_available
from langadapt.models.base import BaseModelInfo, resolve_base_model
from langadapt.models.kinds import get_kind
from langadapt.models.store import AdapterStore

ATOL = 1e-4  # the fp32 parity bound
needs_cuda = pytest.mark.skipif(
    not cuda_available(), reason="onnxruntime has no CUDA provider here (bench/gpu_check.sh installs onnxruntime-gpu)"
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy machine thread hand-offs dominate their run time.

    Autouse in every export test module that imports it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TOPICS = ["business", "health", "politics", "sports", "travel"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
# Language adapters: store id -> kind.
LANGUAGE_ADAPTERS = {
    "yor_Latn-mlm-seq_bn": "seq_bn",
    "yor_Latn-mlm-seq_bn_inv": "seq_bn_inv",
    "yor_Latn-mlm-lora": "lora",
}
# Task adapters: store id -> (language, task, kind, language adapter id or None).
TASK_ADAPTERS: dict[str, tuple[str, str, str, str | None]] = {
    "ibo_Latn-topic": ("ibo_Latn", "topic", "seq_bn", None),
    "yor_Latn-topic": ("yor_Latn", "topic", "seq_bn", "yor_Latn-mlm-seq_bn"),
    "hau_Latn-ner": ("hau_Latn", "ner", "seq_bn", "yor_Latn-mlm-seq_bn_inv"),
    "swh_Latn-sentiment": ("swh_Latn", "sentiment", "seq_bn", "yor_Latn-mlm-lora"),
    "kin_Latn-topic": ("kin_Latn", "topic", "seq_bn_inv", "yor_Latn-mlm-seq_bn_inv"),
    "lug_Latn-topic": ("lug_Latn", "topic", "lora", "yor_Latn-mlm-lora"),
}


@dataclass
class TinyStore:
    """A store with every adapter of `LANGUAGE_ADAPTERS` and `TASK_ADAPTERS` published on one tiny base."""

    store: AdapterStore
    info: BaseModelInfo


def perturb(model: Any, names: list[str], scale: float = 0.3, seed: int = 7) -> None:
    """Add seeded noise to every weight of the named adapters and heads, so each one changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if any(f".{name}." in f".{key}" for name in names):
                param.add_(torch.randn(param.shape, generator=generator) * scale)


def build_tiny_store(model_dir: Path, root: Path) -> TinyStore:
    """Publish seeded random adapters of every kind (and their heads) built with the `adapters` library."""
    info = resolve_base_model(str(model_dir))
    store = AdapterStore(root)
    model = AutoAdapterModel.from_pretrained(model_dir).eval()
    folders = root.parent / f"{root.name}-folders"
    folders.mkdir(parents=True, exist_ok=True)
    for adapter_id, kind in LANGUAGE_ADAPTERS.items():
        name = adapter_id.replace("-", "_")
        model.add_adapter(name, config=get_kind(kind).build_config())
        perturb(model, [name])
        model.save_adapter(str(folders / adapter_id), name, with_head=False, use_safetensors=True)
        store.import_adapters_folder(
            folders / adapter_id,
            language="yor_Latn",
            task="mlm",
            kind=kind,
            base_model=str(model_dir),
            base_fingerprint=info.fingerprint,
            id=adapter_id,
        )
    for adapter_id, (language, task, kind, lang_id) in TASK_ADAPTERS.items():
        name = adapter_id.replace("-", "_")
        model.add_adapter(name, config=get_kind(kind).build_config())
        if task == "ner":
            model.add_tagging_head(name, num_labels=len(TAGS), id2label=dict(enumerate(TAGS)))
        else:
            labels = TOPICS if task == "topic" else ["negative", "neutral", "positive"]
            model.add_classification_head(name, num_labels=len(labels), id2label=dict(enumerate(labels)))
        perturb(model, [name], seed=len(name))
        model.save_adapter(str(folders / adapter_id), name, with_head=True, use_safetensors=True)
        lang = store.get(lang_id) if lang_id else None
        store.import_adapters_folder(
            folders / adapter_id,
            language=language,
            task=task,
            kind=kind,
            base_model=str(model_dir),
            base_fingerprint=info.fingerprint,
            id=adapter_id,
            extra={"language_adapter": {"id": lang.id, "version": lang.version} if lang else None, "max_length": 64},
        )
    return TinyStore(store, info)
