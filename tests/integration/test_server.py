"""The real server over HTTP: a subprocess on a tiny model and a temporary store, killed in teardown.

One server for the module (`--workers 2`, so hot loading is checked in two worker processes, each serving every
task): every endpoint, every error case with its status and JSON body, the auth matrix, metrics per language,
mixed-language batches, admin operations, hot loading under concurrent requests, and a corrupt publish. A second,
one-worker server checks that one worker process answers every task and that one batch mixes tasks.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from langadapt.models.base import resolve_base_model
from langadapt.models.manifest import Manifest
from langadapt.models.store import AdapterStore
from langadapt.serve.synthetic import AdapterFactory

API_KEY, ADMIN_KEY = "it-api-key-0123456789", "it-admin-key-0123456789"
API = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
YO_TEXT = "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja lánàá."
HA_TEXT = "Shugaban kasa ya ziyarci Legas ranar Litinin."
LONG_TEXT = " ".join(["Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá, ó sì padà wá sílé."] * 20)
TASKS = ["ner", "sentiment", "topic"]
LIMITS = {"texts": 8, "chars": 4000, "body_bytes": 40_000, "queue": 6}


@dataclass
class Server:
    """A running server and what it serves."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    store: AdapterStore
    factory: AdapterFactory
    manifests: dict[str, Manifest]
    tmp: Path
    saw_unready: bool

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers if headers is not None else API, timeout=60)


@pytest.fixture(scope="module")
def server(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tiny_xlmr_dir, tmp_path_factory.mktemp("server"), workers=2, batch_timeout=0.05)


