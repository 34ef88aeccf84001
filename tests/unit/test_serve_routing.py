"""Routing: language aliases, stack choice, fallbacks, refusals, the layered store view and its generation."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from langadapt.errors import LanguageCodeError
from langadapt.inference.errors import ServeError
from langadapt.inference.routing import (
    LANGUAGE_ADAPTER_VERSION,
    NO_LANGUAGE_ADAPTER,
    RELATED_LANGUAGE,
    Router,
    RouteTable,
    parse_fallbacks,
)
from langadapt.models.manifest import Manifest
from langadapt.models.store import AdapterStore
from langadapt.models.store_view import DEFAULTS, STORE, AdapterRef, Candidate, LayeredStore

FP = "f" * 64
NER_LABELS = ["O", "B-PER", "I-PER"]


def manifest(ident: str, language: str | None, task: str, version: int = 1, **fields: Any) -> Manifest:
    head = {"ner": "tagging", "topic": "classification", "sentiment": "classification"}.get(task)
    data: dict[str, Any] = {
        "id": ident,
        "language": language,
        "task": task,
        "kind": "seq_bn",
        "version": version,
        "labels": NER_LABELS if task == "ner" else [],
        "head_type": head,
        "base_model": "tiny",
        "base_fingerprint": FP,
    }
    data.update(fields)
    return Manifest.model_validate(data)


def candidate(m: Manifest, source: str = STORE) -> Candidate:
    return Candidate(AdapterRef(m.id, m.version, source), m)


def table(*manifests: Manifest, **kwargs: Any) -> RouteTable:
    return RouteTable([candidate(m) for m in manifests], FP, **kwargs)


YO_LANG = manifest("yor_Latn-mlm-seq_bn", "yor_Latn", "mlm")
YO_NER = manifest("yor_Latn-ner", "yor_Latn", "ner", extra={"language_adapter": {"id": YO_LANG.id, "version": 1}})


@pytest.mark.parametrize("code", ["yo", "yor", "yor-Latn", "yor_Latn", "YOR_latn", "Yoruba", " yo "])
def test_aliases_resolve_to_the_canonical_code(code: str) -> None:
    route = table(YO_LANG, YO_NER).resolve("ner", code)
    assert route.language == "yor_Latn"
    assert route.key.task == AdapterRef("yor_Latn-ner", 1)
    assert route.key.language == AdapterRef("yor_Latn-mlm-seq_bn", 1)
    assert route.fallback is False and route.fallback_reason is None
    assert route.labels == tuple(NER_LABELS) and route.head_type == "tagging"


def test_the_newest_servable_version_of_the_conventional_id_wins() -> None:
    other = manifest("aaa-custom-ner", "yor_Latn", "ner", version=9)
    v2 = manifest("yor_Latn-ner", "yor_Latn", "ner", version=2, extra={"max_length": 64, "stride": 8})
    route = table(other, YO_NER, v2).resolve("ner", "yo")
    assert route.key.task == AdapterRef("yor_Latn-ner", 2)
    assert (route.max_length, route.stride) == (64, 8)
    refused = table(other, YO_NER, v2, refused={AdapterRef("yor_Latn-ner", 2): "corrupt"})
    assert refused.resolve("ner", "yo").key.task == AdapterRef("yor_Latn-ner", 1)
    assert table(other).resolve("ner", "yo").key.task.id == "aaa-custom-ner"  # no conventional id: first id


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"base_fingerprint": "0" * 64}, "another base model"),
        ({"kind": "full"}, "not a bank kind"),
        ({"kind": "onnx-fused", "artifact": "onnx"}, "an export artifact"),
        ({"head_type": "classification"}, "the wrong head for NER"),
    ],
)
def test_versions_the_bank_cannot_serve_are_skipped(fields: dict[str, Any], why: str) -> None:
    bad = manifest("yor_Latn-ner", "yor_Latn", "ner", version=2, **fields)
    assert table(YO_NER, bad).resolve("ner", "yo").key.task.version == 1, why
    with pytest.raises(ServeError) as caught:
        table(bad).resolve("ner", "yo")
    assert caught.value.status == 404


def test_language_adapter_follows_the_task_adapters_record() -> None:
    task_only = manifest("hau_Latn-ner", "hau_Latn", "ner", extra={"language_adapter": None})
    ha_lang = manifest("hau_Latn-mlm-seq_bn", "hau_Latn", "mlm")
    route = table(task_only, ha_lang).resolve("ner", "ha")
    assert route.key.language is None  # trained without one: it is not stacked on one
    assert not route.fallback and route.fallback_reason is None  # task-only by design is no fallback
    assert route.stack_dict()["task_only"] is True and route.stack_dict()["fallback"] is False

    imported = manifest("hau_Latn-ner", "hau_Latn", "ner")  # no record at all: the store's language adapter
    assert table(imported, ha_lang).resolve("ner", "ha").key.language == AdapterRef(ha_lang.id, 1)
    alone = table(imported).resolve("ner", "ha")  # none to use: task-only, nothing fell back
    assert alone.key.language is None and alone.fallback_reason is None

    missing = {"language_adapter": {"id": ha_lang.id, "version": 1}}
    stacked = manifest("hau_Latn-ner", "hau_Latn", "ner", extra=missing)
    route = table(stacked).resolve("ner", "ha")  # trained on one that cannot be used now: a fallback
    assert route.key.language is None and route.fallback_reason == NO_LANGUAGE_ADAPTER
    assert route.stack_dict()["task_only"] is True and route.stack_dict()["fallback"] is True

    yo_lang_v2 = manifest(YO_LANG.id, "yor_Latn", "mlm", version=2)
    route = table(YO_LANG, yo_lang_v2, YO_NER).resolve("ner", "yo")
    assert route.key.language == AdapterRef(YO_LANG.id, 1)  # the recorded version, not the newest
    route = table(yo_lang_v2, YO_NER).resolve("ner", "yo")
    assert route.key.language == AdapterRef(YO_LANG.id, 2)
    assert route.fallback_reason == LANGUAGE_ADAPTER_VERSION


def test_related_language_fallback_is_configured_and_reported() -> None:
    swh = manifest("swh_Latn-ner", "swh_Latn", "ner", extra={"language_adapter": None})
    fallbacks = parse_fallbacks(["kin=swh_Latn", "kin_Latn=yor"])
    assert fallbacks == {"kin_Latn": ("swh_Latn", "yor_Latn")}
    t = table(swh, YO_LANG, YO_NER, fallbacks=fallbacks)
    route = t.resolve("ner", "rw")  # Kinyarwanda, ISO 639-1 `rw`
    assert route.language == "kin_Latn" and route.adapter_language == "swh_Latn"
    assert route.key.task.id == "swh_Latn-ner" and route.fallback_reason == RELATED_LANGUAGE
    assert t.languages("ner") == ["swh_Latn", "yor_Latn", "kin_Latn"]

    kin_lang = manifest("kin_Latn-mlm-seq_bn", "kin_Latn", "mlm")
    route = table(swh, kin_lang, fallbacks=fallbacks).resolve("ner", "kin")
    assert route.key.language == AdapterRef(kin_lang.id, 1)  # MAD-X: the requested language's own adapter
    assert route.fallback_reason == RELATED_LANGUAGE
    with pytest.raises(ServeError):
        table(swh).resolve("ner", "kin")  # not configured: no fallback


def test_unknown_language_or_task_is_a_404_listing_what_is_available() -> None:
    t = table(YO_LANG, YO_NER)
    with pytest.raises(ServeError) as caught:
        t.resolve("ner", "sw")
    err = caught.value
    assert (err.status, err.error) == (404, "unknown_language")
    assert "Swahili (swh_Latn)" in err.detail and err.extra["available"] == ["yor_Latn"]
    assert err.body()["hint"] == "ner is available in: yor_Latn"

    with pytest.raises(ServeError) as caught:
        t.resolve("ner", "yorr")
    assert "did you mean yor_Latn" in caught.value.hint

    with pytest.raises(ServeError) as caught:
        t.resolve("pos", "yo")
    assert (caught.value.error, caught.value.extra["available"]) == ("unknown_task", ["ner", "sentiment", "topic"])

    with pytest.raises(ServeError) as caught:
        t.resolve("topic", "yo")
    assert caught.value.extra["available"] == [] and "none yet" in caught.value.hint


def test_fallback_entries_are_checked() -> None:
    with pytest.raises(LanguageCodeError):
        parse_fallbacks(["kin_Latn"])
    with pytest.raises(LanguageCodeError):
        parse_fallbacks(["kin=notalanguage"])


def publish(store: AdapterStore, m: Manifest, tmp: Path) -> Manifest:
    folder = tmp / f"{m.id}-{m.version}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter.safetensors").write_bytes(m.id.encode())  # routing never opens the weights
    return store.publish(folder, m.model_dump(exclude={"version", "files"}))


def test_the_writable_store_shadows_the_defaults_and_drives_the_generation(tmp_path: Path) -> None:
    writable, defaults = AdapterStore(tmp_path / "store"), AdapterStore(tmp_path / "defaults")
    publish(defaults, YO_NER, tmp_path / "src")
    publish(defaults, manifest("hau_Latn-ner", "hau_Latn", "ner"), tmp_path / "src")
    layered = LayeredStore(writable, defaults)
    router = Router(layered, FP)
    assert router.resolve("ner", "yo").key.task == AdapterRef("yor_Latn-ner", 1, DEFAULTS)
    assert router.stage() is None  # nothing changed

    publish(writable, YO_NER, tmp_path / "src")
    staged = router.stage()
    assert staged is not None and staged.generation == writable.generation() == 1
    assert router.resolve("ner", "yo").key.task.source == DEFAULTS  # staged, not installed yet
    router.install(staged)
    assert router.resolve("ner", "yo").key.task == AdapterRef("yor_Latn-ner", 1, STORE)
    assert router.resolve("ner", "ha").key.task.source == DEFAULTS
    assert [c.ref.source for c in layered.candidates() if c.ref.id == "yor_Latn-ner"] == [STORE]

    router.refuse(AdapterRef("yor_Latn-ner", 1, STORE), "corrupt")
    with pytest.raises(ServeError):  # the shadowed default does not come back: the id is the store's now
        router.resolve("ner", "yo")
    assert router.refused == {AdapterRef("yor_Latn-ner", 1, STORE): "corrupt"}


def test_resolution_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from langadapt.inference import routing

    monkeypatch.setattr(routing, "RESOLVE_CACHE_SIZE", 8)
    t = table(YO_LANG, YO_NER)
    for code in ["yo", "yor", "en", "fr", "de", "sw", "ha", "ig", "rw", "am", "zu", "xh"]:
        with pytest.raises(ServeError) if code not in ("yo", "yor") else contextlib.nullcontext():
            t.resolve("ner", code)
    assert 0 < len(t._cache) <= 8


def test_the_store_index_reads_each_manifest_once_and_follows_removals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langadapt.models.store_view import StoreIndex

    store = AdapterStore(tmp_path / "store")
    publish(store, YO_NER, tmp_path / "src")
    publish(store, manifest("hau_Latn-ner", "hau_Latn", "ner"), tmp_path / "src")
    index = StoreIndex(store, STORE)
    reads: list[tuple[str, int | None]] = []
    original = store.get
    monkeypatch.setattr(store, "get", lambda i, v=None: reads.append((i, v)) or original(i, v))
    assert [str(c.ref) for c in index.candidates()] == ["hau_Latn-ner@v1", "yor_Latn-ner@v1"]
    publish(store, YO_NER, tmp_path / "src2")
    assert [str(c.ref) for c in index.candidates()] == ["hau_Latn-ner@v1", "yor_Latn-ner@v1", "yor_Latn-ner@v2"]
    assert sorted(reads) == [("hau_Latn-ner", 1), ("yor_Latn-ner", 1), ("yor_Latn-ner", 2)]
    store.remove("yor_Latn-ner", 1)
    assert [str(c.ref) for c in index.candidates()] == ["hau_Latn-ner@v1", "yor_Latn-ner@v2"]
    store.remove("hau_Latn-ner")
    assert [str(c.ref) for c in index.candidates()] == ["yor_Latn-ner@v2"]
    assert len(reads) == 3
