"""`--backend auto`: ONNX paths only where they measure faster, background builds, demotion, and what it reports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_serve_engine import HA_TEXT, YO_TEXT, assert_same, outcome_key

from langadapt.inference import auto_backend
from langadapt.inference.auto_backend import AutoBackend
from langadapt.inference.builds import ArtifactBuilds, FusedBuild
from langadapt.inference.engine import Engine, Job
from langadapt.inference.settings import InferenceSettings
from langadapt.models.base import BaseModelInfo, resolve_base_model
from langadapt.models.manifest import Manifest
from langadapt.models.store import AdapterStore
from langadapt.models.store_view import store_view
from langadapt.serve.synthetic import AdapterFactory

REQUESTS = [("ner", "yo", [YO_TEXT, YO_TEXT[:20]]), ("sentiment", "ha", [HA_TEXT])]


@dataclass
class Stacks:
    """A tiny base and a store with a Yorùbá NER stack (language + task adapter) and a Hausa sentiment adapter."""

    info: BaseModelInfo
    store: AdapterStore
    yo_lang: Manifest
    yo_ner: Manifest


@pytest.fixture
def stacks(tiny_xlmr_dir: Path, tmp_path: Path) -> Stacks:
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path / "store")
    factory = AdapterFactory(info, seed=11)
    yo_lang = factory.publish_language_adapter(store, "yor_Latn")
    yo_ner = factory.publish_task_adapter(store, "yor_Latn", "ner", language_adapter=yo_lang)
    factory.publish_task_adapter(store, "hau_Latn", "sentiment")
    return Stacks(info, store, yo_lang, yo_ner)


def engine(stacks: Stacks, backend: str = "auto", **update: Any) -> Engine:
    settings = InferenceSettings(
        base=str(stacks.info.path), store=str(stacks.store.root), defaults=None, threads=1, backend=backend
    )
    return Engine(settings.model_copy(update=update))


def answers(e: Engine, repeats: int = 1) -> list[Any]:
    for _ in range(repeats - 1):
        e.run([Job(e.resolve(t, lang), texts) for t, lang, texts in REQUESTS])
    return e.run([Job(e.resolve(t, lang), texts) for t, lang, texts in REQUESTS])


@pytest.fixture
def gain(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the speed-up an ONNX path must show: 0 (always taken) or infinity (never)."""

    def set_gain(value: float) -> None:
        monkeypatch.setattr(auto_backend, "MIN_GAIN", value)

    yield set_gain


def test_auto_is_the_default_and_answers_as_torch_does(stacks: Stacks) -> None:
    assert InferenceSettings().backend == "auto"
    auto, reference = engine(stacks), engine(stacks, "torch")
    ours = answers(auto)
    for a, b in zip(ours, answers(reference), strict=True):
        assert_same(outcome_key(a), outcome_key(b))
    assert {r.served_by for outcome in ours for r in outcome} == {"torch"}
    report = auto.status()["runtime"]
    assert report["backend"] == "auto" and report["fused"] == {} and report["bank_path"]["swappable_graph"] is None


def test_a_hot_stack_serves_fused_only_when_it_measured_faster(stacks: Stacks, gain: Any) -> None:
    from langadapt.export import export_fused

    export_fused(stacks.store, stacks.yo_lang.id, stacks.yo_ner.id, base=str(stacks.info.path))
    reference = answers(engine(stacks, "torch"))

    gain(0.0)
    hot = engine(stacks, auto_promote_after=2, auto_build=False)
    ours = answers(hot, repeats=3)
    for a, b in zip(ours, reference, strict=True):
        assert_same(outcome_key(a), outcome_key(b))
    ner, sentiment = ours
    assert {r.served_by for r in ner} == {"onnx-fused:fp32"}
    assert {r.served_by for r in sentiment} == {"torch"}  # hot too, but it has no fused graph and builds are off
    report = hot.status()["runtime"]
    assert list(report["fused"]) == [str(ner[0].route.key)]
    assert "speed_up" in report["timings"][str(ner[0].route.key)]

    gain(float("inf"))
    cold = engine(stacks, auto_promote_after=2, auto_build=False)
    ner, _ = answers(cold, repeats=3)
    assert {r.served_by for r in ner} == {"torch"}
    assert "needs inf" in cold.status()["runtime"]["not_used"][str(ner[0].route.key)]


