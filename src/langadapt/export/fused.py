"""Fused export: one adapter stack and its head baked into one ONNX graph, verified, then published.

Path: the stack is loaded from the store onto the base model (the PyTorch reference), rebuilt as a `FusedModel`
(LoRA merged, bottlenecks and NICE as constants), traced, optimised (kept only if it still matches the reference
within 1e-4), quantised to int8 or converted to fp16 on request, checked again at that precision, and only then
published as an ``onnx-fused`` artifact whose manifest names the source adapters, the base fingerprint, the
opset, the precision and the parity figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from langadapt.errors import FingerprintMismatchError
from langadapt.export.artifacts import (
    as_view,
    check_out,
    fused_id,
    library_versions,
    publish_artifact,
    staging,
)
from langadapt.export.errors import ExportError
from langadapt.export.graphs import FUSED_INPUTS, FUSED_OUTPUT, OPSET, FusedModel, fused_dynamic_axes, trace
from langadapt.export.parity import LabelledSet, check_fused
from langadapt.export.precision import checked_precisions, precision_label
from langadapt.export.reference import (
    ReferenceStack,
    StackSources,
    encode,
    load_reference,
    resolve_sources,
)
from langadapt.export.runtime import FusedRuntime, check_device
from langadapt.export.texts import VERIFICATION_TEXTS
from langadapt.models.kinds import FUSED_ARTIFACT, TAGGING
from langadapt.models.store_view import address

if TYPE_CHECKING:
    from collections.abc import Sequence

    from langadapt.models.base import BaseModelInfo
    from langadapt.models.manifest import Manifest
    from langadapt.models.store import AdapterStore
    from langadapt.models.store_view import LayeredStore

__all__ = ["build_fused_graph", "export_fused", "reverify_fused"]


def _base_for(sources: StackSources, base: str | None) -> BaseModelInfo:
    """The base model the stack was trained on (or `base`), refusing one with another fingerprint."""
    from langadapt.models.base import resolve_base_model

    info = resolve_base_model(base or sources.task.base_model)
    for manifest in (sources.language, sources.task):
        if manifest is not None and manifest.base_fingerprint != info.fingerprint:
            raise FingerprintMismatchError(
                f"{manifest.id} v{manifest.version} was trained on base {manifest.base_model!r} "
                f"({manifest.base_fingerprint[:12]}…), not on {info.id!r} ({info.fingerprint[:12]}…)",
                f"pass --base {manifest.base_model}",
            )
    return info


def build_fused_graph(
    reference: ReferenceStack,
    tokenizer: Any,
    work: Path,
    *,
    precision: str,
    optimize: bool | None = None,
    texts: Sequence[str] = VERIFICATION_TEXTS,
    labelled: LabelledSet | None = None,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Trace, optimise and convert the stack in `work`, checking every graph kept; (graph, parity figures, steps)."""
    config = reference.model.config
    head = reference.head
    module = FusedModel(reference.model, reference.members, head).eval()
    tagging = head.head_type == TAGGING
    example = encode(tokenizer, [t.split() for t in texts[:2]] if tagging else list(texts[:2]), words=tagging)[0]
    raw = trace(
        module,
        (torch.from_numpy(example.input_ids), torch.from_numpy(example.attention_mask)),
        work / "traced.onnx",
        input_names=FUSED_INPUTS,
        output_names=[FUSED_OUTPUT],
        dynamic_axes=fused_dynamic_axes(head.head_type),
    )
    del module

    def check(path: Path, label: str, device: str = "cpu") -> dict[str, Any]:
        runtime = FusedRuntime.from_graph(path, head.labels, head.head_type, device=device)  # type: ignore[arg-type]
        return check_fused(runtime, reference, tokenizer, precision=label, texts=texts, labelled=labelled)

    return checked_precisions(
        raw,
        work,
        check,
        precision=precision,
        optimize=optimize,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )


