"""The engine on a tiny model: parity with the `adapters` library, mixed batches, windows, hot loading, refusals."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from adapters.composition import Stack

from langadapt.inference.engine import Engine, Job, TextResult
from langadapt.inference.errors import ServeError
from langadapt.inference.settings import InferenceSettings
from langadapt.models.alignment import decode_entities, encode_text, merge_windows
from langadapt.models.base import BaseModelInfo, load_tokenizer, resolve_base_model
from langadapt.models.manifest import Manifest
from langadapt.models.store import AdapterStore
from langadapt.models.store_view import AdapterRef
from langadapt.serve.synthetic import AdapterFactory

YO_TEXT = "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja lánàá."
HA_TEXT = "Shugaban kasa ya ziyarci Legas ranar Litinin."
LONG_TEXT = " ".join(["Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá, ó sì padà wá sílé."] * 30)


@dataclass
class World:
    """A tiny base, a store of random adapters, the factory whose model still holds them, and an engine."""

    info: BaseModelInfo
    store: AdapterStore
    factory: AdapterFactory
    engine: Engine
    manifests: dict[str, Manifest]


@pytest.fixture(scope="module")
def world(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path_factory.mktemp("engine-store"))
    factory = AdapterFactory(info, seed=3)
    yo_lang = factory.publish_language_adapter(store, "yor_Latn", keep=True)
    manifests = {"yo-lang": yo_lang}
    for task in ("ner", "sentiment"):
        manifests[f"yo-{task}"] = factory.publish_task_adapter(
            store, "yor_Latn", task, language_adapter=yo_lang, max_length=24, stride=6, keep=True
        )
        manifests[f"ha-{task}"] = factory.publish_task_adapter(store, "hau_Latn", task, keep=True)
    engine = Engine(
        InferenceSettings(base=str(tiny_xlmr_dir), store=str(store.root), defaults=None, max_rows=4, threads=1)
    )
    return World(info, store, factory, engine, manifests)


def reference_logits(world: World, task_id: str, lang_id: str | None, input_ids: list[int]) -> torch.Tensor:
    """The `adapters` model's own logits for one row under Stack(lang, task) with the task's head."""
    model = world.factory.model
    model.active_adapters = Stack(lang_id, task_id) if lang_id else Stack(task_id)
    model.active_head = task_id
    with torch.no_grad():
        return model(input_ids=torch.tensor([input_ids])).logits[0]


def test_classification_matches_the_adapters_library(world: World) -> None:
    """Per window as the library computes it; several windows averaged by their token counts."""
    tokenizer = load_tokenizer(world.info)
    cases = (("yo", YO_TEXT, "yor_Latn-mlm-seq_bn", 24, 6), ("ha", HA_TEXT, None, 128, 32))
    for lang, text, lang_id, max_length, stride in cases:
        [result] = world.engine.label("sentiment", lang, [text])
        windows = tokenizer(
            text,
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_special_tokens_mask=True,
        )
        assert result.windows == len(windows["input_ids"])
        task_id = "yor_Latn-sentiment" if lang == "yo" else "hau_Latn-sentiment"
        probs = [
            torch.softmax(reference_logits(world, task_id, lang_id, ids), -1).numpy() for ids in windows["input_ids"]
        ]
        weights = np.array([len(m) - sum(m) for m in windows["special_tokens_mask"]], dtype=float)
        expected = (np.stack(probs) * weights[:, None]).sum(0) / weights.sum()
        labels = world.manifests[f"{lang}-sentiment"].labels
        got = np.array([dict(result.scores)[label] for label in labels])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert result.label == labels[int(np.argmax(expected))]
    first, second = world.engine.label("sentiment", "yo", [YO_TEXT, HA_TEXT])
    assert (first.windows, second.windows) == (3, 2)


def test_ner_matches_the_adapters_library_and_offsets_point_into_the_text(world: World) -> None:
    tokenizer = load_tokenizer(world.info)
    [result] = world.engine.label("ner", "yor_Latn", [YO_TEXT])
    encoding = encode_text(tokenizer, YO_TEXT, 24, 6)
    assert result.windows == len(encoding.windows) > 1
    rows = [
        torch.softmax(reference_logits(world, "yor_Latn-ner", "yor_Latn-mlm-seq_bn", w.input_ids), -1).numpy()
        for w in encoding.windows
    ]
    per_word = merge_windows(encoding, rows, None)
    labels = world.manifests["yo-ner"].labels
    tags = [labels[int(np.argmax(p))] if p is not None else "O" for p in per_word]
    scores = [float(np.max(p)) if p is not None else 1.0 for p in per_word]
    expected = decode_entities(YO_TEXT, encoding.word_spans or [], tags, scores)
    assert [(e.type, e.start, e.end) for e in result.entities] == [(e.type, e.start, e.end) for e in expected]
    np.testing.assert_allclose([e.score for e in result.entities], [e.score for e in expected], atol=1e-5)
    assert result.entities, "random heads tag something"
    for entity in result.entities:
        assert YO_TEXT[entity.start : entity.end] == entity.text


def outcome_key(outcome: list[TextResult] | ServeError) -> Any:
    assert not isinstance(outcome, ServeError), outcome
    return [
        (r.route.key, r.label, [s for _, s in r.scores], [(e.type, e.start, e.end, e.score) for e in r.entities])
        for r in outcome
    ]


def assert_same(a: Any, b: Any) -> None:
    for (key_a, label_a, scores_a, ents_a), (key_b, label_b, scores_b, ents_b) in zip(a, b, strict=True):
        assert (key_a, label_a) == (key_b, label_b)
        np.testing.assert_allclose(scores_a, scores_b, atol=1e-5)
        assert [e[:3] for e in ents_a] == [e[:3] for e in ents_b]
        np.testing.assert_allclose([e[3] for e in ents_a], [e[3] for e in ents_b], atol=1e-5)


def test_a_mixed_batch_gives_what_each_request_gives_alone(world: World) -> None:
    engine = world.engine
    requests = [
        ("ner", "yo", [YO_TEXT, LONG_TEXT[:300]]),
        ("sentiment", "ha", [HA_TEXT]),
        ("ner", "hau", [HA_TEXT, YO_TEXT]),
        ("sentiment", "yor", [LONG_TEXT, "Ọ dára."]),
    ]
    together = engine.run([Job(engine.resolve(t, lang), texts) for t, lang, texts in requests])
    for (task, lang, texts), outcome in zip(requests, together, strict=True):
        assert_same(outcome_key(outcome), outcome_key(engine.label(task, lang, texts)))
    assert len(engine.cache.slots()) == 4  # one bank index per stack, shared by every row that uses it


def test_long_texts_are_read_in_windows_never_truncated(world: World) -> None:
    [sentiment] = world.engine.label("sentiment", "yo", [LONG_TEXT])
    assert sentiment.windows > 5
    assert sum(score for _, score in sentiment.scores) == pytest.approx(1.0)
    [ner] = world.engine.label("ner", "yo", [LONG_TEXT])
    assert ner.windows > 5
    assert max(e.start for e in ner.entities) > 0.75 * len(LONG_TEXT)  # the tail was read too
    assert all(LONG_TEXT[e.start : e.end] == e.text for e in ner.entities)


def test_fallbacks_and_unknown_languages(world: World) -> None:
    [result] = world.engine.label("ner", "ha", [HA_TEXT])
    assert result.route.fallback_reason is None and result.route.key.language is None  # task-only by design
    with pytest.raises(ServeError) as caught:
        world.engine.label("ner", "sw", ["Habari"])
    assert caught.value.status == 404 and caught.value.extra["available"] == ["hau_Latn", "yor_Latn"]


def corrupt_copy(store: AdapterStore, adapter_id: str, tmp: Path) -> Path:
    """A copy of a stored adapter folder whose weights file is garbage (publishing it succeeds)."""
    source = store.path(adapter_id)
    folder = tmp / f"corrupt-{adapter_id}"
    shutil.copytree(source, folder)
    (folder / "manifest.json").unlink()
    (folder / "adapter.safetensors").write_bytes(b"\x00not safetensors" * 64)
    return folder


def test_hot_loading_swaps_versions_keeps_in_flight_ones_and_refuses_broken_ones(
    tiny_xlmr_dir: Path, tmp_path: Path
) -> None:
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path / "store")
    factory = AdapterFactory(info, seed=7)
    v1 = factory.publish_task_adapter(store, "yor_Latn", "sentiment")
    engine = Engine(InferenceSettings(base=str(tiny_xlmr_dir), store=str(store.root), defaults=None, threads=1))
    assert engine.preload(8) == 1
    assert engine.refresh() is False  # nothing changed
    [before] = engine.label("sentiment", "yo", [YO_TEXT])
    assert before.route.key.task == AdapterRef(v1.id, 1)

    held = engine.cache.acquire(before.route.key)  # a request in flight on v1
    factory.publish_task_adapter(store, "yor_Latn", "sentiment")
    assert engine.refresh() is True
    slots = {s.key.task.version: (s.leases, s.retired) for s in engine.cache.slots().values()}
    assert slots == {1: (1, True), 2: (0, False)}  # v2 loaded into a fresh index before the switch
    [after] = engine.label("sentiment", "yo", [YO_TEXT])
    assert after.route.key.task.version == 2 and after.scores != before.scores
    engine.cache.release(held)
    assert [s.key.task.version for s in engine.cache.slots().values()] == [2]

    meta = v1.model_dump(exclude={"version", "files", "created"})
    store.publish(corrupt_copy(store, v1.id, tmp_path), meta)  # v3: checksums fine, weights unreadable
    store.publish(store.path(v1.id, 2), {**meta, "base_fingerprint": "0" * 64})  # v4: another base model
    assert engine.refresh() is True
    [still] = engine.label("sentiment", "yo", [YO_TEXT])
    assert still.route.key.task.version == 2
    assert list(engine.router.refused) == [AdapterRef(v1.id, 3)]
    reasons = engine.status()["refused"]
    assert list(reasons) == [f"{v1.id}@v3"] and reasons[f"{v1.id}@v3"].startswith("SafetensorError")

    factory.publish_task_adapter(store, "yor_Latn", "sentiment")  # v5 repairs it
    engine.refresh()
    assert engine.label("sentiment", "yo", [YO_TEXT])[0].route.key.task.version == 5


def test_every_fault_at_load_is_refused_with_its_reason_while_the_previous_version_keeps_serving(
    tiny_xlmr_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Truncated weights, a checksum that no longer matches, a planted pickle, a manifest with wrong types, another
    base model's fingerprint, and a store that can no longer be written: v1 answers throughout."""
    import errno
    import json

    from langadapt.errors import StoreError

    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path / "store")
    factory = AdapterFactory(info, seed=9)
    v1 = factory.publish_task_adapter(store, "yor_Latn", "sentiment")
    engine = Engine(InferenceSettings(base=str(tiny_xlmr_dir), store=str(store.root), defaults=None, threads=1))
    [before] = engine.label("sentiment", "yo", [YO_TEXT])
    meta = v1.model_dump(exclude={"version", "files", "created"})

    truncated = corrupt_copy(store, v1.id, tmp_path)
    weights = store.path(v1.id) / "adapter.safetensors"
    (truncated / "adapter.safetensors").write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    store.publish(truncated, meta)  # v2: the checksums are of the truncated file
    for version in (3, 4, 5):
        assert factory.publish_task_adapter(store, "yor_Latn", "sentiment").version == version
    tampered = store.path(v1.id, 3) / "adapter.safetensors"
    tampered.write_bytes(tampered.read_bytes()[:-1] + b"\x00")  # v3: one byte changed after publishing
    (store.path(v1.id, 4) / "pytorch_adapter.bin").write_bytes(b"\x80\x04K\x01.")  # v4: a pickle planted
    manifest = store.path(v1.id, 5) / "manifest.json"  # v5: edited by hand into wrong types
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "labels": "positive", "metrics": [1]}))
    store.publish(store.path(v1.id, 1), {**meta, "base_fingerprint": "0" * 64})  # v6: another base model

    with caplog.at_level("WARNING"):
        assert engine.refresh() is True
        [after] = engine.label("sentiment", "yo", [YO_TEXT])
    assert after.route.key.task == AdapterRef(v1.id, 1) and after.scores == before.scores
    refused = engine.status()["refused"]
    assert refused[f"{v1.id}@v2"].startswith("SafetensorError")
    assert "sha256" in refused[f"{v1.id}@v3"]
    assert "pickle file: never loaded" in refused[f"{v1.id}@v4"]
    assert "manifest.json is unreadable" in caplog.text and "labels" in caplog.text  # v5, refused when listed
    assert "labels: Input should be a valid list (got 'positive')" in refused[f"{v1.id}@v5"]
    assert "metrics: Input should be a valid dictionary (got [1])" in refused[f"{v1.id}@v5"]
    assert f"{v1.id}@v6" not in refused and not engine.router.table.servable(  # v6: listed, never loaded
        next(c for c in engine.router.table.candidates if c.ref.version == 6)
    )

    real_mkdir = Path.mkdir

    def read_only(path: Path, *args: Any, **kwargs: Any) -> None:
        if path.is_relative_to(store.root):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real_mkdir(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "mkdir", read_only)
        with pytest.raises(StoreError, match=r"cannot be written \(Read-only file system\)") as caught:
            factory.publish_task_adapter(store, "yor_Latn", "sentiment")
        assert "keep serving" in caught.value.hint
        assert engine.refresh() is False
        assert engine.label("sentiment", "yo", [YO_TEXT])[0].route.key.task == AdapterRef(v1.id, 1)