def test_the_fused_budget_and_idle_time_bound_open_sessions(stacks: Stacks, gain: Any) -> None:
    from langadapt.export import export_fused

    export_fused(stacks.store, stacks.yo_lang.id, stacks.yo_ner.id, base=str(stacks.info.path))
    gain(0.0)
    small = engine(stacks, auto_promote_after=1, auto_build=False, auto_fused_mb=0.001)
    ner, _ = answers(small)
    assert {r.served_by for r in ner} == {"torch"}
    assert "exceeds the fused budget" in small.status()["runtime"]["not_used"][str(ner[0].route.key)]

    idle = engine(stacks, auto_promote_after=1, auto_build=False, auto_idle_s=0.2)
    ner, _ = answers(idle)
    assert {r.served_by for r in ner} == {"onnx-fused:fp32"}
    time.sleep(0.3)
    idle.run([Job(idle.resolve("sentiment", "ha"), [HA_TEXT])])  # any pass closes sessions idle too long
    assert idle.status()["runtime"]["fused"] == {}


def test_the_swappable_graph_takes_the_pass_sizes_where_it_measured_faster(stacks: Stacks, gain: Any) -> None:
    from langadapt.export import export_swappable

    export_swappable(stacks.store, base=str(stacks.info.path))
    reference = answers(engine(stacks, "torch"))
    gain(0.0)
    fast = engine(stacks, auto_build=False)
    ours = answers(fast)
    for a, b in zip(ours, reference, strict=True):
        assert_same(outcome_key(a), outcome_key(b))
    assert {r.served_by for outcome in ours for r in outcome} == {"onnx-swappable"}
    report = fast.status()["runtime"]
    assert report["bank_path"]["swappable_graph"] and len(report["timings"]) == len(auto_backend.SHAPES)

    gain(float("inf"))
    slow = engine(stacks, auto_build=False)
    assert {r.served_by for outcome in answers(slow) for r in outcome} == {"torch"}
    assert "slower than torch" in slow.status()["runtime"]["not_used"]["onnx-swappable"]


def test_a_hot_stack_without_a_graph_gets_one_built_in_the_background(stacks: Stacks, gain: Any) -> None:
    gain(0.0)
    e = engine(stacks, auto_promote_after=1, auto_build=True, tasks=("ner",))
    [ner] = e.run([Job(e.resolve("ner", "yo"), [YO_TEXT])])
    assert {r.served_by for r in ner} == {"torch"}  # the build has only started
    backend = e.backend
    assert isinstance(backend, AutoBackend) and backend.builds.running()
    deadline = time.monotonic() + 240
    while backend.builds.running() and time.monotonic() < deadline:
        time.sleep(1)
        e.run([Job(e.resolve("ner", "yo"), [YO_TEXT])])  # passes collect the ended build
    [ner] = e.run([Job(e.resolve("ner", "yo"), [YO_TEXT])])
    assert {r.served_by for r in ner} == {"onnx-fused:fp32"}, e.status()["runtime"]
    fused = [m for m in e.stores.candidates() if m.manifest.artifact == "onnx-fused"]
    assert len(fused) == 1 and fused[0].manifest.metrics["parity"]  # published by the export, with its checks


def first_ended(builds: ArtifactBuilds, timeout: float = 120) -> dict[str, str | None]:
    """Poll until a build ends (or `timeout` seconds pass); what `poll()` then returned."""
    deadline = time.monotonic() + timeout
    ended: dict[str, str | None] = {}
    while not ended and time.monotonic() < deadline:
        time.sleep(0.5)
        ended = builds.poll()
    return ended


