"""The adapter store: round trips, atomic publish under crashes and races, integrity, and refusal of unsafe files."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from langadapt.errors import AdapterNotFoundError, FingerprintMismatchError, StoreError
from langadapt.models import store as store_module
from langadapt.models.manifest import Manifest, adapter_id
from langadapt.models.store import STAGING_DIR, AdapterStore, read_manifest

FP = "sha256:base-fingerprint-1"


# ------------------------------------------------------------------------------------------ helpers


def write_adapter(folder: Path, value: float = 1.0, extra_files: dict[str, bytes] | None = None) -> Path:
    """A folder with synthetic adapter weights (every element `value`) and a small head config."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"down.weight": torch.full((4, 8), value), "up.weight": torch.full((8, 4), value)},
        folder / "adapter.safetensors",
    )
    (folder / "head_config.json").write_text(json.dumps({"num_labels": 2}))
    for rel, data in (extra_files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def manifest_for(id: str = "yor_Latn-topic", **changes: Any) -> dict[str, Any]:
    """A valid manifest dict for a topic adapter."""
    return {
        "id": id,
        "language": "yor_Latn",
        "task": "topic",
        "kind": "seq_bn",
        "labels": ["politics", "sports"],
        "head_type": "classification",
        "base_model": "tiny-xlmr",
        "base_fingerprint": FP,
        **changes,
    }


def tree(root: Path) -> set[str]:
    """Every path under `root`, relative, for before/after comparisons."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def staging_entries(root: Path) -> list[str]:
    """Names in the store's staging folder."""
    staging = root / STAGING_DIR
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


class MarkerPayload:
    """A pickle payload that creates a marker file when unpickled: proof that something loaded it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def malicious_pickle(marker: Path) -> bytes:
    """Bytes whose unpickling touches `marker`."""
    return pickle.dumps(MarkerPayload(marker))


@pytest.fixture
def store(tmp_path: Path) -> AdapterStore:
    """An empty store in a fresh folder."""
    return AdapterStore(tmp_path / "store")


@pytest.fixture
def published(store: AdapterStore, tmp_path: Path) -> Manifest:
    """A store holding version 1 of `yor_Latn-topic`."""
    return store.publish(write_adapter(tmp_path / "src"), manifest_for())


# ----------------------------------------------------------------------------------------- manifest


def test_adapter_id_conventions() -> None:
    assert adapter_id("yor_Latn", "ner") == "yor_Latn-ner"
    assert adapter_id("yor_Latn", "mlm", "seq_bn") == "yor_Latn-mlm-seq_bn"
    assert adapter_id(None, "sentiment") == "any-sentiment"


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "../escape"},
        {"id": "a/b"},
        {"id": "a..b"},
        {"id": ".hidden"},
        {"language": "yo"},
        {"language": "yor-Latn"},
        {"task": "Topic Classification"},
        {"labels": ["a", "b", "a"]},
        {"files": {"../x": "0" * 64}},
        {"files": {"a.safetensors": "not-a-digest"}},
        {"unknown_field": 1},
    ],
)
def test_manifest_rejects_invalid_fields(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Manifest.model_validate(manifest_for(**changes))


def test_manifest_json_round_trip_keeps_utc() -> None:
    naive = datetime(2025, 1, 2, 3, 4, 5)  # a naive time: taken as UTC
    meta = Manifest.model_validate(manifest_for(created=naive, training={"data": ["glotcc:yor_Latn"], "steps": 10}))
    assert meta.created.tzinfo == timezone.utc
    again = Manifest.model_validate_json(meta.model_dump_json())
    assert again == meta
    shifted = Manifest.model_validate(
        manifest_for(created=datetime(2025, 1, 2, 5, tzinfo=timezone(timedelta(hours=2))))
    )
    assert shifted.created == datetime(2025, 1, 2, 3, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------ round trips


def test_new_store_is_empty_and_untouched(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "nowhere")
    assert store.generation() == 0
    assert store.list() == []
    assert store.ids() == []
    assert store.versions("yor_Latn-topic") == []
    assert store.verify() == []
    assert not (tmp_path / "nowhere").exists()


def test_default_root_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGADAPT_STORE", str(tmp_path / "env-store"))
    assert AdapterStore().root == tmp_path / "env-store"


def test_publish_get_list_versions_round_trip(store: AdapterStore, tmp_path: Path) -> None:
    src = write_adapter(tmp_path / "src", extra_files={"onnx/model.onnx": b"graph"})
    first = store.publish(src, manifest_for(metrics={"f1": 0.8}))
    second = store.publish(src, Manifest.model_validate(manifest_for(metrics={"f1": 0.9})))
    ner = store.publish(src, manifest_for("hau_Latn-ner", language="hau_Latn", task="ner"))

    assert (first.version, second.version, ner.version) == (1, 2, 1)
    assert set(first.files) == {"adapter.safetensors", "head_config.json", "onnx/model.onnx"}
    assert store.versions("yor_Latn-topic") == [1, 2]
    assert store.get("yor_Latn-topic") == second
    assert store.get("yor_Latn-topic", 1) == first
    assert store.ids() == ["hau_Latn-ner", "yor_Latn-topic"]
    assert [(m.id, m.version) for m in store.list()] == [("hau_Latn-ner", 1), ("yor_Latn-topic", 2)]
    assert [(m.id, m.version) for m in store.list(latest_only=False, language="yor_Latn")] == [
        ("yor_Latn-topic", 1),
        ("yor_Latn-topic", 2),
    ]
    assert [m.id for m in store.list(task="ner")] == ["hau_Latn-ner"]
    assert store.list(language="swh_Latn") == []
    folder = store.path("yor_Latn-topic")
    assert folder == store.root / "adapters" / "yor_Latn-topic" / "2"
    assert (folder / "onnx" / "model.onnx").read_bytes() == b"graph"
    assert json.loads((folder / "manifest.json").read_text())["metrics"] == {"f1": 0.9}
    assert store.verify() == []
    assert staging_entries(store.root) == []


def test_publish_ignores_caller_version_and_files(store: AdapterStore, tmp_path: Path) -> None:
    src = write_adapter(tmp_path / "src")
    (src / "manifest.json").write_text("{stale manifest from elsewhere}")
    meta = store.publish(src, manifest_for(version=7, files={"bogus.safetensors": "0" * 64}))
    assert meta.version == 1
    assert set(meta.files) == {"adapter.safetensors", "head_config.json"}
    assert store.get(meta.id) == meta


def test_load_tensors_returns_published_weights(published: Manifest, store: AdapterStore) -> None:
    import torch

    tensors = store.load_tensors(published.id)
    assert set(tensors) == {"down.weight", "up.weight"}
    assert torch.equal(tensors["down.weight"], torch.ones(4, 8))
    with pytest.raises(StoreError, match=r"no file 'missing\.safetensors'"):
        store.load_tensors(published.id, file="missing.safetensors")
    with pytest.raises(StoreError, match="not a safetensors file"):
        store.load_tensors(published.id, file="head_config.json")


def test_explicit_version(store: AdapterStore, tmp_path: Path) -> None:
    src = write_adapter(tmp_path / "src")
    assert store.publish(src, manifest_for(), version=5).version == 5
    assert store.publish(src, manifest_for()).version == 6
    assert store.publish(src, manifest_for(), version=3).version == 3
    with pytest.raises(StoreError, match="version 5 already exists"):
        store.publish(src, manifest_for(), version=5)
    assert store.versions("yor_Latn-topic") == [3, 5, 6]


def test_generation_bumps_on_publish_and_remove(store: AdapterStore, tmp_path: Path) -> None:
    src = write_adapter(tmp_path / "src")
    store.publish(src, manifest_for())
    store.publish(src, manifest_for())
    assert store.generation() == 2
    assert (store.root / "GENERATION").read_text().strip() == "2"
    store.remove("yor_Latn-topic", 1)
    assert store.generation() == 3
    with pytest.raises(AdapterNotFoundError):
        store.remove("yor_Latn-topic", 1)
    assert store.generation() == 3
    assert not [p for p in store.root.iterdir() if p.name.endswith(".tmp")]


def test_remove_one_and_all_versions_never_reuses_numbers(store: AdapterStore, tmp_path: Path) -> None:
    src = write_adapter(tmp_path / "src")
    for _ in range(3):
        store.publish(src, manifest_for())
    assert store.remove("yor_Latn-topic", 3) == [3]
    assert store.versions("yor_Latn-topic") == [1, 2]
    assert store.publish(src, manifest_for()).version == 4  # 3 was served once: never reused
    assert store.remove("yor_Latn-topic") == [1, 2, 4]
    assert store.ids() == []
    assert store.list() == []
    assert store.publish(src, manifest_for()).version == 5
    assert staging_entries(store.root) == []


def test_not_found_errors_list_what_exists(published: Manifest, store: AdapterStore) -> None:
    with pytest.raises(AdapterNotFoundError, match="yor_Latn-topic") as unknown:
        store.get("hau_Latn-ner")
    assert "hau_Latn-ner" in str(unknown.value)
    with pytest.raises(AdapterNotFoundError, match=r"no version 9.*available versions: \[1\]"):
        store.get(published.id, 9)
    with pytest.raises(AdapterNotFoundError):
        store.path("hau_Latn-ner")
    with pytest.raises(AdapterNotFoundError):
        store.verify("hau_Latn-ner")


# ----------------------------------------------------------------------------------------- crashes


def test_failed_rename_leaves_store_unchanged(
    published: Manifest, store: AdapterStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, generation = tree(store.root), store.generation()

    def refuse(self: Path, target: Path) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(Path, "rename", refuse)
    with pytest.raises(OSError, match="disk went away"):
        store.publish(write_adapter(tmp_path / "v2", value=2.0), manifest_for())
    monkeypatch.undo()
    assert tree(store.root) == before
    assert store.generation() == generation
    assert store.get(published.id) == published
    assert staging_entries(store.root) == []


def test_failure_mid_copy_leaves_store_unchanged(
    published: Manifest, store: AdapterStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree(store.root)
    real_copy = store_module._copy_and_hash
    calls = []

    def copy_then_fail(source: Path, target: Path) -> str:
        calls.append(source)
        if len(calls) == 2:
            raise OSError("no space left on device")
        return real_copy(source, target)

    monkeypatch.setattr(store_module, "_copy_and_hash", copy_then_fail)
    with pytest.raises(OSError, match="no space left"):
        store.publish(write_adapter(tmp_path / "v2", value=2.0), manifest_for())
    assert len(calls) == 2
    assert tree(store.root) == before


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from langadapt.models import store as store_module
    from langadapt.models.store import AdapterStore

    root, src, point = sys.argv[1], sys.argv[2], sys.argv[3]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "rename":
        Path.rename = die
    else:
        store_module._copy_and_hash = die
    AdapterStore(Path(root)).publish(Path(src), {
        "id": "yor_Latn-topic", "language": "yor_Latn", "task": "topic", "kind": "seq_bn",
        "base_model": "tiny-xlmr", "base_fingerprint": "other",
    })
    """
)