def test_a_broken_newest_version_met_by_a_request_falls_back_and_all_broken_is_503(
    tiny_xlmr_dir: Path, tmp_path: Path
) -> None:
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path / "store")
    factory = AdapterFactory(info, seed=8)
    v1 = factory.publish_task_adapter(store, "hau_Latn", "ner")
    meta = v1.model_dump(exclude={"version", "files", "created"})
    store.publish(corrupt_copy(store, v1.id, tmp_path), meta)
    engine = Engine(InferenceSettings(base=str(tiny_xlmr_dir), store=str(store.root), defaults=None, threads=1))
    [result] = engine.label("ner", "ha", [HA_TEXT])  # v2 fails on first use; v1 answers
    assert result.route.key.task.version == 1
    assert AdapterRef(v1.id, 2) in engine.router.refused

    shutil.copy(store.path(v1.id, 2) / "adapter.safetensors", tmp_path / "garbage")
    (store.path(v1.id, 1) / "adapter.safetensors").write_bytes(b"flipped")  # v1 corrupted on disk
    engine.unload(v1.id)
    with pytest.raises(ServeError) as caught:
        engine.label("ner", "ha", [HA_TEXT])
    assert (caught.value.status, caught.value.error) == (503, "adapter_unavailable")
    assert "sha256" in " ".join(caught.value.extra["refused"].values())


