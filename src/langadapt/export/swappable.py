"""Swappable export: one base graph per base model whose adapter weights are graph inputs, plus weight packs.

The graph is `BankedEncoder` traced with the bank tensors as inputs (``input_ids, attention_mask, stack_index``,
then `BankLayout.tensor_names` in order; the stack count and padded ranks are dynamic axes) and the last hidden
states as output; heads run after it. **Weight packs are the store's adapter folders themselves**
(``adapter.safetensors`` + ``adapter_config.json``, plus the head files of task adapters), read by
`load_pack` through the store (checksums and base fingerprint checked) into `AdapterWeights` and `Head`: no
second copy of any weight, and adding a language is publishing its adapter, never a re-export.

The check before publishing runs one mixed batch over seven synthetic stacks that cover every kind and stack
shape (seeded, so `verify` rebuilds the same ones) plus up to four real stacks from the store, against each
stack alone in the `adapters` reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from langadapt.errors import FingerprintMismatchError, LangadaptError
from langadapt.export.artifacts import (
    as_view,
    check_out,
    library_versions,
    publish_artifact,
    staging,
    swappable_id,
)
from langadapt.export.errors import ExportError
from langadapt.export.graphs import OPSET, SWAPPABLE_OUTPUT, trace
from langadapt.export.parity import CheckStack, check_swappable
from langadapt.export.precision import checked_precisions, precision_label
from langadapt.export.runtime import SwappableRuntime, check_device
from langadapt.export.texts import VERIFICATION_TEXTS
from langadapt.models.bank import AdapterBank, AdapterWeights, BankedEncoder, BankLayout
from langadapt.models.heads import Head
from langadapt.models.kinds import (
    ADAPTER_ARTIFACT,
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BANK_KINDS,
    CLASSIFICATION,
    HEAD_CONFIG,
    HEAD_WEIGHTS,
    LABEL_HEAD_TYPES,
    SWAPPABLE_ARTIFACT,
    TAGGING,
    get_kind,
)
from langadapt.models.store_view import qualified_name, source_in

if TYPE_CHECKING:
    from langadapt.models.base import BaseModelInfo
    from langadapt.models.manifest import Manifest
    from langadapt.models.store import AdapterStore
    from langadapt.models.store_view import LayeredStore

__all__ = ["Pack", "build_check_stacks", "export_swappable", "load_pack", "reverify_swappable"]

PACK_FILES = [ADAPTER_WEIGHTS, ADAPTER_CONFIG, HEAD_WEIGHTS, HEAD_CONFIG]
MAX_STORE_STACKS = 4
CHECK_SEED = 20250214
CHECK_SCALE = 0.1  # std of the noise added to synthetic adapter weights, so every adapter changes the output
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
# Synthetic check stacks: key, language adapter kind (None: task adapter alone), task adapter kind, head type.
SYNTHETIC_STACKS: tuple[tuple[str, str | None, str, str], ...] = (
    ("task:seq_bn", None, "seq_bn", CLASSIFICATION),
    ("seq_bn+seq_bn", "seq_bn", "seq_bn", CLASSIFICATION),
    ("seq_bn_inv+seq_bn", "seq_bn_inv", "seq_bn", TAGGING),
    ("lora+seq_bn", "lora", "seq_bn", CLASSIFICATION),
    ("task:seq_bn_inv", None, "seq_bn_inv", TAGGING),
    ("lora+lora", "lora", "lora", CLASSIFICATION),
    ("seq_bn_inv+seq_bn_inv", "seq_bn_inv", "seq_bn_inv", TAGGING),
)


@dataclass
class Pack:
    """One adapter's weights in bank form (and its head, for task adapters), read from its store folder."""

    manifest: Manifest
    weights: AdapterWeights
    head: Head | None


