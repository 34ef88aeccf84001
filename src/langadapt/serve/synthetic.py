"""Random adapters for tests and benchmarks: real `adapters`-library folders with perturbed weights, published.

Speed and plumbing do not depend on what an adapter learned, so tests and `bench/serve.py` build language and
task adapters with the `adapters` library on any base model, perturb every adapter and head weight (the library
starts bottleneck up-projections at zero, the identity), save them as safetensors and publish them into a store,
with manifests shaped like the ones `langadapt train task` writes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from langadapt.models.base import BaseModelInfo
from langadapt.models.kinds import DEFAULT_KIND, LANGUAGE_TASK, TAGGING, TASK_HEAD_TYPES, get_kind
from langadapt.models.manifest import AdapterVersion, Manifest, adapter_id
from langadapt.models.store import AdapterStore

LABELS: dict[str, tuple[str, ...]] = {
    "topic": ("entertainment", "geography", "health", "politics", "science/technology", "sports", "travel"),
    "sentiment": ("negative", "neutral", "positive"),
    "ner": ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"),
}


class AdapterFactory:
    """Builds, perturbs, saves and publishes random adapters on one base model."""

    def __init__(self, info: BaseModelInfo, *, seed: int = 0, scale: float = 0.05) -> None:
        from adapters import AutoAdapterModel
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            self.model: Any = AutoAdapterModel.from_pretrained(str(info.path), local_files_only=True)
        finally:
            hf_logging.set_verbosity(level)
        self.model.eval()
        self.info = info
        self.scale = scale
        self._generator = torch.Generator().manual_seed(seed)

    def _perturb(self, name: str) -> None:
        """Add seeded noise to every weight of adapter (and head) `name`."""
        with torch.no_grad():
            for param_name, param in self.model.named_parameters():
                parts = param_name.split(".")
                if name in parts and ("adapters" in parts or "loras" in parts or "invertible_adapters" in parts):
                    noise = torch.randn(param.shape, generator=self._generator) * self.scale
                    param.add_(noise.to(param.dtype))

    def save_language_adapter(self, name: str, out_dir: Path, kind: str = DEFAULT_KIND, *, keep: bool = False) -> Path:
        """A language (MLM) adapter's folder, without a head."""
        self.model.add_adapter(name, config=get_kind(kind).build_config())
        self._perturb(name)
        self.model.save_adapter(str(out_dir), name, with_head=False, use_safetensors=True)
        if not keep:
            self.model.delete_adapter(name)
        return out_dir

    def save_task_adapter(
        self, name: str, task: str, out_dir: Path, labels: tuple[str, ...] | None = None, *, keep: bool = False
    ) -> Path:
        """A task adapter's folder with its classification or tagging head."""
        labels = labels or LABELS[task]
        self.model.add_adapter(name, config=get_kind(DEFAULT_KIND).build_config())
        id2label = dict(enumerate(labels))
        if TASK_HEAD_TYPES[task] == TAGGING:
            self.model.add_tagging_head(name, num_labels=len(labels), id2label=id2label)
        else:
            self.model.add_classification_head(name, num_labels=len(labels), id2label=id2label)
        self._perturb(name)
        with torch.no_grad():  # spread head weights too, so labels differ between adapters
            for param in self.model.heads[name].parameters():
                param.add_(torch.randn(param.shape, generator=self._generator) * self.scale * 4)
        self.model.save_adapter(str(out_dir), name, with_head=True, use_safetensors=True)
        if not keep:
            self.model.delete_head(name)
            self.model.delete_adapter(name)
        return out_dir

    def publish_language_adapter(
        self, store: AdapterStore, language: str, kind: str = DEFAULT_KIND, *, keep: bool = False, **fields: Any
    ) -> Manifest:
        """Publish a random language adapter `<language>-mlm-<kind>`."""
        ident = fields.pop("id", adapter_id(language, LANGUAGE_TASK, kind))
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_language_adapter(ident.replace(".", "_"), Path(tmp), kind, keep=keep)
            return store.import_adapters_folder(
                folder,
                language=language,
                task=LANGUAGE_TASK,
                kind=kind,
                base_model=self.info.id,
                base_fingerprint=self.info.fingerprint,
                id=ident,
                **fields,
            )

    def publish_task_adapter(
        self,
        store: AdapterStore,
        language: str,
        task: str,
        *,
        language_adapter: Manifest | None = None,
        record_language: bool = True,
        max_length: int = 128,
        stride: int = 32,
        keep: bool = False,
        **fields: Any,
    ) -> Manifest:
        """Publish a random task adapter `<language>-<task>`, recording its language adapter like training does."""
        ident = fields.pop("id", adapter_id(language, task))
        typed: dict[str, Any] = {"max_length": max_length, "stride": stride}
        if record_language:
            typed["language_adapter"] = (
                AdapterVersion(id=language_adapter.id, version=language_adapter.version) if language_adapter else None
            )
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_task_adapter(ident.replace(".", "_"), task, Path(tmp), keep=keep)
            return store.import_adapters_folder(
                folder,
                language=language,
                task=task,
                kind=DEFAULT_KIND,
                base_model=self.info.id,
                base_fingerprint=self.info.fingerprint,
                id=ident,
                **{**typed, **fields},
            )
