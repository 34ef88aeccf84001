"""The Ray Serve application on a local Ray (2 CPUs): two languages over HTTP, parity, multiplexing, errors.

One Ray session and one `serve.run` for the module: an ingress and two labeler replicas on the tiny model with a
store of random adapters (Yoruba with a language adapter, Hausa without; NER and sentiment). Answers are compared
with a plain `Engine` on the same store, encoded by the LitServe task APIs' own encoders.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'langadapt[ray]')")
serve = pytest.importorskip("ray.serve", reason="ray[serve] is not installed (pip install 'langadapt[ray]')")

from langadapt.inference.engine import Engine  # noqa: E402
from langadapt.inference.errors import ServeError  # noqa: E402
from langadapt.inference.settings import InferenceSettings  # noqa: E402
from langadapt.models.base import resolve_base_model  # noqa: E402
from langadapt.models.store import AdapterStore  # noqa: E402
from langadapt.serve.api import response_body  # noqa: E402
from langadapt.serve.ray_app import (  # noqa: E402
    HELD_HEADER,
    REPLICA_HEADER,
    STACK_HEADER,
    HeldStack,
    RaySettings,
    build,
    stack_id,
)
from langadapt.serve.schemas import LabelRequest  # noqa: E402
from langadapt.serve.settings import ServingSettings  # noqa: E402
from langadapt.serve.synthetic import AdapterFactory  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve_config.yaml"
YO_TEXT = "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja lánàá."
HA_TEXT = "Shugaban kasa ya ziyarci Legas ranar Litinin."
LONG_TEXT = " ".join(["Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá, ó sì padà wá sílé."] * 12)
REQUESTS: list[tuple[str, str, list[str]]] = [
    ("ner", "yo", [YO_TEXT, LONG_TEXT]),
    ("sentiment", "yor_Latn", [YO_TEXT, HA_TEXT]),
    ("ner", "hau", [HA_TEXT]),
    ("sentiment", "ha", [HA_TEXT, LONG_TEXT]),
]


@dataclass
class RayApp:
    """The running application, the plain engine on the same store, and what published it."""

    url: str
    engine: Engine
    store: AdapterStore
    factory: AdapterFactory

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ray_app(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayApp]:
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path_factory.mktemp("ray-store"))
    factory = AdapterFactory(info, seed=5)
    yo_lang = factory.publish_language_adapter(store, "yor_Latn")
    for task in ("ner", "sentiment"):
        factory.publish_task_adapter(store, "yor_Latn", task, language_adapter=yo_lang, max_length=24, stride=6)
        factory.publish_task_adapter(store, "hau_Latn", task)
    settings = InferenceSettings(base=str(tiny_xlmr_dir), store=str(store.root), defaults=None, threads=1, max_rows=4)
    engine = Engine(settings)
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a shared cluster
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = {
            "base": str(tiny_xlmr_dir),
            "store": str(store.root),
            "defaults": "false",  # as `serve run ... defaults=false` passes it
            "threads": "1",
            "tasks": "ner,sentiment",
            "labeler_replicas": 2,
            "labeler_cpus": 0.5,
            "ingress_cpus": 0.25,
            "max_batch_size": 4,
            "batch_timeout": 0.05,
            "watch_interval": 0.2,
        }
        serve.run(build(args), name="langadapt", route_prefix="/")
        yield RayApp(f"http://127.0.0.1:{port}", engine, store, factory)
    finally:
        serve.shutdown()
        ray.shutdown()


def expected_body(engine: Engine, task: str, lang: str, texts: list[str]) -> dict[str, Any]:
    """What the LitServe server answers: the plain engine's results through its task API's encoder."""
    results = engine.label(task, lang, texts)
    body = response_body(task, LabelRequest(lang=lang, texts=texts), results[0].route.language, results)
    return body.model_dump(mode="json")


def assert_close(got: Any, want: Any, path: str = "") -> None:
    """Equal JSON, floats within 1e-5."""
    if isinstance(want, float):
        assert isinstance(got, float | int) and math.isclose(got, want, abs_tol=1e-5), (path, got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, got, want)
        for key in want:
            assert_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (path, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}[{i}]")
    else:
        assert got == want, (path, got, want)


def test_builder_args_are_validated() -> None:
    assert RaySettings.model_validate({"tasks": "ner", "max_batch_size": "8"}).max_batch_size == 8
    settings = RaySettings(fallback="kin=swh; ibo=yor")
    assert settings.fallback == {"kin_Latn": ("swh_Latn",), "ibo_Latn": ("yor_Latn",)}
    shared = set(ServingSettings.model_fields) - {"watch_interval"}  # the one default of its own, with its reason
    ray_defaults, serving_defaults = RaySettings(), ServingSettings()
    assert {k: getattr(ray_defaults, k) for k in shared} == {k: getattr(serving_defaults, k) for k in shared}
    assert ray_defaults.watch_interval > serving_defaults.watch_interval
    for bad in ({"tasks": "ner,pos"}, {"backend": "tensorrt"}, {"device": "tpu"}):
        with pytest.raises(ValueError, match=r"pos|tensorrt|tpu"):
            RaySettings.model_validate(bad)
    with pytest.raises(ValueError, match="bsae"):
        build({"bsae": "embedded"})
    with pytest.raises(ValueError, match="no lid_threshold"):
        RaySettings.model_validate({"lid_threshold": "0.9"})


def test_the_serve_config_file_is_valid_for_serve_deploy() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text(encoding="utf-8")))
    [app] = config.applications
    assert app.import_path == "langadapt.serve.ray_app:build"
    settings = RaySettings.model_validate(app.args)
    assert settings.tasks == ("ner", "sentiment", "topic") and settings.base == "embedded"
    assert {d.name for d in app.deployments} == {"Labeler", "LangadaptIngress"}


def test_two_languages_over_http_equal_the_plain_engine(ray_app: RayApp) -> None:
    with ray_app.client() as client:
        for task, lang, texts in REQUESTS:
            response = client.post(f"/v1/{task}", json={"lang": lang, "texts": texts})
            assert response.status_code == 200, response.text
            want = expected_body(ray_app.engine, task, lang, texts)
            assert_close(response.json(), want)
            assert response.headers["x-langadapt-language"] == want["language"]
            route = ray_app.engine.resolve(task, lang)
            assert response.headers[STACK_HEADER] == stack_id(route.key)
    windowed = [r["windowed"] for r in want["results"]]
    assert windowed == [False, True]  # the long text was read in several windows on the replica too


def test_each_stack_is_served_by_the_replica_that_holds_it(ray_app: RayApp) -> None:
    """Ray routes a stack's requests to the labeler replica whose multiplexed loader loaded it."""
    answered: dict[str, set[str]] = {}
    with ray_app.client() as client:
        for task, lang, texts in REQUESTS:  # every stack once, then time for replicas to report what they hold
            client.post(f"/v1/{task}", json={"lang": lang, "texts": texts[:1]}).raise_for_status()
        time.sleep(1.5)
        for _ in range(3):
            for task, lang, texts in REQUESTS:
                response = client.post(f"/v1/{task}", json={"lang": lang, "texts": texts[:1]})
                response.raise_for_status()
                stack, replica = response.headers[STACK_HEADER], response.headers[REPLICA_HEADER]
                assert stack in response.headers[HELD_HEADER].split(",")
                answered.setdefault(stack, set()).add(replica)
    stacks = {stack_id(ray_app.engine.resolve(task, lang).key) for task, lang, _ in REQUESTS}
    assert set(answered) == stacks and len(stacks) == 4
    assert all(len(replicas) == 1 for replicas in answered.values()), answered
    assert len(set().union(*answered.values())) == 2, "new stacks go to the replica holding fewer"