@pytest.mark.parametrize("point", ["copy", "rename"])
def test_sigkill_mid_publish_keeps_old_version_and_is_cleaned(
    point: str, published: Manifest, store: AdapterStore, tmp_path: Path
) -> None:
    adapters_before, generation = tree(store.root / "adapters"), store.generation()
    src = write_adapter(tmp_path / "v2", value=2.0)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(store.root), str(src), point], capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert len(staging_entries(store.root)) == 1  # the dead publisher's leftover
    assert tree(store.root / "adapters") == adapters_before
    assert store.generation() == generation
    assert store.get(published.id) == published
    assert store.verify() == []

    assert store.publish(src, manifest_for()).version == 2
    assert staging_entries(store.root) == []


def test_clean_staging_spares_live_publishers(store: AdapterStore, published: Manifest) -> None:
    live = store._new_staging("publish")
    live.mkdir()
    foreign = store.root / STAGING_DIR / "not-ours"
    foreign.mkdir()
    assert store.clean_staging() == 0
    old = 10 * 24 * 3600
    os.utime(foreign, (foreign.stat().st_atime - old, foreign.stat().st_mtime - old))
    assert store.clean_staging() == 1
    assert staging_entries(store.root) == [live.name]


# -------------------------------------------------------------------------------------- concurrency