def test_onnx_backends_give_the_torch_backends_answers(tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    """Swappable graph for every stack; a fused graph for one stack, the rest on the torch bank path."""
    from langadapt.export import export_fused, export_swappable

    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path / "store")
    factory = AdapterFactory(info, seed=5)
    yo_lang = factory.publish_language_adapter(store, "yor_Latn", kind="seq_bn_inv")
    yo_ner = factory.publish_task_adapter(store, "yor_Latn", "ner", language_adapter=yo_lang, max_length=24, stride=6)
    factory.publish_task_adapter(store, "hau_Latn", "sentiment")
    export_swappable(store, base=str(tiny_xlmr_dir))
    export_fused(store, yo_lang.id, yo_ner.id, base=str(tiny_xlmr_dir))

    requests = [("ner", "yo", [YO_TEXT, LONG_TEXT[:200]]), ("sentiment", "ha", [HA_TEXT])]
    answers = {}
    for backend in ("torch", "onnx-swappable", "onnx-fused"):
        engine = Engine(
            InferenceSettings(base=str(tiny_xlmr_dir), store=str(store.root), defaults=None, threads=1, backend=backend)
        )
        answers[backend] = engine.run([Job(engine.resolve(t, lang), texts) for t, lang, texts in requests])
        if backend == "onnx-fused":
            ner_key = engine.resolve("ner", "yo").key
            assert engine.backend.fused_for(ner_key) is not None
            assert engine.backend.fused_for(engine.resolve("sentiment", "ha").key) is None
    for backend in ("onnx-swappable", "onnx-fused"):
        for ours, reference in zip(answers[backend], answers["torch"], strict=True):
            assert_same(outcome_key(ours), outcome_key(reference))


