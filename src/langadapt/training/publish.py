"""The last phase of every training run: publish the saved adapter, and leave its manifest and `run.json` behind.

A run directory holds `adapter/` (what is published, with the manifest beside it), `work/` (the resumable
checkpoint) and `run.json` (what reports read). The store copies `adapter/` in atomically (all or nothing), and
the manifest and `run.json` are each written to a temporary file and renamed, so a killed run never leaves half a
file: rerunning it resumes from the checkpoint.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.models.kinds import MANIFEST_FILE
from langadapt.training.runs import RunRecord

if TYPE_CHECKING:
    from langadapt.models.manifest import Manifest
    from langadapt.models.store import AdapterStore

__all__ = ["ADAPTER_DIR", "WORK_DIR", "PublishedRun", "fresh_adapter_dir", "publish_run", "write_atomically"]

ADAPTER_DIR = "adapter"
WORK_DIR = "work"


@dataclass
class PublishedRun:
    """What publishing left: the manifest (the store's when published), the run record and the adapter folder."""

    manifest: Manifest
    published: bool
    record: RunRecord
    adapter_dir: Path


def write_atomically(path: Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    return path


def fresh_adapter_dir(out_dir: Path, save: Callable[[Path], Any]) -> Path:
    """The run's adapter folder, emptied of what an interrupted attempt left, then written by `save`."""
    adapter_dir = out_dir / ADAPTER_DIR
    shutil.rmtree(adapter_dir, ignore_errors=True)
    adapter_dir.mkdir(parents=True)
    save(adapter_dir)
    return adapter_dir


def publish_run(
    out_dir: Path,
    manifest: Manifest,
    record: RunRecord,
    *,
    store: AdapterStore | None,
    started: float,
    keep_checkpoint: bool = True,
) -> PublishedRun:
    """Publish `out_dir/adapter` to `store` (None: do not publish), then write its manifest and `run.json`.

    The record gets the published version and the run's duration since `started` (a `time.perf_counter()`);
    without `keep_checkpoint` the resumable checkpoint (`work/`) is removed once `run.json` is written.
    """
    adapter_dir = out_dir / ADAPTER_DIR
    published = store.publish(adapter_dir, manifest) if store is not None else None
    final = published or manifest
    write_atomically(adapter_dir / MANIFEST_FILE, final.model_dump_json(indent=2))
    version = published.version if published is not None else None
    record = record.model_copy(update={"adapter_version": version, "duration_s": time.perf_counter() - started})
    record.write(out_dir)
    if not keep_checkpoint:
        shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
    return PublishedRun(manifest=final, published=published is not None, record=record, adapter_dir=adapter_dir)