def publish_many(root: str, src_root: str, worker: int, count: int) -> list[int]:
    """Publish `count` versions of one id, each with weights and metadata that name the worker and step."""
    store = AdapterStore(Path(root))
    versions = []
    for step in range(count):
        src = write_adapter(Path(src_root) / f"w{worker}-{step}", value=float(worker * 100 + step))
        meta = store.publish(src, manifest_for(extra={"worker": worker, "step": step}))
        versions.append(meta.version)
    return versions


def assert_complete_and_distinct(store: AdapterStore, results: list[list[int]], total: int) -> None:
    """Every publish got its own version, every version is intact and holds the weights its manifest names."""
    import torch

    got = sorted(v for versions in results for v in versions)
    assert got == list(range(1, total + 1))
    assert store.versions("yor_Latn-topic") == got
    assert store.generation() == total
    assert store.verify() == []
    assert staging_entries(store.root) == []
    for version in got:
        meta = store.get("yor_Latn-topic", version)
        expected = float(meta.extra["worker"] * 100 + meta.extra["step"])
        assert torch.equal(store.load_tensors(meta.id, version)["up.weight"], torch.full((8, 4), expected))


def test_concurrent_publishers_in_processes(store: AdapterStore, tmp_path: Path) -> None:
    workers, count = 4, 3
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.starmap(
            publish_many, [(str(store.root), str(tmp_path / "src"), w, count) for w in range(workers)]
        )
    assert_complete_and_distinct(store, results, workers * count)