def test_the_swappable_backend_needs_an_exported_graph(world: World) -> None:
    from langadapt.errors import LangadaptError

    settings = InferenceSettings(base=str(world.info.path), store=str(world.store.root), defaults=None)
    with pytest.raises(LangadaptError, match="no swappable ONNX graph"):
        Engine(settings.model_copy(update={"backend": "onnx-swappable"}))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)")
def test_cuda_gives_the_cpu_answers(world: World) -> None:
    engine = Engine(
        InferenceSettings(base=str(world.info.path), store=str(world.store.root), defaults=None, device="auto")
    )
    assert engine.device.type == "cuda"
    requests = [("ner", "yo", [YO_TEXT, LONG_TEXT]), ("sentiment", "ha", [HA_TEXT]), ("sentiment", "yo", [LONG_TEXT])]
    on_gpu = engine.run([Job(engine.resolve(t, lang), texts) for t, lang, texts in requests])
    on_cpu = world.engine.run([Job(world.engine.resolve(t, lang), texts) for t, lang, texts in requests])
    for gpu, cpu in zip(on_gpu, on_cpu, strict=True):
        for a, b in zip(outcome_key(gpu), outcome_key(cpu), strict=True):
            assert a[1] == b[1] and [e[:3] for e in a[3]] == [e[:3] for e in b[3]]
            np.testing.assert_allclose(a[2], b[2], atol=1e-4)


def test_a_text_shared_by_jobs_is_tokenized_once_per_reading(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two classification jobs over the same texts: one tokenizer call, each distinct text once; same results."""
    engine = world.engine
    texts = [HA_TEXT, HA_TEXT, "Ina kwana?"]
    route = engine.resolve("sentiment", "ha")
    alone = engine.run([Job(route, texts)])[0]
    calls: list[list[str]] = []
    tokenizer = engine.tokenizer

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(tokenizer, name)

        def __call__(self, batch: list[str], **kwargs: Any) -> Any:
            calls.append(list(batch))
            return tokenizer(batch, **kwargs)

    monkeypatch.setattr(engine, "tokenizer", Counting())
    twice = engine.run([Job(route, texts), Job(route, texts[::-1])])
    assert calls == [[HA_TEXT, "Ina kwana?"]]
    assert isinstance(alone, list) and isinstance(twice[0], list) and isinstance(twice[1], list)
    assert [r.label for r in twice[0]] == [r.label for r in alone]
    assert [r.label for r in twice[1]] == [r.label for r in alone][::-1]
    for a, b in zip(alone, twice[0], strict=True):
        assert a.scores[0][1] == pytest.approx(b.scores[0][1], abs=1e-6)