def test_concurrent_requests_in_both_languages_equal_the_plain_engine(ray_app: RayApp) -> None:
    """Concurrent requests are gathered into batches per stack on the replicas; every answer stays its own."""
    burst = REQUESTS * 3
    with ray_app.client() as client, ThreadPoolExecutor(max_workers=len(burst)) as pool:
        responses = list(
            pool.map(lambda r: client.post(f"/v1/{r[0]}", json={"lang": r[1], "texts": r[2]}), burst, timeout=120)
        )
    for (task, lang, texts), response in zip(burst, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_close(response.json(), expected_body(ray_app.engine, task, lang, texts))
    labeler = serve.get_deployment_handle("Labeler", app_name="langadapt")
    statuses = {s["replica"]: s for s in (labeler.status.remote().result(timeout_s=60) for _ in range(10))}
    assert max(s["largest_batch"] for s in statuses.values()) > 1, statuses  # `@serve.batch` gathered some


def test_errors_have_the_litserve_status_and_body(ray_app: RayApp) -> None:
    with ray_app.client() as client:
        for lang in ("sw", "qqq-nonsense"):
            response = client.post("/v1/ner", json={"lang": lang, "texts": ["Habari"]})
            with pytest.raises(ServeError) as caught:
                ray_app.engine.resolve("ner", lang)
            assert response.status_code == caught.value.status == 404
            assert response.json() == caught.value.body()
            assert response.json()["available"] == ["hau_Latn", "yor_Latn"]
        unknown_task = client.post("/v1/topic", json={"lang": "yo", "texts": ["x"]})
        assert unknown_task.status_code == 404 and unknown_task.json()["error"] == "unknown_task"
        empty = client.post("/v1/ner", json={"lang": "yo", "texts": []})
        assert empty.status_code == 422 and empty.json()["error"] == "invalid_request"
        too_many = client.post("/v1/ner", json={"lang": "yo", "texts": ["x"] * 65})
        assert too_many.status_code == 413 and too_many.json()["error"] == "payload_too_large"
        plain = client.post("/v1/ner", content=b"lang=yo", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415 and plain.json()["error"] == "unsupported_media_type"
        auto = client.post("/v1/ner", json={"lang": "auto", "texts": [YO_TEXT]})
        assert auto.status_code == 422 and auto.json()["error"] == "language_id_unsupported"
        assert "langadapt serve" in auto.json()["detail"] and "lang" in auto.json()["hint"]


def test_health_ready_and_metrics(ray_app: RayApp) -> None:
    with ray_app.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["routes"] == 4
        assert "langadapt_requests" in client.get("/metrics").text


def test_a_language_published_while_running_is_served_without_restart(ray_app: RayApp) -> None:
    with ray_app.client() as client:
        assert client.post("/v1/ner", json={"lang": "ibo", "texts": ["Nwa ahụ gara ụlọ akwụkwọ."]}).status_code == 404
        ray_app.factory.publish_task_adapter(ray_app.store, "ibo_Latn", "ner")
        deadline = time.monotonic() + 30
        while True:
            response = client.post("/v1/ner", json={"lang": "ibo", "texts": ["Nwa ahụ gara ụlọ akwụkwọ."]})
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert response.status_code == 200, response.text
    assert response.headers[STACK_HEADER] == "ibo_Latn-ner@v1"


def test_a_held_stack_evicts_its_stack_once(ray_app: RayApp) -> None:
    """Ray's LRU unload (`__del__`) evicts the stack; a stale holder never evicts a stack loaded again."""
    engine = ray_app.engine
    key = engine.resolve("ner", "yo").key
    registry: dict[str, HeldStack] = {}
    engine.cache.activate(key)
    old = registry[stack_id(key)] = HeldStack(stack_id(key), key, engine, registry)
    old.release()
    assert key not in engine.cache.active() and registry == {}
    engine.cache.activate(key)
    new = registry[stack_id(key)] = HeldStack(stack_id(key), key, engine, registry)
    old.release()
    assert key in engine.cache.active() and registry == {stack_id(key): new}
