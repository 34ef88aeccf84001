"""Typed manifest fields: read from `extra` (older manifests, the packaged defaults), written back into it."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from safetensors.numpy import save_file

from langadapt.models.kinds import SERVED_TASKS
from langadapt.models.manifest import EXTRA_FIELDS, AdapterVersion, Manifest, SourceAdapter
from langadapt.models.store import AdapterStore

LANG = AdapterVersion(id="yor_Latn-mlm-seq_bn", version=2)


def task_manifest(**fields: Any) -> Manifest:
    """A NER task adapter's manifest with `fields`."""
    base = {"id": "yor_Latn-ner", "language": "yor_Latn", "task": "ner", "kind": "seq_bn", "head_type": "tagging"}
    return Manifest.model_validate({**base, "base_model": "tiny", "base_fingerprint": "fp", **fields})


def packaged_manifests() -> list[Path]:
    root = Path(str(resources.files("langadapt") / "default_adapters" / "adapters"))
    return sorted(root.glob("*/*/manifest.json"))


def test_typed_fields_are_read_from_extra_and_written_back_into_it() -> None:
    legacy = {"language_adapter": {"id": LANG.id, "version": 2}, "max_length": 64, "stride": 8, "note": "kept"}
    manifest = task_manifest(extra=legacy)
    assert (manifest.language_adapter, manifest.max_length, manifest.stride) == (LANG, 64, 8)
    assert manifest.records_language_adapter
    written = json.loads(manifest.model_dump_json())
    assert written["extra"] == legacy, "the JSON keeps them in extra, where older readers look"
    assert not set(EXTRA_FIELDS) & set(written), "and nowhere else"
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_typed_fields_set_directly_are_written_into_extra() -> None:
    manifest = task_manifest(language_adapter=LANG, max_length=64)
    assert manifest.model_dump()["extra"] == {"language_adapter": {"id": LANG.id, "version": 2}, "max_length": 64}
    assert Manifest.model_validate(manifest.model_dump()) == manifest


def test_a_field_given_directly_wins_over_extra() -> None:
    manifest = task_manifest(max_length=64, extra={"max_length": 512})
    assert manifest.max_length == 64 and manifest.model_dump()["extra"] == {"max_length": 64}


def test_no_record_of_a_language_adapter_differs_from_a_record_of_none() -> None:
    unrecorded, without = task_manifest(), task_manifest(extra={"language_adapter": None})
    assert unrecorded.language_adapter is None and not unrecorded.records_language_adapter
    assert without.language_adapter is None and without.records_language_adapter
    assert "language_adapter" not in unrecorded.model_dump()["extra"]
    assert without.model_dump()["extra"] == {"language_adapter": None}
    assert Manifest.model_validate(without.model_dump()).records_language_adapter
    assert not Manifest.model_validate(unrecorded.model_dump()).records_language_adapter


def test_typed_fields_live_in_the_model_and_are_written_inside_extra() -> None:
    manifest = task_manifest(language_adapter=LANG, max_length=64, majority_label="O")
    assert manifest.extra == {}  # in memory, code reads the typed fields
    assert (manifest.language_adapter, manifest.max_length, manifest.majority_label) == (LANG, 64, "O")
    expected = {"language_adapter": {"id": LANG.id, "version": 2}, "max_length": 64, "majority_label": "O"}
    assert manifest.model_dump(mode="json")["extra"] == expected  # on disk, where older readers look
    assert set(expected) <= set(EXTRA_FIELDS)
    swappable = task_manifest(layout={"slots": 2})
    assert swappable.extra == {} and swappable.model_dump()["extra"] == {"layout": {"slots": 2}}


def test_export_fields() -> None:
    rows = [{"role": "language", "id": LANG.id, "version": 2, "kind": "seq_bn"}]
    rows.append({"role": "task", "id": "yor_Latn-ner", "version": 1, "kind": "seq_bn"})
    manifest = task_manifest(artifact="onnx-fused", extra={"precision": "int8", "sources": rows, "opset": 17})
    assert manifest.precision == "int8" and manifest.extra["opset"] == 17
    assert manifest.sources == [SourceAdapter.model_validate(row) for row in rows]
    written = [{**row, "source": "store"} for row in rows]  # rows without a layer (older graphs) came from the store
    assert json.loads(manifest.model_dump_json())["extra"] == {"precision": "int8", "sources": written, "opset": 17}
    packaged = SourceAdapter.model_validate({**rows[1], "source": "default"})
    assert packaged.source == "default"


@pytest.mark.parametrize(
    "extra",
    [
        {"max_length": 0},
        {"stride": -1},
        {"max_length": "long"},
        {"language_adapter": {"id": LANG.id, "version": 1, "kind": "seq_bn"}},
        {"language_adapter": "yor_Latn-mlm-seq_bn"},
        {"sources": [{"role": "base", "id": "x", "version": 1, "kind": "seq_bn"}]},
    ],
)
def test_typed_fields_are_validated_wherever_they_are_written(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        task_manifest(extra=extra)
    with pytest.raises(ValidationError):
        task_manifest(**extra)


@pytest.mark.parametrize("path", packaged_manifests(), ids=lambda p: p.parent.parent.name)
def test_packaged_defaults_read_typed_and_write_back_unchanged(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    manifest = Manifest.model_validate(data)
    if manifest.task in SERVED_TASKS:  # the task adapters (the language-ID head has no reading window)
        assert manifest.max_length == data["extra"]["max_length"] and manifest.stride == data["extra"]["stride"]
        assert manifest.records_language_adapter and manifest.language_adapter is None
    assert manifest.model_dump(mode="json") == data


def test_the_store_keeps_the_typed_fields(tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    save_file({"w": np.ones((2, 2), dtype=np.float32)}, str(folder / "adapter.safetensors"))
    store = AdapterStore(tmp_path / "store")
    published = store.publish(folder, task_manifest(language_adapter=LANG, max_length=64, stride=None))
    reread = AdapterStore(tmp_path / "store").get(published.id, published.version)
    assert (reread.language_adapter, reread.max_length, reread.stride) == (LANG, 64, None)
    assert reread.records_language_adapter and reread == published
    on_disk = json.loads((store.path(published.id, published.version) / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk["extra"]["language_adapter"] == {"id": LANG.id, "version": 2} and "max_length" not in on_disk