def test_a_failed_build_is_noted_once_and_not_retried(stacks: Stacks) -> None:
    builds = ArtifactBuilds(store_view(stacks.store.root, None))
    missing = FusedBuild("yor_Latn-ner-seq_bn", 99)  # no such version: the export fails
    assert builds.start(missing)
    ended = first_ended(builds)
    assert ended[missing.key] is not None
    assert builds.failed(missing) and not builds.start(missing)
    assert not ArtifactBuilds(store_view(stacks.store.root, None)).start(missing)  # nor by another worker


def test_a_read_only_store_builds_nothing_and_says_why(stacks: Stacks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AdapterStore, "write_problem", lambda self: "the store is read-only")
    e = engine(stacks, auto_promote_after=1, tasks=("ner",))
    answers_ = e.run([Job(e.resolve("ner", "yo"), [YO_TEXT])])
    assert {r.served_by for r in answers_[0]} == {"torch"}  # type: ignore[union-attr]
    report = e.status()["runtime"]
    assert report["building"] == [] and report["build_problem"] == "the store is read-only"


def test_only_a_stack_with_a_large_share_of_recent_uses_is_hot(stacks: Stacks) -> None:
    backend = engine(stacks, auto_promote_after=4, auto_build=False).backend
    assert isinstance(backend, AutoBackend)
    keys: list[Any] = ["a", "b", "c", "d", "e"]  # any hashable stands for a stack here
    for _ in range(6):
        for key in keys:
            backend._count_use(key)
    assert not any(backend._hot(k) for k in keys)  # five equal shares of 20 %: a mixed stream builds nothing
    for _ in range(40):
        backend._count_use("a")
    assert backend._hot("a") and not backend._hot("b")
    before = backend.uses["a"]
    for _ in range(8 * 4):
        backend._count_use("b")
    assert backend.uses["a"] < before  # counts halved: old traffic fades


def test_timings_are_measured_once_per_machine_and_reused(
    stacks: Stacks, gain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langadapt.export import export_swappable

    export_swappable(stacks.store, base=str(stacks.info.path))
    gain(0.0)
    first = engine(stacks, auto_build=False).status()["runtime"]
    assert first["bank_path"]["swappable_graph"]

    def measured_again(*_: Any, **__: Any) -> float:
        raise AssertionError("timed again although the store holds this machine's timings")

    monkeypatch.setattr(auto_backend, "best_seconds", measured_again)
    second = engine(stacks, auto_build=False).status()["runtime"]
    assert second["timings"] == first["timings"] and second["bank_path"] == first["bank_path"]


def test_a_broken_swappable_graph_leaves_torch_serving_and_says_why(stacks: Stacks, gain: Any) -> None:
    from langadapt.export import export_swappable

    manifest = export_swappable(stacks.store, base=str(stacks.info.path))
    weights = stacks.store.path(manifest.id) / "model.onnx.data"
    weights.write_bytes(weights.read_bytes()[:-64])  # truncated: its checksum no longer matches
    gain(0.0)
    e = engine(stacks, auto_build=False)  # the worker starts, on torch
    assert {r.served_by for outcome in answers(e) for r in outcome} == {"torch"}
    assert "cannot be used" in e.status()["runtime"]["not_used"]["onnx-swappable"]


def test_a_build_of_a_graph_already_in_the_store_exports_nothing(stacks: Stacks) -> None:
    from langadapt.export import export_fused

    published = export_fused(stacks.store, stacks.yo_lang.id, stacks.yo_ner.id, base=str(stacks.info.path))
    builds = ArtifactBuilds(store_view(stacks.store.root, None))
    build = FusedBuild(stacks.yo_ner.id, stacks.yo_ner.version, stacks.yo_lang.id, stacks.yo_lang.version)
    assert builds.start(build)
    ended = first_ended(builds)
    assert ended == {build.key: None}
    assert stacks.store.versions(published.id) == [published.version]  # no second copy
    assert "already in the store" in (builds.folder / f"{build.key}.log").read_text()
