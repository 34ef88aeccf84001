"""Export: fused and swappable ONNX graphs, quantization and parity checks, and the runtimes that load them.

Public API (imported lazily, so ``from langadapt.export import FusedRuntime`` does not import torch)::

    export_fused(store, lang_adapter_id, task_adapter_id, *, base, precision, quantize, optimize, out) -> Manifest
    export_swappable(store, *, base, precision, optimize, out) -> Manifest
    verify_artifact(store, artifact_id) -> figures            # raises ParityError / StoreError
    FusedRuntime(artifact_dir, device=, threads=).run(input_ids, attention_mask) -> logits
    SwappableRuntime(graph_dir, device=, threads=).hidden_states(ids, mask, stack_index, bank_tensors)
    load_pack(store, adapter_id) -> Pack(manifest, weights, head)   # an adapter in bank form
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export_fused": "langadapt.export.fused",
    "export_swappable": "langadapt.export.swappable",
    "load_pack": "langadapt.export.swappable",
    "Pack": "langadapt.export.swappable",
    "verify_artifact": "langadapt.export.verify",
    "LabelledSet": "langadapt.export.parity",
    "FusedRuntime": "langadapt.export.runtime",
    "SwappableRuntime": "langadapt.export.runtime",
    "ExportError": "langadapt.export.errors",
    "ParityError": "langadapt.export.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the public names on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'langadapt.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
