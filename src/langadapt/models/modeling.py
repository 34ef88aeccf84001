"""Building `adapters` models on a base encoder: task adapters, heads, and adapters to and from the store.

Shared by language-adapter (MLM) and task-adapter training, evaluation and the torch serving backend. Every
adapter is saved with `use_safetensors=True` and loaded only from a store folder the store has verified
(checksums, no pickles, matching base fingerprint), so nothing is ever unpickled. Adapter and head share one
module name per adapter, derived from its store id by `module_name`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from langadapt.errors import LangadaptError, StoreError
from langadapt.models.base import quiet_transformers
from langadapt.models.kinds import (
    ADAPTER_WEIGHTS,
    CLASSIFICATION,
    DEFAULT_KIND,
    FULL_KIND,
    FULL_MODEL_WEIGHTS,
    HEAD_WEIGHTS,
    LANGUAGE_TASK,
    TASK_HEAD_TYPES,
    get_kind,
)

if TYPE_CHECKING:
    from langadapt.models.base import BaseModelInfo
    from langadapt.models.manifest import Manifest
    from langadapt.models.store import AdapterStore
    from langadapt.models.store_view import LayeredStore

__all__ = [
    "activate",
    "add_head",
    "add_task_adapter",
    "base_info",
    "cast_safetensors",
    "drop_heads",
    "load_adapter_model",
    "load_language_adapter",
    "load_stack",
    "load_task_adapter",
    "module_name",
    "quiet_activation",
    "save_task_adapter",
]

BASE_ATTRIBUTE = "langadapt_base"  # the BaseModelInfo a model was built from, kept on the model


def load_adapter_model(info: BaseModelInfo) -> Any:
    """The base encoder as an `adapters` flex-head model (fp32, eval mode), remembering `info` on it.

    A masked-LM checkpoint brings its pretrained LM head as the head `default` (the MLM trainer uses it);
    task training removes it with `drop_heads`.
    """
    from adapters import AutoAdapterModel

    with quiet_transformers():
        model = AutoAdapterModel.from_pretrained(str(info.path), local_files_only=True, dtype=torch.float32)
    setattr(model, BASE_ATTRIBUTE, info)
    model.eval()
    return model


def base_info(model: Any, info: BaseModelInfo | None = None) -> BaseModelInfo:
    """The BaseModelInfo the model was built from (`info` wins when given)."""
    found = info if info is not None else getattr(model, BASE_ATTRIBUTE, None)
    if found is None:
        raise ValueError("the model does not say which base it was built from: build it with load_adapter_model()")
    return found


def module_name(adapter_id: str) -> str:
    """The module name an adapter and its head take inside a model (store ids may hold '.', modules may not)."""
    return adapter_id.replace(".", "_")


def add_task_adapter(model: Any, name: str, kind: str = DEFAULT_KIND, **overrides: Any) -> Any:
    """Add a fresh adapter of `kind` (paper defaults, plus overrides) named `name`; return its config."""
    config = get_kind(kind).build_config(**overrides)
    model.add_adapter(name, config=config)
    return config


def add_head(model: Any, name: str, task: str, labels: Sequence[str]) -> str:
    """Add the head for `task` named `name` with `labels` in output order; return its head type.

    Topic and sentiment get the `adapters` classification head (two layers on the first token), NER a tagging
    head (one linear layer per token).
    """
    if task not in TASK_HEAD_TYPES:
        raise ValueError(f"no head for task {task!r}; expected one of {sorted(TASK_HEAD_TYPES)}")
    if len(labels) < 2:
        raise LangadaptError(
            f"the {task} head needs at least 2 labels, got {list(labels)}",
            "check the training file's label column",
        )
    id2label = dict(enumerate(labels))
    head_type = TASK_HEAD_TYPES[task]
    if head_type == CLASSIFICATION:
        model.add_classification_head(name, num_labels=len(labels), id2label=id2label)
    else:
        model.add_tagging_head(name, num_labels=len(labels), id2label=id2label)
    return head_type


def drop_heads(model: Any, keep: Iterable[str] = ()) -> list[str]:
    """Delete every head except those in `keep` (e.g. the converted MLM head); return the names deleted."""
    keep = set(keep)
    dropped = [name for name in list(getattr(model, "heads", {})) if name not in keep]
    for name in dropped:
        model.delete_head(name)
    return dropped


@contextlib.contextmanager
def quiet_activation() -> Iterator[None]:
    """Hide the `adapters` warning 'none are activated' that every first activation logs (it resets LoRA first)."""
    logger = logging.getLogger("adapters.model_mixin")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def activate(model: Any, task_name: str, language_name: str | None = None) -> None:
    """Route the forward pass through `Stack(language, task)` (or the task adapter alone) and its head."""
    from adapters.composition import Stack

    with quiet_activation():
        model.active_adapters = Stack(language_name, task_name) if language_name else Stack(task_name)
    model.active_head = task_name


def _open_verified(
    store: AdapterStore | LayeredStore, adapter_id: str, version: int | None, info: BaseModelInfo
) -> tuple[Manifest, Path]:
    """Open a stored adapter for `info`'s base (checksums and fingerprint checked) and insist on safetensors."""
    manifest, folder = store.open(adapter_id, version, expected_fingerprint=info.fingerprint)
    wanted = FULL_MODEL_WEIGHTS if manifest.kind == FULL_KIND else ADAPTER_WEIGHTS
    if wanted not in manifest.files:
        raise StoreError(
            f"adapter {manifest.id} v{manifest.version} has no {wanted}",
            hint="publish folders written by save_task_adapter or model.save_adapter(..., use_safetensors=True)",
        )
    return manifest, folder