def test_concurrent_publishers_in_threads(store: AdapterStore, tmp_path: Path) -> None:
    workers, count = 4, 3
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(publish_many, str(store.root), str(tmp_path / "src"), w, count) for w in range(workers)]
        results = [f.result() for f in futures]
    assert_complete_and_distinct(store, results, workers * count)


# ---------------------------------------------------------------------------------------- integrity


def test_corrupted_weights_detected(published: Manifest, store: AdapterStore) -> None:
    weights = store.path(published.id) / "adapter.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(StoreError, match=r"adapter\.safetensors: sha256 is"):
        store.open(published.id)
    with pytest.raises(StoreError, match="sha256"):
        store.load_tensors(published.id)
    meta, _ = store.open(published.id, verify=False)
    assert meta == published
    problems = store.verify()
    assert [(p.id, p.version, p.file) for p in problems] == [(published.id, 1, "adapter.safetensors")]
    assert "sha256" in problems[0].reason


def test_verify_reports_missing_extra_and_unparsable(store: AdapterStore, tmp_path: Path) -> None:
    src = write_adapter(tmp_path / "src")
    for _ in range(3):
        store.publish(src, manifest_for())
    (store.path("yor_Latn-topic", 1) / "head_config.json").unlink()
    (store.path("yor_Latn-topic", 2) / "notes.txt").write_text("added later")
    (store.path("yor_Latn-topic", 3) / "manifest.json").write_text("{not json")
    (store.root / "adapters" / "yor_Latn-topic" / "scratch").mkdir()

    found = {(p.version, p.file): p.reason for p in store.verify()}
    assert set(found) == {(1, "head_config.json"), (2, "notes.txt"), (3, "manifest.json"), (None, "scratch")}
    assert "missing" in found[1, "head_config.json"]
    assert "not listed" in found[2, "notes.txt"]
    assert "unreadable" in found[3, "manifest.json"]
    assert [p.version for p in store.verify("yor_Latn-topic")] == [1, 2, 3]
    # the newest readable version stands in for the broken latest one
    assert [(m.id, m.version) for m in store.list()] == [("yor_Latn-topic", 2)]
    with pytest.raises(StoreError, match="unreadable"):
        store.get("yor_Latn-topic")
    with pytest.raises(StoreError, match="missing"):
        store.open("yor_Latn-topic", 1)