def load_pack(
    store: LayeredStore | AdapterStore, adapter_id: str, version: int | None = None, *, fingerprint: str | None = None
) -> Pack:
    """An adapter's weight pack from the store (checksums verified; base fingerprint checked when given)."""
    manifest, folder = store.open(adapter_id, version, expected_fingerprint=fingerprint)
    if manifest.kind not in BANK_KINDS or manifest.artifact != ADAPTER_ARTIFACT:
        raise ExportError(
            f"{manifest.id} v{manifest.version} is a {manifest.kind} {manifest.artifact}; the swappable graph takes "
            f"{', '.join(BANK_KINDS)} adapters",
            "export it fused instead (`langadapt export fused`)",
        )
    try:
        weights = AdapterWeights.from_folder(folder)
    except ValueError as err:
        raise ExportError(f"{manifest.id} v{manifest.version}: {err}", "retrain it with a supported config") from err
    head = Head.from_folder(folder) if manifest.head_type in LABEL_HEAD_TYPES else None
    return Pack(manifest, weights, head)


def _synthetic_stacks(model: Any, layout: BankLayout, work: Path) -> list[CheckStack]:
    """Seeded random adapters of every kind on `model`, saved as packs and read back, as check stacks."""

    def config(kind: str) -> Any:
        if kind == "lora":
            return get_kind(kind).build_config(attn_matrices=list(layout.lora_matrices))
        return get_kind(kind).build_config(non_linearity=layout.non_linearity)

    plan: list[tuple[str, str | None, str, str]] = []
    for i, (key, lang_kind, task_kind, head_type) in enumerate(SYNTHETIC_STACKS):
        lang = f"check_lang_{lang_kind}" if lang_kind else None
        if lang is not None and lang not in model.adapters_config:
            model.add_adapter(lang, config=config(lang_kind or ""))
        task = f"check_task_{i}"
        model.add_adapter(task, config=config(task_kind))
        if head_type == CLASSIFICATION:
            model.add_classification_head(task, num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})
        else:
            model.add_tagging_head(task, num_labels=len(TAGS), id2label=dict(enumerate(TAGS)))
        plan.append((key, lang, task, head_type))
    generator = torch.Generator().manual_seed(CHECK_SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".check_" in f".{name}":
                param.add_(torch.randn(param.shape, generator=generator) * CHECK_SCALE)
    model.eval()
    packs: dict[str, AdapterWeights] = {}
    stacks = []
    for key, lang, task, _ in plan:
        for name in (lang, task):
            if name is not None and name not in packs:
                model.save_adapter(str(work / name), name, with_head=name == task, use_safetensors=True)
                packs[name] = AdapterWeights.from_folder(work / name)
        members = [packs[lang] if lang else None, packs[task]]
        stacks.append(CheckStack(key, lang, task, members, Head.from_folder(work / task)))
    return stacks


def _store_stacks(
    model: Any, store: LayeredStore | AdapterStore, info: BaseModelInfo, layout: BankLayout
) -> tuple[list[CheckStack], dict[str, str]]:
    """Up to `MAX_STORE_STACKS` real task adapters of this base (with their language adapters) as check stacks."""
    from langadapt.models.modeling import load_language_adapter, load_task_adapter, module_name

    stacks: list[CheckStack] = []
    skipped: dict[str, str] = {}
    candidates = [
        m
        for m in store.list()
        if m.artifact == ADAPTER_ARTIFACT
        and m.head_type in LABEL_HEAD_TYPES
        and m.base_fingerprint == info.fingerprint
        and m.kind in BANK_KINDS
    ]
    for manifest in candidates[:MAX_STORE_STACKS]:
        recorded = manifest.language_adapter
        try:
            lang = None
            if recorded is not None:
                lang = load_pack(store, recorded.id, recorded.version, fingerprint=info.fingerprint)
            task = load_pack(store, manifest.id, manifest.version, fingerprint=info.fingerprint)
            members = [lang.weights if lang else None, task.weights]
            AdapterBank(layout, capacity=2).set_members(1, members)  # refuses what the layout cannot hold
            lang_name = None
            if lang is not None:
                lang_name = module_name(lang.manifest.id)
                if lang_name not in model.adapters_config:
                    load_language_adapter(model, store, lang.manifest.id, lang.manifest.version, info=info)
            load_task_adapter(model, store, manifest.id, manifest.version, info=info)
        except (LangadaptError, ValueError) as err:
            skipped[manifest.id] = str(err)
            continue
        assert task.head is not None
        name = qualified_name(manifest.id, source_in(store, manifest.id))
        stacks.append(CheckStack(f"store:{name}", lang_name, module_name(manifest.id), members, task.head))
    return stacks, skipped


def build_check_stacks(
    model: Any, store: LayeredStore | AdapterStore | None, info: BaseModelInfo, layout: BankLayout, work: Path
) -> tuple[list[CheckStack], dict[str, str]]:
    """The stacks a swappable graph is checked with: the synthetic ones, then real ones from the store (view)."""
    stacks = _synthetic_stacks(model, layout, work)
    skipped: dict[str, str] = {}
    if store is not None:
        real, skipped = _store_stacks(model, store, info, layout)
        stacks += real
    return stacks, skipped


def _layout_dict(layout: BankLayout) -> dict[str, Any]:
    return {
        "num_layers": layout.num_layers,
        "hidden_size": layout.hidden_size,
        "slots": layout.slots,
        "lora_matrices": list(layout.lora_matrices),
        "non_linearity": layout.non_linearity,
    }


def build_swappable_graph(
    model: Any,
    layout: BankLayout,
    tokenizer: Any,
    work: Path,
    stacks: list[CheckStack],
    *,
    precision: str = "fp32",
    optimize: bool | None = None,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Trace the banked encoder in `work`, optimise and convert it, checking every graph kept."""
    encoder = BankedEncoder(model, layout).eval()
    bank = AdapterBank(layout, capacity=2)  # the smallest shapes: stack count and ranks are dynamic axes
    encoded = tokenizer(list(VERIFICATION_TEXTS[:2]), padding=True, return_tensors="np")
    args = (
        torch.from_numpy(np.asarray(encoded["input_ids"], dtype=np.int64)),
        torch.from_numpy(np.asarray(encoded["attention_mask"], dtype=np.int64)),
        torch.tensor([0, 1]),
        *bank.tensors().values(),
    )
    raw = trace(
        encoder,
        args,
        work / "traced.onnx",
        input_names=encoder.input_names,
        output_names=[SWAPPABLE_OUTPUT],
        dynamic_axes=encoder.dynamic_axes(),
    )

    def check(path: Path, label: str, device: str = "cpu") -> dict[str, Any]:
        runtime = SwappableRuntime.from_graph(path, device=device)  # type: ignore[arg-type]
        return check_swappable(runtime, model, layout, stacks, tokenizer, precision=label)

    return checked_precisions(
        raw,
        work,
        check,
        precision=precision,
        optimize=optimize,
        num_heads=model.config.num_attention_heads,
        hidden_size=layout.hidden_size,
    )


def _load_model(info: BaseModelInfo) -> Any:
    from langadapt.models.modeling import drop_heads, load_adapter_model

    model = load_adapter_model(info)
    drop_heads(model)
    return model


def export_swappable(
    store: LayeredStore | AdapterStore | Path | str | None,
    *,
    base: str = "embedded",
    precision: str = "fp32",
    optimize: bool | None = None,
    out: Path | str | None = None,
    slots: int = 2,
    lora_matrices: tuple[str, ...] = ("q", "v"),
    non_linearity: str = "relu",
) -> Manifest:
    """Export the swappable base graph of `base`, check a mixed batch of ≥ 6 stacks, publish it to the store.

    The layout (stack positions, LoRA matrices, bottleneck activation) fixes which adapters the graph can take;
    the defaults take every paper kind, as language + task stacks. `store` as for `export_fused`: real check
    stacks come from the adapters it shows (packaged defaults included), the graph goes to its writable store.
    """
    from langadapt.models.base import load_tokenizer, resolve_base_model
    from langadapt.models.manifest import Manifest

    started = time.perf_counter()
    label = precision_label(precision, None)
    out_dir = Path(out) if out is not None else None
    check_out(out_dir)
    store = as_view(store)
    info = resolve_base_model(base)
    model = _load_model(info)
    try:
        layout = BankLayout.from_model_config(
            model.config, slots=slots, lora_matrices=tuple(lora_matrices), non_linearity=non_linearity
        )
        BankedEncoder(model, layout)
    except (TypeError, ValueError) as err:
        raise ExportError(f"base {info.id!r} cannot take a swappable graph: {err}", "export stacks fused") from err
    tokenizer = load_tokenizer(info)
    with staging() as work:
        stacks, skipped = build_check_stacks(model, store, info, layout, work)
        graph, parity, steps = build_swappable_graph(
            model, layout, tokenizer, work, stacks, precision=label, optimize=optimize
        )
        encoder_names = ["input_ids", "attention_mask", "stack_index", *layout.tensor_names()]
        manifest = Manifest(
            id=swappable_id(info.fingerprint, label),
            language=None,
            task="encoder",
            kind=SWAPPABLE_ARTIFACT,
            base_model=info.id,
            base_fingerprint=info.fingerprint,
            metrics={"parity": parity},
            artifact=SWAPPABLE_ARTIFACT,
            precision=label,
            layout=_layout_dict(layout),
            extra={
                "opset": OPSET,
                "inputs": encoder_names,
                "outputs": [SWAPPABLE_OUTPUT],
                "tensor_axes": {k: list(v) for k, v in layout.tensor_axes().items()},
                "packs": {
                    "format": "store adapter folders as save_adapter(use_safetensors=True) writes them",
                    "files": PACK_FILES,
                    "reader": "langadapt.export.swappable.load_pack",
                    "kinds": list(BANK_KINDS),
                },
                "check_stacks": [s.key for s in stacks],
                "check_skipped": skipped,
                **steps,
                "graph_bytes": graph.stat().st_size,
                "export_seconds": round(time.perf_counter() - started, 2),
                "versions": library_versions(),
            },
        )
        return publish_artifact(store, graph, manifest, work, out_dir)


def reverify_swappable(
    store: LayeredStore | AdapterStore, manifest: Manifest, *, device: str = "auto", threads: int | None = None
) -> dict[str, Any]:
    """Re-run a swappable graph's check: store checksums, then the mixed batch against each stack alone."""
    from langadapt.models.base import load_tokenizer, resolve_base_model

    _, folder = store.open(manifest.id, manifest.version)
    info = resolve_base_model(manifest.base_model)
    if info.fingerprint != manifest.base_fingerprint:
        raise FingerprintMismatchError(
            f"{manifest.id} was exported from base fingerprint {manifest.base_fingerprint[:12]}…, "
            f"{manifest.base_model!r} now has {info.fingerprint[:12]}…",
            "export it again from the current base",
        )
    model = _load_model(info)
    saved = manifest.layout or {}
    layout = BankLayout(**{**saved, "lora_matrices": tuple(saved["lora_matrices"])})
    precision = manifest.precision or "fp32"
    runtime = SwappableRuntime(folder, device=check_device(precision, device), threads=threads)  # type: ignore[arg-type]
    with staging() as work:
        stacks, skipped = build_check_stacks(model, store, info, layout, work)
        figures = check_swappable(runtime, model, layout, stacks, load_tokenizer(info), precision=precision)
    figures["skipped"] = skipped
    return {"id": manifest.id, "version": manifest.version, "artifact": manifest.artifact, "parity": figures}
