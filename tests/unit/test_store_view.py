"""The store view: names with their source, shadowing, reads through the layers, writes to the writable store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from langadapt.errors import AdapterNotFoundError, StoreError
from langadapt.models.store import AdapterStore
from langadapt.models.store_view import (
    DEFAULTS,
    STORE,
    AdapterRef,
    LayeredStore,
    address,
    source_in,
    split_name,
    store_view,
)

FP = "f" * 64


def publish(store: AdapterStore, tmp_path: Path, ident: str, labels: list[str]) -> None:
    folder = tmp_path / f"src-{store.root.name}-{ident}"
    folder.mkdir()
    save_file({"w": torch.ones(2)}, folder / "adapter.safetensors")
    language, _, task = ident.partition("-")
    store.publish(
        folder,
        {
            "id": ident,
            "language": language,
            "task": task,
            "kind": "seq_bn",
            "labels": labels,
            "head_type": "classification",
            "base_model": "tiny",
            "base_fingerprint": FP,
        },
    )


@pytest.fixture
def view(tmp_path: Path) -> LayeredStore:
    """Defaults hold yor_Latn-topic (7 labels) and hau_Latn-topic; the writable store its own yor_Latn-topic."""
    defaults, writable = AdapterStore(tmp_path / "defaults"), AdapterStore(tmp_path / "store")
    publish(defaults, tmp_path, "yor_Latn-topic", [f"sib{i}" for i in range(7)])
    publish(defaults, tmp_path, "hau_Latn-topic", ["a", "b"])
    publish(writable, tmp_path, "yor_Latn-topic", [f"news{i}" for i in range(5)])
    return LayeredStore(writable, defaults)


def test_refs_of_the_two_layers_never_print_alike() -> None:
    mine, packaged = AdapterRef("yor_Latn-topic", 1, STORE), AdapterRef("yor_Latn-topic", 1, DEFAULTS)
    assert (str(mine), str(packaged)) == ("yor_Latn-topic@v1", "default:yor_Latn-topic@v1")
    assert AdapterRef.parse(str(mine)) == mine and AdapterRef.parse(str(packaged)) == packaged
    assert split_name("default:x") == (DEFAULTS, "x") and split_name("store:x") == (STORE, "x")
    assert split_name("x") == (None, "x")


def test_names_resolve_store_first_and_prefixes_pin_a_layer(view: LayeredStore) -> None:
    assert view.source_of("yor_Latn-topic") == STORE and len(view.get("yor_Latn-topic").labels) == 5
    assert view.source_of("default:yor_Latn-topic") == DEFAULTS
    assert len(view.get("default:yor_Latn-topic").labels) == 7
    assert view.source_of("hau_Latn-topic") == DEFAULTS and view.get("hau_Latn-topic").labels == ["a", "b"]
    assert view.path("default:yor_Latn-topic").is_relative_to(view.defaults.root)  # type: ignore[union-attr]
    manifest, folder = view.open("yor_Latn-topic", expected_fingerprint=FP)
    assert len(manifest.labels) == 5 and folder.is_relative_to(view.writable.root)
    with pytest.raises(AdapterNotFoundError, match="no adapter 'store:hau_Latn-topic'"):
        view.get("store:hau_Latn-topic")
    with pytest.raises(AdapterNotFoundError, match="default:hau_Latn-topic") as caught:
        view.get("ibo_Latn-topic")
    assert "or the packaged defaults" in caught.value.message
    assert (source_in(view, "hau_Latn-topic"), source_in(view.writable, "hau_Latn-topic")) == (DEFAULTS, STORE)
    assert (address(view, "x", DEFAULTS), address(view.writable, "x", DEFAULTS)) == ("default:x", "x")


def test_listing_candidates_and_shadowed_defaults(view: LayeredStore) -> None:
    assert [(m.id, len(m.labels)) for m in view.list()] == [("yor_Latn-topic", 5), ("hau_Latn-topic", 2)]
    assert [str(c.ref) for c in view.candidates()] == ["yor_Latn-topic@v1", "default:hau_Latn-topic@v1"]
    assert [str(c.ref) for c in view.shadowed()] == ["default:yor_Latn-topic@v1"]


def test_writes_go_to_the_writable_store_and_defaults_are_read_only(
    view: LayeredStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(StoreError, match="default:hau_Latn-topic is a packaged default adapter: read-only"):
        view.remove("hau_Latn-topic")
    with pytest.raises(StoreError, match="read-only"):
        view.remove("default:yor_Latn-topic")
    assert view.remove("yor_Latn-topic") == [1]
    assert view.source_of("yor_Latn-topic") == DEFAULTS and view.shadow_warning("yor_Latn-topic") is None

    folder = tmp_path / "again"
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, folder / "adapter.safetensors")
    with caplog.at_level(logging.WARNING, logger="langadapt.models.store_view"):
        published = view.publish(folder, view.get("hau_Latn-topic").model_copy(update={"files": {}}))
    assert published.version == 1 and view.writable.versions("hau_Latn-topic") == [1]
    assert view.defaults is not None and view.defaults.versions("hau_Latn-topic") == [1]
    assert "shadows the packaged default:hau_Latn-topic@v1 (2 labels)" in caplog.text


def test_store_view_layers_the_packaged_defaults_under_the_store(tmp_path: Path) -> None:
    layered = store_view(tmp_path / "store")
    assert [source for source, _ in layered.layers()] == [STORE, DEFAULTS]
    assert layered.source_of("yor_Latn-ner") == DEFAULTS and layered.get("yor_Latn-ner").task == "ner"
    assert [source for source, _ in store_view(tmp_path / "store", None).layers()] == [STORE]
