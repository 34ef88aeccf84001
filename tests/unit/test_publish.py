"""The publish step both trainers share: the store gets the adapter, the run directory its manifest and run.json,
each written whole or not at all."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from langadapt.models.manifest import Manifest
from langadapt.models.store import AdapterStore
from langadapt.training.publish import fresh_adapter_dir, publish_run, write_atomically
from langadapt.training.runs import RUN_FILE, RunRecord


def manifest() -> Manifest:
    """A topic adapter's manifest, as a trainer builds it before publishing."""
    return Manifest(
        id="yor_Latn-topic",
        language="yor_Latn",
        task="topic",
        kind="seq_bn",
        labels=["a", "b"],
        head_type="classification",
        base_model="tiny",
        base_fingerprint="f" * 64,
    )


def record() -> RunRecord:
    """The run record a trainer builds before publishing (no version yet)."""
    return RunRecord(kind_of_run="train-task", language="yor_Latn", task="topic", variant="task-only:seq_bn")


def saved_run(out_dir: Path) -> Path:
    """A run directory with a saved adapter (a leftover from an earlier attempt cleared first) and a checkpoint."""
    (out_dir / "adapter").mkdir(parents=True)
    (out_dir / "adapter" / "stale.bin").write_bytes(b"old")
    (out_dir / "work").mkdir()
    return fresh_adapter_dir(out_dir, lambda folder: save_file({"w": torch.ones(2)}, folder / "adapter.safetensors"))


def test_publishing_a_run_stores_the_adapter_and_records_its_version(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    adapter_dir = saved_run(out_dir)
    assert sorted(p.name for p in adapter_dir.iterdir()) == ["adapter.safetensors"]  # the leftover is gone
    store = AdapterStore(tmp_path / "store")
    done = publish_run(out_dir, manifest(), record(), store=store, started=time.perf_counter(), keep_checkpoint=False)
    assert done.published and done.manifest.version == 1 and done.record.adapter_version == 1
    assert store.get("yor_Latn-topic").files.keys() == {"adapter.safetensors"}
    beside = json.loads((adapter_dir / "manifest.json").read_text(encoding="utf-8"))
    assert (beside["version"], sorted(beside["files"])) == (1, ["adapter.safetensors"])
    assert RunRecord.read(out_dir).adapter_version == 1
    assert RunRecord.read(out_dir).duration_s is not None
    assert not (out_dir / "work").exists()  # the checkpoint goes once run.json is written, unless kept
    assert not list(out_dir.rglob(".*.tmp"))


def test_a_run_not_published_keeps_its_manifest_unversioned_and_its_checkpoint(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    adapter_dir = saved_run(out_dir)
    done = publish_run(out_dir, manifest(), record(), store=None, started=time.perf_counter())
    assert not done.published and done.record.adapter_version is None
    assert json.loads((adapter_dir / "manifest.json").read_text(encoding="utf-8"))["version"] == 0
    assert (out_dir / "work").is_dir() and (out_dir / RUN_FILE).is_file()


def test_a_failed_publish_leaves_no_run_record(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    saved_run(out_dir)
    bad = manifest().model_copy(update={"id": "not an id"})
    with pytest.raises(Exception, match="not an id"):
        publish_run(out_dir, bad, record(), store=AdapterStore(tmp_path / "store"), started=time.perf_counter())
    assert not (out_dir / RUN_FILE).exists() and not (out_dir / "adapter" / "manifest.json").exists()
    assert (out_dir / "work").is_dir()  # so the same command resumes


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_atomically(tmp_path / "manifest.json", "old")
    assert target.read_text(encoding="utf-8") == "old" and not list(tmp_path.glob(".*.tmp"))

    def crash(self: Path, other: Path) -> Path:
        raise OSError("killed before the rename")

    monkeypatch.setattr(Path, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        write_atomically(target, "new")
    assert target.read_text(encoding="utf-8") == "old"