def test_manifest_describing_another_folder_is_refused(published: Manifest, store: AdapterStore) -> None:
    path = store.path(published.id) / "manifest.json"
    path.write_text(published.model_copy(update={"version": 9}).model_dump_json())
    with pytest.raises(StoreError, match="describes yor_Latn-topic v9"):
        store.get(published.id)


def test_a_manifest_with_wrong_types_is_refused_naming_each_field_and_the_store_is_unchanged(
    published: Manifest, store: AdapterStore, tmp_path: Path
) -> None:
    before = tree(store.root)
    wrong = {**manifest_for(), "labels": "positive", "metrics": [1], "training": {"steps": "ten"}}
    with pytest.raises(StoreError) as caught:
        store.publish(write_adapter(tmp_path / "src2"), wrong)
    message = caught.value.message
    assert message.startswith("the manifest has invalid fields: labels: Input should be a valid list (got 'positive')")
    assert "metrics: Input should be a valid dictionary (got [1])" in message
    assert "training.steps: Input should be a valid integer" in message
    assert "keep serving" in caught.value.hint
    assert tree(store.root) == before and store.versions(published.id) == [published.version]

    on_disk = tmp_path / "manifest.json"
    on_disk.write_text(json.dumps(wrong))
    with pytest.raises(StoreError, match=r"manifest.json has invalid fields: labels: .*\(got 'positive'\)"):
        read_manifest(on_disk)
    on_disk.write_text(json.dumps({**manifest_for(), "files": {"x": "y"}, "version": 7}))
    assert read_manifest(on_disk).version == 0  # the store sets files and version when it publishes


def test_wrong_base_fingerprint_refused(published: Manifest, store: AdapterStore) -> None:
    with pytest.raises(FingerprintMismatchError) as err:
        store.open(published.id, expected_fingerprint="sha256:another-base")
    message = str(err.value)
    assert FP in message and "sha256:another-base" in message and "retrain" in message
    with pytest.raises(FingerprintMismatchError):
        store.load_tensors(published.id, expected_fingerprint="sha256:another-base")
    assert store.open(published.id, expected_fingerprint=FP)[0] == published


# ------------------------------------------------------------------------------------------ pickles


def test_malicious_pickle_payload_works_when_unpickled(tmp_path: Path) -> None:
    """Control: the payload used below really does touch its marker when something unpickles it."""
    marker = tmp_path / "control-marker"
    pickle.loads(malicious_pickle(marker))  # the point of the control
    assert marker.exists()