def load_language_adapter(
    model: Any,
    store: AdapterStore | LayeredStore,
    adapter_id: str,
    version: int | None = None,
    *,
    load_as: str | None = None,
    with_head: bool = False,
    info: BaseModelInfo | None = None,
) -> Manifest:
    """Load a language (MLM) adapter from the store into `model` as `load_as` (default `module_name(id)`).

    Its LM head is left out unless `with_head`: stacked under a task adapter it is never used.
    """
    manifest, folder = _open_verified(store, adapter_id, version, base_info(model, info))
    if manifest.task != LANGUAGE_TASK:
        raise LangadaptError(
            f"{manifest.id} is a {manifest.task} adapter, not a language (mlm) adapter",
            "pass the id of an adapter trained with `langadapt train lang`",
        )
    model.load_adapter(
        str(folder), load_as=load_as or module_name(manifest.id), with_head=with_head, use_safetensors=True
    )
    return manifest


def load_task_adapter(
    model: Any,
    store: AdapterStore | LayeredStore,
    adapter_id: str,
    version: int | None = None,
    *,
    load_as: str | None = None,
    info: BaseModelInfo | None = None,
) -> Manifest:
    """Load a task adapter and its head (or a `full` fine-tuned model and its head) from the store.

    Adapter and head take the name `load_as` (default `module_name(id)`). A `full` model's weights replace
    the base weights of `model` in place.
    """
    manifest, folder = _open_verified(store, adapter_id, version, base_info(model, info))
    name = load_as or module_name(manifest.id)
    if manifest.kind == FULL_KIND:
        missing, unexpected = load_model(model.base_model, folder / FULL_MODEL_WEIGHTS, strict=False)
        if unexpected or missing:
            raise StoreError(
                f"{manifest.id} v{manifest.version} does not fit this base model: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}",
                hint="load it on the base model it was trained from",
            )
        model.load_head(str(folder), load_as=name, use_safetensors=True)
    else:
        model.load_adapter(str(folder), load_as=name, with_head=True, use_safetensors=True)
    if name not in getattr(model, "heads", {}):
        raise StoreError(f"{manifest.id} v{manifest.version} holds no prediction head", hint="retrain it")
    return manifest


def load_stack(
    model: Any,
    store: AdapterStore | LayeredStore,
    adapter_id: str,
    version: int | None = None,
    *,
    language_adapter: str | None = None,
    language_version: int | None = None,
) -> tuple[Manifest, Manifest | None]:
    """Load a task adapter plus the language adapter it was trained on (or the one given), and activate both.

    A task adapter trained stacked records its language adapter in `manifest.language_adapter`.
    """
    task_manifest = load_task_adapter(model, store, adapter_id, version)
    lang_manifest = None
    recorded = task_manifest.language_adapter
    lang_id, lang_version = language_adapter, language_version
    if not language_adapter and recorded is not None:
        lang_id, lang_version = recorded.id, language_version or recorded.version
    if lang_id:
        lang_manifest = load_language_adapter(model, store, lang_id, lang_version)
    if task_manifest.kind == FULL_KIND:
        model.active_adapters = None
        model.active_head = module_name(task_manifest.id)
    else:
        activate(model, module_name(task_manifest.id), module_name(lang_manifest.id) if lang_manifest else None)
    return task_manifest, lang_manifest


def cast_safetensors(path: Path, dtype: torch.dtype = torch.float16) -> None:
    """Rewrite a safetensors file with its floating-point tensors cast to `dtype` (integers untouched)."""
    tensors = load_file(path)
    cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(cast, path)


def save_task_adapter(model: Any, name: str, out_dir: Path, *, fp16: bool = False, full_model: bool = False) -> Path:
    """Write adapter `name` and its head (or, with `full_model`, the whole base plus head) as safetensors.

    The folder is what the store publishes: `adapter_config.json` + `adapter.safetensors` +
    `head_config.json` + `model_head.safetensors`, or `model.safetensors` + the head files for a full model.
    With `fp16` the weights are stored as float16 (they load back into fp32 models).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if full_model:  # save_model drops the aliases the adapters library keeps (prompt tuning's embedding view)
        save_model(model.base_model, str(out_dir / FULL_MODEL_WEIGHTS))
        model.save_head(str(out_dir), name, use_safetensors=True)
    else:
        model.save_adapter(str(out_dir), name, with_head=True, use_safetensors=True)
    if not (out_dir / HEAD_WEIGHTS).is_file():
        raise ValueError(f"the model has no head named {name!r} to save with the adapter")
    if fp16:
        for file in sorted(out_dir.glob("*.safetensors")):
            cast_safetensors(file)
    return out_dir