def export_fused(
    store: LayeredStore | AdapterStore | Path | str | None,
    lang_adapter_id: str | None,
    task_adapter_id: str,
    *,
    base: str | None = None,
    precision: str = "fp32",
    quantize: str | None = None,
    optimize: bool | None = None,
    out: Path | str | None = None,
    labelled: LabelledSet | None = None,
    texts: Sequence[str] = VERIFICATION_TEXTS,
    task_version: int | None = None,
    lang_version: int | None = None,
) -> Manifest:
    """Export `Stack(lang, task)` (or the task adapter alone) as one verified ONNX graph published to the store.

    `store` is the view adapters are read through (a path or None: that writable store over the packaged
    defaults; an `AdapterStore`: that store alone); the artifact goes to its writable store. `base` defaults to
    the base the task adapter was trained on; `optimize` None applies the offline fusions where they were
    measured to pay (fp16); `labelled` (texts with gold labels) scores int8 and fp16 graphs on the task metric.
    Raises `ParityError` (nothing published) when a check fails.
    """
    from langadapt.models.base import load_tokenizer
    from langadapt.models.manifest import Manifest

    started = time.perf_counter()
    label = precision_label(precision, quantize)
    out_dir = Path(out) if out is not None else None
    check_out(out_dir)
    store = as_view(store)
    sources = resolve_sources(
        store, task_adapter_id, lang_adapter_id, task_version=task_version, lang_version=lang_version
    )
    info = _base_for(sources, base)
    reference = load_reference(store, sources, info)
    tokenizer = load_tokenizer(info)
    task = sources.task
    with staging() as work:
        graph, parity, steps = build_fused_graph(
            reference, tokenizer, work, precision=label, optimize=optimize, texts=texts, labelled=labelled
        )
        head = reference.head
        manifest = Manifest(
            id=fused_id(sources, label),
            language=task.language,
            task=task.task,
            kind=FUSED_ARTIFACT,
            labels=head.labels,
            head_type=head.head_type,
            base_model=info.id,
            base_fingerprint=info.fingerprint,
            metrics={"parity": parity, "source": task.metrics.get("test", {})},
            training=task.training,
            artifact=FUSED_ARTIFACT,
            sources=sources.as_sources(),
            precision=label,
            max_length=task.max_length,
            stride=task.stride,
            extra={
                "opset": OPSET,
                "inputs": list(FUSED_INPUTS),
                "outputs": [FUSED_OUTPUT],
                "dynamic_axes": fused_dynamic_axes(head.head_type),
                **steps,
                "graph_bytes": graph.stat().st_size,
                "export_seconds": round(time.perf_counter() - started, 2),
                "versions": library_versions(),
            },
        )
        return publish_artifact(store, graph, manifest, work, out_dir)


def reverify_fused(
    store: LayeredStore | AdapterStore,
    manifest: Manifest,
    *,
    labelled: LabelledSet | None = None,
    device: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Re-run a fused artifact's check: store checksums, then its graph against its sources' reference."""
    from langadapt.models.base import load_tokenizer

    _, folder = store.open(manifest.id, manifest.version)
    roles = {row.role: row for row in manifest.sources or []}
    if "task" not in roles:
        raise ExportError(f"{manifest.id} v{manifest.version} does not name its task adapter", "export it again")
    lang = roles.get("language")
    sources = resolve_sources(  # from the layer each was exported from, not whatever shadows it now
        store,
        address(store, roles["task"].id, roles["task"].source),
        address(store, lang.id, lang.source) if lang else None,
        task_version=roles["task"].version,
        lang_version=lang.version if lang else None,
    )
    info = _base_for(sources, manifest.base_model)
    if info.fingerprint != manifest.base_fingerprint:
        raise FingerprintMismatchError(
            f"{manifest.id} was exported from base fingerprint {manifest.base_fingerprint[:12]}…, "
            f"{manifest.base_model!r} now has {info.fingerprint[:12]}…",
            "export it again from the current base",
        )
    reference = load_reference(store, sources, info)
    precision = manifest.precision or "fp32"
    runtime = FusedRuntime(folder, device=check_device(precision, device), threads=threads)  # type: ignore[arg-type]
    figures = check_fused(runtime, reference, load_tokenizer(info), precision=precision, labelled=labelled)
    return {"id": manifest.id, "version": manifest.version, "artifact": manifest.artifact, "parity": figures}