@pytest.mark.parametrize("name", ["pytorch_adapter.bin", "weights.pt", "head.pth", "state.pkl", "x.ckpt", "y.PICKLE"])
def test_pickle_refused_at_publish(name: str, store: AdapterStore, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    src = write_adapter(tmp_path / "src", extra_files={name: malicious_pickle(marker)})
    with pytest.raises(StoreError, match="pickle") as err:
        store.publish(src, manifest_for())
    assert name in str(err.value) and "safetensors" in str(err.value)
    assert store.ids() == []
    assert not marker.exists()


def test_planted_pickle_refused_at_open_and_never_loaded(
    published: Manifest, store: AdapterStore, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    folder = store.path(published.id)
    (folder / "pytorch_adapter.bin").write_bytes(malicious_pickle(marker))
    with pytest.raises(StoreError, match=r"pytorch_adapter\.bin: pickle"):
        store.open(published.id)
    with pytest.raises(StoreError, match="pickle"):
        store.open(published.id, verify=False)
    with pytest.raises(StoreError, match="pickle"):
        store.load_tensors(published.id)
    with pytest.raises(StoreError):
        store.load_tensors(published.id, file="pytorch_adapter.bin")
    assert [p.file for p in store.verify()] == ["pytorch_adapter.bin"]
    assert not marker.exists()


# ------------------------------------------------------------------------------------ path escapes


@pytest.mark.parametrize("bad_id", ["../x", "..", "/abs", "a/b", "a\\b", "", ".x", "a..b", "x" * 129])
def test_bad_ids_refused_before_touching_disk(bad_id: str, tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    calls = [
        lambda: store.get(bad_id),
        lambda: store.path(bad_id),
        lambda: store.open(bad_id),
        lambda: store.versions(bad_id),
        lambda: store.remove(bad_id),
        lambda: store.verify(bad_id),
        lambda: store.load_tensors(bad_id),
    ]
    for call in calls:
        with pytest.raises(StoreError, match="invalid adapter id"):
            call()
    with pytest.raises(StoreError, match="the manifest has invalid fields: id: "):
        store.publish(tmp_path, manifest_for(bad_id))
    assert not store.root.exists()


@pytest.mark.parametrize("bad_version", [0, -1, True, "1", 1.0])
def test_bad_versions_refused(bad_version: Any, published: Manifest, store: AdapterStore, tmp_path: Path) -> None:
    for call in (store.get, store.path, store.open, store.remove):
        with pytest.raises(StoreError, match="invalid version"):
            call(published.id, bad_version)
    with pytest.raises(StoreError, match="invalid version"):
        store.publish(tmp_path / "src", manifest_for(), version=bad_version)


def test_symlinks_in_source_folder_refused(store: AdapterStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the adapter folder")
    src = write_adapter(tmp_path / "src")
    (src / "leak.txt").symlink_to(secret)
    with pytest.raises(StoreError, match=r"'leak.txt'.*symlink"):
        store.publish(src, manifest_for())
    (src / "leak.txt").unlink()
    (src / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(StoreError, match="symlink"):
        store.publish(src, manifest_for())
    (src / "linked_dir").unlink()
    with pytest.raises(StoreError, match="not a folder"):
        store.publish(src / "adapter.safetensors", manifest_for())
    assert store.ids() == []


def test_symlink_planted_in_store_refused(published: Manifest, store: AdapterStore, tmp_path: Path) -> None:
    folder = store.path(published.id)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes((folder / "adapter.safetensors").read_bytes())  # same bytes: the checksum alone would pass
    (folder / "adapter.safetensors").unlink()
    (folder / "adapter.safetensors").symlink_to(outside)
    with pytest.raises(StoreError, match="symlink"):
        store.open(published.id)
    with pytest.raises(StoreError, match="symlink"):
        store.open(published.id, verify=False)
    with pytest.raises(StoreError, match="symlink"):
        store.load_tensors(published.id)
    assert [(p.file, "symlink" in p.reason) for p in store.verify()] == [("adapter.safetensors", True)]


def test_version_folder_linked_out_of_store_refused(published: Manifest, store: AdapterStore, tmp_path: Path) -> None:
    import shutil

    real = store.path(published.id)
    copy = tmp_path / "elsewhere"
    shutil.copytree(real, copy)
    shutil.rmtree(real)
    real.symlink_to(copy, target_is_directory=True)
    for call in (store.get, store.path, store.open, store.load_tensors):
        with pytest.raises(StoreError, match="symlink"):
            call(published.id)
    assert [(p.version, p.file) for p in store.verify()] == [(1, None)]
    assert store.list() == []


# ---------------------------------------------------------------------------- adapters library import


@pytest.fixture(scope="module")
def adapters_model(tiny_xlmr_dir: Path) -> Any:
    """A tiny XLM-R with a seq_bn task adapter plus classification head and a seq_bn language adapter."""
    import adapters
    import torch

    torch.manual_seed(0)
    model = adapters.AutoAdapterModel.from_pretrained(tiny_xlmr_dir)
    model.add_adapter("topic", config="seq_bn")
    model.add_classification_head("topic", num_labels=3, id2label={0: "health", 1: "politics", 2: "sports"})
    model.add_adapter("lang", config="seq_bn")
    with torch.no_grad():  # non-zero weights everywhere, so equality below means something
        for name, param in model.named_parameters():
            if "adapters." in name or "heads." in name:
                param.copy_(torch.randn_like(param))
    return model


def test_import_adapters_library_folder(adapters_model: Any, store: AdapterStore, tmp_path: Path) -> None:
    import torch

    adapters_model.save_adapter(str(tmp_path / "topic"), "topic", use_safetensors=True)
    meta = store.import_adapters_folder(
        tmp_path / "topic",
        language="yor_Latn",
        task="topic",
        kind="seq_bn",
        base_model="tiny-xlmr",
        base_fingerprint=FP,
        metrics={"macro_f1": 0.5},
    )
    assert meta.id == "yor_Latn-topic" and meta.version == 1
    assert meta.labels == ["health", "politics", "sports"]
    assert meta.head_type == "classification"
    assert meta.adapter_config == json.loads((tmp_path / "topic" / "adapter_config.json").read_text())
    assert meta.adapter_config["config"]["reduction_factor"] == 16
    assert {"adapter.safetensors", "model_head.safetensors", "adapter_config.json", "head_config.json"} <= set(
        meta.files
    )

    state = adapters_model.state_dict()
    expected = {k: v for k, v in state.items() if ".adapters.topic." in k}
    loaded = store.load_tensors(meta.id, expected_fingerprint=FP)
    assert expected and set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    head = store.load_tensors(meta.id, file="model_head.safetensors")
    assert head and all(torch.equal(v, state[k]) for k, v in head.items())


def test_store_folder_loads_back_into_adapters_library(
    adapters_model: Any, tiny_xlmr_dir: Path, store: AdapterStore, tmp_path: Path
) -> None:
    import adapters
    import torch

    adapters_model.save_adapter(str(tmp_path / "topic"), "topic", use_safetensors=True)
    meta = store.import_adapters_folder(
        tmp_path / "topic", language="yor_Latn", task="topic", kind="seq_bn", base_model="m", base_fingerprint=FP
    )
    _, folder = store.open(meta.id, expected_fingerprint=FP)
    fresh = adapters.AutoAdapterModel.from_pretrained(tiny_xlmr_dir)
    name = fresh.load_adapter(str(folder), use_safetensors=True)
    original = {k: v for k, v in adapters_model.state_dict().items() if ".adapters.topic." in k}
    reloaded = fresh.state_dict()
    assert all(torch.equal(reloaded[k.replace(".topic.", f".{name}.")], v) for k, v in original.items())


def test_import_language_adapter_without_head(adapters_model: Any, store: AdapterStore, tmp_path: Path) -> None:
    adapters_model.save_adapter(str(tmp_path / "lang"), "lang", use_safetensors=True)
    meta = store.import_adapters_folder(
        tmp_path / "lang",
        language="yor_Latn",
        task="mlm",
        kind="seq_bn",
        base_model="tiny-xlmr",
        base_fingerprint=FP,
        training={"data": ["glotcc:yor_Latn"], "licence": "CC-BY-4.0", "steps": 100},
        version=3,
    )
    assert (meta.id, meta.version, meta.labels, meta.head_type) == ("yor_Latn-mlm-seq_bn", 3, [], None)
    assert meta.training.licence == "CC-BY-4.0"
    assert "head_config.json" not in meta.files


def test_import_refuses_default_pickle_save(adapters_model: Any, store: AdapterStore, tmp_path: Path) -> None:
    adapters_model.save_adapter(str(tmp_path / "topic"), "topic")  # the library's default writes pickles
    assert (tmp_path / "topic" / "pytorch_adapter.bin").exists()
    with pytest.raises(StoreError, match=r"pytorch_adapter\.bin.*pickle.*use_safetensors=True"):
        store.import_adapters_folder(
            tmp_path / "topic", language="yor_Latn", task="topic", kind="seq_bn", base_model="m", base_fingerprint=FP
        )
    with pytest.raises(StoreError, match=r"adapter_config\.json is missing"):
        store.import_adapters_folder(
            tmp_path / "nothing", language="yor_Latn", task="topic", kind="seq_bn", base_model="m", base_fingerprint=FP
        )
    assert store.ids() == []
