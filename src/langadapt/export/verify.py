"""Re-verify a stored ONNX artifact: store checksums, then its graph against the PyTorch reference (`parity`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langadapt.export.errors import ExportError
from langadapt.export.fused import reverify_fused
from langadapt.export.swappable import reverify_swappable
from langadapt.models.kinds import FUSED_ARTIFACT, SWAPPABLE_ARTIFACT

if TYPE_CHECKING:
    from langadapt.export.parity import LabelledSet
    from langadapt.models.store import AdapterStore
    from langadapt.models.store_view import LayeredStore

__all__ = ["verify_artifact"]


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
    if manifest.artifact == FUSED_ARTIFACT:
        return reverify_fused(store, manifest, labelled=labelled, device=device, threads=threads)
    if manifest.artifact == SWAPPABLE_ARTIFACT:
        return reverify_swappable(store, manifest, device=device, threads=threads)
    raise ExportError(
        f"{manifest.id} v{manifest.version} is an {manifest.artifact!r}, not an ONNX export",
        f"pass the id of an {FUSED_ARTIFACT} or {SWAPPABLE_ARTIFACT} artifact (`langadapt adapters list`)",
    )