@pytest.fixture(scope="module")
def one_worker_server(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker that waits up to half a second to fill a batch, so concurrent requests share one."""
    yield from start_server(tiny_xlmr_dir, tmp_path_factory.mktemp("pool"), workers=1, batch_timeout=0.5)


def start_server(tiny_xlmr_dir: Path, tmp: Path, *, workers: int, batch_timeout: float) -> Iterator[Server]:
    """Publish the test adapters into a fresh store, start `langadapt serve` on it, yield once it is ready."""
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp / "store")
    factory = AdapterFactory(info, seed=11)
    manifests: dict[str, Manifest] = {}
    yo_lang = manifests["yo-lang"] = factory.publish_language_adapter(store, "yor_Latn")
    for task in ("ner", "sentiment", "topic"):
        manifests[f"yo-{task}"] = factory.publish_task_adapter(
            store, "yor_Latn", task, language_adapter=yo_lang, max_length=32, stride=8
        )
    manifests["ha-ner"] = factory.publish_task_adapter(store, "hau_Latn", "ner")
    manifests["ha-sentiment"] = factory.publish_task_adapter(store, "hau_Latn", "sentiment")
    manifests["sw-topic"] = factory.publish_task_adapter(store, "swh_Latn", "topic")

    from conftest import start_serve

    served = start_serve(
        tmp,
        *("--base", str(tiny_xlmr_dir), "--store", str(store.root), "--no-defaults"),
        *("--workers", str(workers), "--threads", "1"),
        *("--max-batch-size", "8", "--batch-timeout", str(batch_timeout), "--watch-interval", "0.05"),
        *("--max-texts", str(LIMITS["texts"]), "--max-chars", str(LIMITS["chars"])),
        *("--max-body-bytes", str(LIMITS["body_bytes"]), "--max-queue", str(LIMITS["queue"])),
        *("--fallback", "kin=swh", "--runtime-dir", str(tmp / "runtime"), "--log-level", "info"),
        env={"LANGADAPT_API_KEYS": API_KEY, "LANGADAPT_ADMIN_KEYS": ADMIN_KEY},
    )
    process, log, url = served.process, served.log, served.url
    saw_unready = False
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            with contextlib.suppress(httpx.TransportError):
                response = httpx.get(f"{url}/ready", timeout=5)
                if response.status_code == 200:
                    break
                assert response.status_code == 503 and response.json()["error"] == "not_ready"
                saw_unready = True
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready within 180 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield Server(url, process, log, store, factory, manifests, tmp, saw_unready)
    finally:
        served.stop()


def stack_of(result: dict[str, Any]) -> tuple[str, int, str | None]:
    stack = result["stack"]
    language = stack["language_adapter"]["id"] if stack["language_adapter"] else None
    return stack["task_adapter"]["id"], stack["task_adapter"]["version"], language


# ------------------------------------------------------------------------------------- endpoints


def test_health_ready_docs(server: Server) -> None:
    with server.client({}) as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready").json()
        assert ready["ready"] is True and ready["workers"] == {"ready": 2, "expected": 2} and ready["stacks"] >= 4
        schema = client.get("/openapi.json").json()
        paths = {"/v1/ner", "/v1/sentiment", "/v1/topic", "/v1/label", "/v1/adapters", "/v1/adapters/load"}
        assert paths <= set(schema["paths"])
        label = schema["paths"]["/v1/label"]["post"]
        assert label["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/MultiTaskRequest")
        assert label["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/MultiTaskResponse")
        ner = schema["paths"]["/v1/ner"]["post"]
        assert ner["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/LabelRequest")
        assert ner["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/NerResponse")
        assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("lang", ["yo", "yor", "yor-Latn", "yor_Latn", "Yoruba"])
def test_ner_answers_entities_with_offsets_into_the_original_text(server: Server, lang: str) -> None:
    with server.client() as client:
        response = client.post("/v1/ner", json={"lang": lang, "texts": [YO_TEXT, LONG_TEXT]})
    assert response.status_code == 200, response.text
    assert response.headers["x-langadapt-language"] == "yor_Latn"
    body = response.json()
    assert (body["task"], body["lang"], body["language"]) == ("ner", lang, "yor_Latn")
    short, long = body["results"]
    assert stack_of(short)[0::2] == ("yor_Latn-ner", "yor_Latn-mlm-seq_bn")
    assert short["stack"]["fallback"] is False and short["stack"]["adapter_language"] == "yor_Latn"
    assert long["windowed"] is True and long["windows"] > 1
    for text, result in ((YO_TEXT, short), (LONG_TEXT, long)):
        assert result["entities"], "random heads tag something"
        for entity in result["entities"]:
            assert set(entity) == {"type", "text", "start", "end", "score"}
            assert text[entity["start"] : entity["end"]] == entity["text"]
            assert 0.0 < entity["score"] <= 1.0


@pytest.mark.parametrize("task", ["sentiment", "topic"])
def test_classification_answers_labels_with_scores(server: Server, task: str) -> None:
    with server.client() as client:
        response = client.post(f"/v1/{task}", json={"lang": "yo", "texts": ["Ọ dára.", LONG_TEXT]})
    assert response.status_code == 200, response.text
    short, long = response.json()["results"]
    labels = server.manifests[f"yo-{task}"].labels
    for result in (short, long):
        assert result["label"] in labels and result["label"] == result["scores"][0]["label"]
        assert [s["label"] for s in result["scores"]] != [] and {s["label"] for s in result["scores"]} == set(labels)
        assert sum(s["score"] for s in result["scores"]) == pytest.approx(1.0, abs=1e-4)
        assert stack_of(result) == (f"yor_Latn-{task}", 1, "yor_Latn-mlm-seq_bn")
    assert (short["windowed"], long["windowed"]) == (False, True)


def test_fallbacks_are_reported(server: Server) -> None:
    with server.client() as client:
        hausa = client.post("/v1/ner", json={"lang": "ha", "texts": [HA_TEXT]}).json()["results"][0]
        kinyarwanda = client.post("/v1/topic", json={"lang": "rw", "texts": ["Umwana yagiye ku ishuri."]}).json()
    assert hausa["stack"]["fallback"] is False and hausa["stack"]["task_only"] is True  # trained without one
    assert hausa["stack"]["served_by"] == "torch"  # backend auto, no ONNX graph in the store: the torch bank
    assert kinyarwanda["language"] == "kin_Latn"
    stack = kinyarwanda["results"][0]["stack"]
    assert (stack["fallback_reason"], stack["adapter_language"]) == ("related_language", "swh_Latn")


# ---------------------------------------------------------------------------------------- errors

JSON = {"Content-Type": "application/json"}
ERROR_CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("POST", "/v1/ner", {"json": {"lang": "sw", "texts": ["Habari"]}}, 404, "unknown_language"),
    ("POST", "/v1/ner", {"json": {"lang": "qqq-nonsense", "texts": ["x"]}}, 404, "unknown_language"),
    ("POST", "/v1/pos", {"json": {"lang": "yo", "texts": ["x"]}}, 404, "unknown_task"),
    ("GET", "/v1/ner", {}, 405, "method_not_allowed"),
    ("POST", "/v1/ner", {"content": b'{"lang": "yo", "texts": [', "headers": JSON}, 400, "invalid_json"),
    ("POST", "/v1/ner", {"content": b'{"lang": "yo", "texts": ["\xc3\x28"]}', "headers": JSON}, 400, "invalid_body"),
    ("POST", "/v1/ner", {"content": b'{"lang": "yo", "texts": ["\xed\xa0\x80"]}', "headers": JSON}, 422, ""),
    ("POST", "/v1/ner", {"content": b'{"lang": "yo", "texts": ["\\ud800x"]}', "headers": JSON}, 422, ""),
    ("POST", "/v1/ner", {"json": {"lang": "yo", "texts": ["a\u0000b"]}}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"json": {"lang": "yo", "texts": []}}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"json": {"lang": "yo", "texts": [""]}}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"json": {"lang": "yo", "texts": "one text"}}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"json": {"lang": ["yo"], "texts": ["x"]}}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"json": {"lang": "yo", "texts": ["x"], "model": "big"}}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"json": None}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"content": b"lang=yo", "headers": {"Content-Type": "text/plain"}}, 415, ""),
    ("POST", "/v1/ner", {"json": {"lang": "yo", "texts": ["x"] * 9}}, 413, "payload_too_large"),
    ("POST", "/v1/ner", {"json": {"lang": "yo", "texts": ["x" * 4001]}}, 413, "payload_too_large"),
    ("POST", "/v1/ner", {"json": {"lang": "yo", "texts": ["x " * 3000] * 8}}, 413, "payload_too_large"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "error"), ERROR_CASES)
def test_bad_requests_get_their_status_and_a_json_error(
    server: Server, method: str, path: str, kwargs: dict[str, Any], status: int, error: str
) -> None:
    kwargs = dict(kwargs)
    headers = {**API, **kwargs.pop("headers", {})}
    with server.client() as client:
        response = client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail", "hint"} <= set(body) and body["detail"] and body["hint"]
    expected = error or {415: "unsupported_media_type", 422: "invalid_request"}[status]
    assert body["error"] == expected
    if body["error"] == "unknown_language":
        assert body["available"] == ["hau_Latn", "yor_Latn"] and "ner is available in" in body["hint"]


def test_a_burst_past_the_queue_limit_gets_429_with_retry_after(server: Server) -> None:
    barrier = threading.Barrier(16)
    answers: list[httpx.Response] = []

    def fire() -> None:
        with server.client() as client:
            barrier.wait()
            answers.append(client.post("/v1/sentiment", json={"lang": "yo", "texts": [LONG_TEXT] * 8}))

    threads = [threading.Thread(target=fire) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) == {200, 429}, statuses
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["Retry-After"] == "1" and refused.json()["error"] == "queue_full"
    assert statuses.count(200) <= LIMITS["queue"] + 2  # admitted while others were answered


# ------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", "/v1/ner", {}, 401),
        ("POST", "/v1/ner", {"Authorization": "Bearer wrong-key-000000"}, 403),
        ("POST", "/v1/ner", {"X-API-Key": API_KEY}, 200),
        ("POST", "/v1/ner", API, 200),
        ("POST", "/v1/ner", ADMIN, 200),
        ("GET", "/v1/adapters", {}, 401),
        ("GET", "/v1/adapters", API, 403),
        ("GET", "/v1/adapters", {"X-API-Key": "wrong-key-000000"}, 403),
        ("GET", "/v1/adapters", ADMIN, 200),
        ("DELETE", "/v1/adapters/yor_Latn-topic", API, 403),
        ("POST", "/v1/adapters/yor_Latn-topic/pin", {}, 401),
        ("GET", "/health", {}, 200),
        ("GET", "/ready", {}, 200),
        ("GET", "/metrics", {}, 200),
    ],
)
def test_auth_matrix(server: Server, method: str, path: str, headers: dict[str, str], status: int) -> None:
    body = {"json": {"lang": "yo", "texts": ["Ọ dára."]}} if method == "POST" and path == "/v1/ner" else {}
    with server.client(headers) as client:
        response = client.request(method, path, **body)
    assert response.status_code == status, response.text
    if status in (401, 403):
        assert response.json()["error"] in ("unauthorized", "forbidden")


# ---------------------------------------------------------------------------------------- metrics


def samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_merged_across_processes_and_labelled_by_language(server: Server) -> None:
    with server.client() as client:
        before = samples(client)
        for _ in range(3):
            assert client.post("/v1/ner", json={"lang": "yo", "texts": [YO_TEXT]}).status_code == 200
        for _ in range(2):
            assert client.post("/v1/ner", json={"lang": "hau", "texts": [HA_TEXT, HA_TEXT]}).status_code == 200
        assert client.post("/v1/ner", json={"lang": "sw", "texts": ["x"]}).status_code == 404
        after = samples(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("langadapt_requests_total", task="ner", language="yor_Latn", status="200") == 3
    assert delta("langadapt_requests_total", task="ner", language="hau_Latn", status="200") == 2
    assert delta("langadapt_requests_total", task="ner", language="none", status="404") == 1
    assert delta("langadapt_request_seconds_count", task="ner", language="hau_Latn", status="200") == 2
    assert delta("langadapt_batch_texts_sum", task="ner") == 3 * 1 + 2 * 2  # the 404 never reached the engine
    assert delta("langadapt_batch_tokens_sum", task="ner") > 0
    assert value(after, "langadapt_adapter_loads_total", task="all", result="ok") >= 4  # two workers, two stacks
    assert value(after, "langadapt_adapter_load_seconds_count", task="all") >= 4
    assert value(after, "langadapt_cache_bytes", task="all") > 0
    assert value(after, "langadapt_queue_depth", task="ner") == 0


def test_a_mixed_language_batch_gives_what_each_request_gives_alone(server: Server) -> None:
    requests = [
        ("ner", {"lang": "yo", "texts": [YO_TEXT]}),
        ("ner", {"lang": "ha", "texts": [HA_TEXT, YO_TEXT]}),
        ("ner", {"lang": "yor", "texts": [LONG_TEXT[:400]]}),
        ("sentiment", {"lang": "ha", "texts": [HA_TEXT]}),
        ("sentiment", {"lang": "yo", "texts": [YO_TEXT, HA_TEXT]}),
    ]
    with server.client() as client:
        alone = [client.post(f"/v1/{task}", json=body).json() for task, body in requests]
        before = samples(client)
        together: list[Any] = [None] * len(requests)
        barrier = threading.Barrier(len(requests))

        def send(i: int) -> None:
            with server.client() as own:
                barrier.wait()
                together[i] = own.post(f"/v1/{requests[i][0]}", json=requests[i][1]).json()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = samples(client)
    labels = ("ner", "sentiment", "mixed")
    batches = sum(
        value(after, "langadapt_batch_requests_count", task=t) - value(before, "langadapt_batch_requests_count", task=t)
        for t in labels
    )
    requests_in_batches = sum(
        value(after, "langadapt_batch_requests_sum", task=t) - value(before, "langadapt_batch_requests_sum", task=t)
        for t in labels
    )
    assert requests_in_batches == 5 and batches < 5, "requests were batched together"
    for a, b in zip(alone, together, strict=True):
        assert a["language"] == b["language"]
        for ra, rb in zip(a["results"], b["results"], strict=True):
            assert ra["stack"] == rb["stack"]
            if "entities" in ra:
                assert [(e["type"], e["start"], e["end"]) for e in ra["entities"]] == [
                    (e["type"], e["start"], e["end"]) for e in rb["entities"]
                ]
                for ea, eb in zip(ra["entities"], rb["entities"], strict=True):
                    assert ea["score"] == pytest.approx(eb["score"], abs=1e-5)
            else:
                assert ra["label"] == rb["label"]
                for sa, sb in zip(ra["scores"], rb["scores"], strict=True):
                    assert sa["label"] == sb["label"] and sa["score"] == pytest.approx(sb["score"], abs=1e-5)


# ------------------------------------------------------------------------------ one pool, /v1/label


def same_result(single: dict[str, Any], multi: dict[str, Any]) -> None:
    """A task's result in a `/v1/label` response equals its single-task response's result."""
    assert single["stack"] == multi["stack"] and single["windows"] == multi["windows"]
    if "entities" in single:
        assert [(e["type"], e["start"], e["end"]) for e in single["entities"]] == [
            (e["type"], e["start"], e["end"]) for e in multi["entities"]
        ]
    else:
        assert single["label"] == multi["label"]
        assert single["score"] == pytest.approx(multi["score"], abs=1e-5)


def test_label_answers_every_task_of_the_language_in_one_response(server: Server) -> None:
    texts = [YO_TEXT, "Ọ dára.", LONG_TEXT[:600]]
    with server.client() as client:
        response = client.post("/v1/label", json={"lang": "yo", "texts": texts})
        singles = {t: client.post(f"/v1/{t}", json={"lang": "yo", "texts": texts}).json() for t in TASKS}
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["lang"], body["language"], body["tasks"], body["unavailable"]) == ("yo", "yor_Latn", TASKS, {})
    assert len(body["results"]) == len(texts)
    for i, result in enumerate(body["results"]):
        for task in TASKS:
            same_result(singles[task]["results"][i], result[task])


def test_label_leaves_out_tasks_the_language_lacks_unless_asked_for(server: Server) -> None:
    with server.client() as client:
        left_to_server = client.post("/v1/label", json={"lang": "ha", "texts": [HA_TEXT]})
        asked = client.post("/v1/label", json={"lang": "ha", "texts": [HA_TEXT], "tasks": ["topic", "ner"]})
        some = client.post("/v1/label", json={"lang": "ha", "texts": [HA_TEXT], "tasks": ["sentiment"]})
    assert left_to_server.status_code == 200, left_to_server.text
    body = left_to_server.json()
    assert body["tasks"] == ["ner", "sentiment"] and set(body["unavailable"]) == {"topic"}
    assert body["results"][0]["topic"] is None and body["results"][0]["ner"] is not None
    assert asked.status_code == 404
    error = asked.json()
    assert error["error"] == "task_unavailable" and error["available"] == ["ner", "sentiment"]
    assert "topic" in error["detail"] and "hint" in error
    assert some.status_code == 200 and some.json()["tasks"] == ["sentiment"]
    assert some.json()["results"][0]["ner"] is None


@pytest.mark.parametrize(
    ("tasks", "needle"),
    [(["pos"], "'ner', 'sentiment' or 'topic'"), (["ner", "ner"], "more than once"), ([], "at least 1"), ("ner", "")],
)
def test_label_refuses_bad_task_lists_with_422(server: Server, tasks: Any, needle: str) -> None:
    with server.client() as client:
        response = client.post("/v1/label", json={"lang": "yo", "texts": [YO_TEXT], "tasks": tasks})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and needle in body["detail"] and body["hint"]


def test_one_worker_serves_every_task_and_one_batch_mixes_them(one_worker_server: Server) -> None:
    """Three concurrent requests of three tasks: one worker process answers all, in one batch."""
    server = one_worker_server
    with server.client() as client:
        before = samples(client)
        answers: dict[str, httpx.Response] = {}
        barrier = threading.Barrier(len(TASKS))

        def send(task: str) -> None:
            with server.client() as own:
                barrier.wait()
                answers[task] = own.post(f"/v1/{task}", json={"lang": "yo", "texts": [YO_TEXT]})

        threads = [threading.Thread(target=send, args=(task,)) for task in TASKS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = samples(client)
        workers = client.get("/v1/adapters", headers=ADMIN).json()["workers"]
    assert all(a.status_code == 200 for a in answers.values()), {t: a.text for t, a in answers.items()}
    pids = {a.headers["x-langadapt-worker"] for a in answers.values()}
    assert len(pids) == 1 and [str(w["pid"]) for w in workers] == list(pids)
    assert {a.json()["task"] for a in answers.values()} == set(TASKS)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    mixed = delta("langadapt_batch_tasks_count") - delta("langadapt_batch_tasks_bucket", le="1.0")
    assert mixed >= 1, "no batch mixed tasks"
    assert delta("langadapt_batch_requests_sum", task="mixed") >= 2


# ------------------------------------------------------------------------------------------ admin


def pool_workers(client: httpx.Client) -> list[dict[str, Any]]:
    return [w for w in client.get("/v1/adapters").json()["workers"] if w["task"] == "all"]


def test_admin_lists_loads_pins_and_unloads_idempotently(server: Server) -> None:
    with server.client(ADMIN) as admin:
        listing = admin.get("/v1/adapters").json()
        ids = {a["id"] for a in listing["available"]}
        assert {"yor_Latn-ner", "yor_Latn-mlm-seq_bn", "hau_Latn-ner", "swh_Latn-topic"} <= ids
        assert len(listing["workers"]) == 2 and len({w["pid"] for w in listing["workers"]}) == 2
        runtimes = [w["runtime"] for w in listing["workers"]]
        assert all(r["backend"] == "auto" and r["build_problem"] == "background builds are off" for r in runtimes)

        for _ in range(2):
            response = admin.delete("/v1/adapters/hau_Latn-ner")
            assert response.status_code == 200 and response.json()["applied"] is True
            assert all(
                all(a["task_adapter"]["id"] != "hau_Latn-ner" for a in w["active"]) for w in response.json()["workers"]
            )
        for _ in range(2):
            response = admin.post("/v1/adapters/load", json={"id": "hau_Latn-ner"})
            assert response.status_code == 200 and response.json()["applied"] is True
        assert all(any(a["task_adapter"]["id"] == "hau_Latn-ner" for a in w["active"]) for w in pool_workers(admin))

        response = admin.post("/v1/adapters/hau_Latn-ner/pin")
        assert response.status_code == 200
        assert admin.get("/v1/adapters").json()["pinned"] == ["hau_Latn-ner"]
        for worker in pool_workers(admin):
            [stack] = [a for a in worker["active"] if a["task_adapter"]["id"] == "hau_Latn-ner"]
            assert stack["pinned"] is True
        assert admin.post("/v1/adapters/hau_Latn-ner/unpin").status_code == 200
        assert admin.get("/v1/adapters").json()["pinned"] == []

        missing = admin.delete("/v1/adapters/nope-ner")
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_adapter"
        bad = admin.post("/v1/adapters/load", json={"id": "x", "path": "/y"})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"


def test_admin_publishes_a_folder_and_serves_it(server: Server) -> None:
    folder = server.tmp / "ibo-ner-folder"
    server.factory.save_task_adapter("ibo_Latn-ner", "ner", folder)
    with server.client(ADMIN) as admin:
        body = {"path": str(folder), "language": "ig", "task": "ner"}
        first = admin.post("/v1/adapters/load", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["published"] == {
            "id": "ibo_Latn-ner",
            "version": 1,
            "language": "ibo_Latn",
            "task": "ner",
            "kind": "seq_bn",
        }
        again = admin.post("/v1/adapters/load", json=body)
        assert again.json()["published"]["version"] == 1  # same files: not published twice
        nowhere = admin.post(
            "/v1/adapters/load", json={"path": str(server.tmp / "nope"), "language": "ig", "task": "ner"}
        )
        assert nowhere.status_code == 422 and nowhere.json()["error"] == "invalid_adapter_folder"
    with server.client() as client:
        result = client.post("/v1/ner", json={"lang": "ibo", "texts": ["Nwa ahụ gara ụlọ akwụkwọ na Enugu."]}).json()
    assert stack_of(result["results"][0])[:2] == ("ibo_Latn-ner", 1)


# ------------------------------------------------------------------------------------ hot loading


class Traffic:
    """Client threads posting Yoruba NER requests in a bounded loop, recording versions and failures."""

    def __init__(self, server: Server, threads: int = 3, limit: int = 3000) -> None:
        self.server = server
        self.stop = threading.Event()
        self.versions: list[tuple[float, int]] = []
        self.failures: list[tuple[int, str]] = []
        self.threads = [threading.Thread(target=self._loop, args=(limit,)) for _ in range(threads)]

    def _loop(self, limit: int) -> None:
        with self.server.client() as client:
            for _ in range(limit):
                if self.stop.is_set():
                    return
                try:
                    response = client.post("/v1/ner", json={"lang": "yo", "texts": [YO_TEXT]})
                except httpx.HTTPError as err:
                    self.failures.append((0, repr(err)))
                    continue
                if response.status_code != 200:
                    self.failures.append((response.status_code, response.text))
                else:
                    self.versions.append((time.monotonic(), stack_of(response.json()["results"][0])[1]))

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def wait_for_workers(server: Server, predicate: Any, timeout: float = 15.0) -> float:
    """Seconds until every ner worker's report satisfies `predicate`."""
    started = time.monotonic()
    with server.client(ADMIN) as admin:
        while True:
            workers = pool_workers(admin)
            if len(workers) == 2 and all(predicate(w) for w in workers):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                pytest.fail(f"workers did not get there in {timeout:.0f} s: {workers}")
            time.sleep(0.02)


def has_version(version: int) -> Any:
    return lambda w: any(
        a["task_adapter"]["id"] == "yor_Latn-ner" and a["task_adapter"]["version"] == version and not a["retired"]
        for a in w["active"]
    )


def test_a_new_version_is_hot_loaded_in_both_workers_without_a_failed_request(server: Server) -> None:
    with Traffic(server) as traffic:
        time.sleep(0.5)
        published = server.factory.publish_task_adapter(
            server.store, "yor_Latn", "ner", language_adapter=server.manifests["yo-lang"], max_length=32, stride=8
        )
        switched_at = time.monotonic()
        assert published.version == 2
        seconds = wait_for_workers(server, has_version(2))
        time.sleep(0.5)
    assert traffic.failures == []
    assert seconds < 5, f"the new version took {seconds:.2f} s to reach both workers"
    assert {v for _, v in traffic.versions} == {1, 2}
    late = [v for t, v in traffic.versions if t > switched_at + seconds + 0.2]
    assert late and set(late) == {2}
    with server.client(ADMIN) as admin:  # the old stack left both banks
        assert all(not has_version(1)(w) for w in pool_workers(admin))


def test_a_corrupt_publish_is_refused_while_the_previous_version_keeps_answering(server: Server) -> None:
    source = server.store.path("yor_Latn-ner")  # v2 from the previous test
    folder = server.tmp / "corrupt-ner"
    shutil.copytree(source, folder)
    (folder / "manifest.json").unlink()
    (folder / "adapter.safetensors").write_bytes(b"\x00garbage" * 100)
    meta = server.store.get("yor_Latn-ner").model_dump(exclude={"version", "files", "created"})
    with Traffic(server) as traffic:
        time.sleep(0.3)
        corrupt = server.store.publish(folder, meta)
        wait_for_workers(server, lambda w: f"yor_Latn-ner@v{corrupt.version}" in w["refused"])
        mismatched = server.store.publish(source, {**meta, "base_fingerprint": "0" * 64})
        # a version written by another tool (or edited by hand) whose manifest has wrong types
        wrong = mismatched.version + 1
        folder = server.tmp / "wrong-types-ner"
        shutil.copytree(source, folder)
        fields = json.loads((folder / "manifest.json").read_text())
        fields.update(version=wrong, labels="B-PER", metrics=[0.5])
        (folder / "manifest.json").write_text(json.dumps(fields))
        folder.rename(server.store.root / "adapters" / "yor_Latn-ner" / str(wrong))
        (server.store.root / "GENERATION").write_text(f"{server.store.generation() + 1}\n")
        wait_for_workers(server, lambda w: f"yor_Latn-ner@v{wrong}" in w["refused"])
        with server.client(ADMIN) as admin:  # the same manifest, published through the admin API
            shutil.copytree(source, server.tmp / "wrong-types-folder")
            (server.tmp / "wrong-types-folder" / "manifest.json").write_text(json.dumps(fields))
            refused = admin.post("/v1/adapters/load", json={"path": str(server.tmp / "wrong-types-folder")})
        time.sleep(0.5)
    assert refused.status_code == 422 and refused.json()["error"] == "invalid_adapter_folder", refused.text
    assert "manifest.json has invalid fields: labels: Input should be a valid list (got 'B-PER')" in refused.text
    assert traffic.failures == []
    assert traffic.versions and {v for _, v in traffic.versions} == {2}
    with server.client(ADMIN) as admin:
        listing = admin.get("/v1/adapters").json()
        [entry] = [a for a in listing["available"] if a["id"] == "yor_Latn-ner" and a["version"] == mismatched.version]
        assert (entry["compatible"], entry["servable"]) == (False, False)
        reload = admin.post("/v1/adapters/load", json={"id": "yor_Latn-ner"})
        assert reload.status_code == 200 and f"yor_Latn-ner@v{corrupt.version}" in reload.json()["refused"]
        reason = reload.json()["refused"][f"yor_Latn-ner@v{wrong}"]
        assert "labels: Input should be a valid list (got 'B-PER')" in reason, reason
        assert "metrics: Input should be a valid dictionary (got [0.5])" in reason, reason
        assert server.store.versions("yor_Latn-ner")[-1] == wrong  # nothing was published by the refused call


def test_keys_never_reach_the_log(server: Server) -> None:
    text = server.log.read_text(errors="replace")
    assert "POST /v1/ner" in text  # the access log is on (--log-level info)
    assert API_KEY not in text and ADMIN_KEY not in text
