"""Export artifacts in the store: their ids, the staging folder they are built in, and publishing them.

An artifact is a store version folder like any adapter's: ``model.onnx`` plus the ``manifest.json`` the store
writes (with the sha256 of the graph). Fused artifacts are named after their stack and precision
(``yor_Latn-ner.yor_Latn-mlm-seq_bn.onnx-int8``); the swappable graph after the base fingerprint
(``onnx-swappable-<first 16 hex digits>``). Everything is built in a temporary folder that is removed whatever
happens, and published only after its parity check passed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from langadapt.export.errors import ExportError
from langadapt.models.kinds import GRAPH_FILE, SWAPPABLE_ARTIFACT
from langadapt.models.store import AdapterStore
from langadapt.models.store_view import STORE, LayeredStore, store_view

if TYPE_CHECKING:
    from langadapt.export.reference import StackSources
    from langadapt.models.manifest import Manifest

__all__ = [
    "as_view",
    "check_out",
    "fused_id",
    "library_versions",
    "publish_artifact",
    "staging",
    "swappable_id",
]

_LIBRARIES = ("torch", "transformers", "adapters", "onnx", "onnxruntime", "onnxruntime-gpu")


def fused_id(sources: StackSources, precision: str) -> str:
    """`<task id>[.<language adapter id>].onnx-<precision>`: one id per stack and precision.

    A packaged default's id reads `default-<id>` in it, so the graph of `default:yor_Latn-ner` and that of a
    store `yor_Latn-ner` never share an artifact id.
    """
    rows = [(sources.task, sources.task_source), (sources.language, sources.language_source)]
    parts = [m.id if source == STORE else f"{source}-{m.id}" for m, source in rows if m is not None]
    return ".".join([*parts, f"onnx-{precision}"])


def swappable_id(fingerprint: str, precision: str) -> str:
    """`onnx-swappable-<fingerprint prefix>` (plus `-fp16`): one swappable graph per base model and precision."""
    return f"{SWAPPABLE_ARTIFACT}-{fingerprint[:16]}" + ("" if precision == "fp32" else f"-{precision}")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that traced, optimised and checked the graph."""
    found = {}
    for name in _LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


@contextlib.contextmanager
def staging() -> Iterator[Path]:
    """A private temporary folder for one export, removed on success and on failure alike."""
    with tempfile.TemporaryDirectory(prefix="langadapt-export-") as folder:
        yield Path(folder)


def check_out(out: Path | None) -> None:
    """Refuse an `out` folder that already holds something, before any work is done."""
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out} exists and is not an empty folder", "pass a new or empty folder")


def as_view(store: LayeredStore | AdapterStore | Path | str | None) -> LayeredStore | AdapterStore:
    """What an export reads adapters through: a view or store as given; a path (or None) as its store view."""
    return store if isinstance(store, (LayeredStore, AdapterStore)) else store_view(store)


def externalize(graph: Path, target: Path) -> None:
    """Save `graph` as `target` with its weights in `<target>.data` beside it (the store checksums both files).

    ONNX Runtime memory-maps external weights instead of copying them into each session, so the workers of a
    server (and any other process on the graph) share one copy in the page cache: measured on the embedded
    base's swappable graph, two processes held 259 MiB PSS in all against 996 MiB with the weights inside the
    graph, at the same speed (docs/performance.md).
    """
    import onnx

    model = onnx.load(str(graph))
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{target.name}.data",
        size_threshold=1024,
    )
    graph.unlink()


def publish_artifact(
    store: LayeredStore | AdapterStore, graph: Path, manifest: Manifest, work: Path, out: Path | None
) -> Manifest:
    """Publish `graph` as the artifact described by `manifest`; with `out`, copy the published folder there too."""
    check_out(out)
    folder = work / "publish"
    folder.mkdir()
    externalize(graph, folder / GRAPH_FILE)
    published = store.publish(folder, manifest)  # a view publishes to its writable store
    if out is not None:
        shutil.copytree(store.path(published.id, published.version), out, dirs_exist_ok=True)
    return published
