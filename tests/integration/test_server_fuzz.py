"""Fuzz a real server: schemathesis over its own OpenAPI schema, and hypothesis-made texts on every task.

One server for the module (tiny random base, one worker, the default request limits, an admin key configured so
the admin routes are fuzzed past their key check). The promises: no response is a 5xx, none takes longer than
`HANG_S` (a hang), and every NER entity lies inside its text with `text[start:end] == entity["text"]`. The texts
mix the synthetic corpus's words with what breaks text handling: lone surrogates (sent as JSON escapes), control
characters, combining marks, right-to-left and mixed scripts, emoji sequences, zero-width and bidi controls,
characters NFKC expands or merges, 20,000-character texts (the default limit) and thousands of tiny texts.

The quick run (the default, part of `make test`) fuzzes for well under a minute; `LANGADAPT_FUZZ=full` (`make
reliability`) runs 20 times as many examples. Every count here is per test (hypothesis) or per route
(schemathesis).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from langadapt.models.base import resolve_base_model
from langadapt.models.store import AdapterStore
from langadapt.serve.limits import Limits, text_problem
from langadapt.serve.synthetic import AdapterFactory

FULL = os.environ.get("LANGADAPT_FUZZ", "").lower() == "full"
SCALE = 20 if FULL else 1
HANG_S = 60.0  # the server answers 504 after its own 30 s timeout; no answer within 60 s is a hang
ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"
ADMIN = {"X-API-Key": ADMIN_KEY}
LIMITS = Limits()  # the server runs with the default limits
TASK_ROUTES = ("ner", "sentiment", "topic", "label")
LANGS = ("yo", "yor", "yor-Latn", "yor_Latn", "Yoruba")

# Words the tiny tokenizer knows (its training corpus), so texts are not all <unk>.
WORDS = re.findall(
    r"\S+",
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá Adébáyọ̀ ń ṣiṣẹ́ ilé-iṣẹ́ ìjọba Abuja Shugaban kasa ya ziyarci Legas Mtoto "
    "alienda shuleni Nairobi jana Umwana yagiye ku ishuri Kigali ሰላም እንዴት नमस्ते आप 今天天气很好 Ibadan 2 0",
)
COMBINING = [chr(c) for c in range(0x0300, 0x0370)] + ["\u0323\u0301", "\u0e31", "\u093f", "\u20dd"]
RTL = ["مرحبا بالعالم", "שלום עולם", "سلام دنیا", "ہیلو", "ܫܠܡܐ", "‏", "‎", "\u202e", "\u202d", "\u2067", "\u2069"]
EMOJI = ["😀", "👍🏿", "👩‍👩‍👧‍👦", "🇳🇬", "🏳️‍🌈", "❤️", "1️⃣", "🧑🏽‍💻", "🫠", "\U000e0067\U000e0062", "©️"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f", "\u180e", "\ufe0f"]
# NFKC changes these (ligatures, full-width, fractions, ellipsis): offsets must still be into the original text.
NORMALISED = ["ﬁ", "ﬀ", "ﬃ", "Ⅻ", "ｆｕｌｌ", "½", "…", "㍻", "ﷺ", "İ", "ß", "ǅ", "Å", "ℌ", "①", "ㄱ", "가"]
NORMALISED += ["\u1100\u1161"]  # Hangul jamo NFKC composes
SPACES = [" ", "", "  ", "\n", "\t", "\r\n", "\u00a0", "\u2028", "\u3000", "\u2009", "-", ", ", "'", "’", "."]
ODD = COMBINING + RTL + EMOJI + ZERO_WIDTH + NORMALISED + ["\ue000", "\uffff", "\U0010fffd", "\ufffd", "\u0378"]

fragment = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(ODD),
    st.text(max_size=6),  # any code point but lone surrogates
    st.text(st.characters(categories=["L", "M", "N"]), min_size=1, max_size=12),
)
texts_of = st.lists(st.tuples(fragment, st.sampled_from(SPACES)), min_size=1, max_size=30).map(
    lambda parts: "".join(f + s for f, s in parts)
)
bad_character = st.one_of(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates
    st.characters(categories=["Cc"]).filter(lambda c: c not in "\t\n\r"),  # controls the server refuses
)


def fuzz_settings(examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings for a server test: `examples` scaled for the full run, no deadline, no local checks."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


@pytest.fixture(scope="module")
def fuzzed(
    tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., Any]
) -> Iterator[Any]:
    """A one-worker server on a store with Yoruba NER, sentiment, topic (over a language adapter) and Hausa NER."""
    tmp = tmp_path_factory.mktemp("fuzz")
    store = AdapterStore(tmp / "store")
    factory = AdapterFactory(resolve_base_model(str(tiny_xlmr_dir)), seed=3)
    language = factory.publish_language_adapter(store, "yor_Latn")
    for task in ("ner", "sentiment", "topic"):
        factory.publish_task_adapter(store, "yor_Latn", task, language_adapter=language, max_length=32, stride=8)
    factory.publish_task_adapter(store, "hau_Latn", "ner")
    server = launch_server(tiny_xlmr_dir, store.root, tmp, env={"LANGADAPT_ADMIN_KEYS": ADMIN_KEY})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(fuzzed: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.url, timeout=HANG_S) as http:
        yield http


def post(client: httpx.Client, path: str, body: Any = None, *, raw: bytes | None = None) -> httpx.Response:
    """POST, failing the test with what was sent when the server does not answer within HANG_S."""
    started = time.monotonic()
    try:
        if raw is not None:
            response = client.post(path, content=raw, headers={"content-type": "application/json"})
        else:
            response = client.post(path, json=body)
    except httpx.TimeoutException:
        pytest.fail(f"no answer within {HANG_S:.0f} s (a hang) to POST {path} {str(body or raw)[:300]!r}")
    assert response.status_code < 500, (response.status_code, response.text[:500], str(body or raw)[:300])
    assert time.monotonic() - started < HANG_S
    return response


def check_entities(texts: list[str], results: list[dict[str, Any]]) -> int:
    """Every entity inside its text and equal to its slice; how many entities there were."""
    assert len(results) == len(texts)
    found = 0
    for text, result in zip(texts, results, strict=True):
        if result is None:
            continue
        for entity in result["entities"]:
            start, end = entity["start"], entity["end"]
            assert 0 <= start < end <= len(text), (entity, len(text), text[:200])
            assert text[start:end] == entity["text"], (entity, text[max(0, start - 10) : end + 10])
            found += 1
    return found


def check_answer(task: str, texts: list[str], body: dict[str, Any]) -> int:
    """The answer's shape for its task, with entity offsets checked; the entity count."""
    results = body["results"]
    assert len(results) == len(texts)
    if task == "ner":
        return check_entities(texts, results)
    if task == "label":
        return check_entities(texts, [r["ner"] for r in results])
    for result in results:
        scores = [s["score"] for s in result["scores"]]
        assert result["label"] == result["scores"][0]["label"] and abs(sum(scores) - 1) < 1e-3
    return 0


# ------------------------------------------------------------------------------ hypothesis texts


@fuzz_settings(60)
@given(texts=st.lists(texts_of, min_size=1, max_size=6), task=st.sampled_from(TASK_ROUTES), lang=st.sampled_from(LANGS))
def test_generated_texts_are_labelled_or_refused_with_a_4xx(
    client: httpx.Client, texts: list[str], task: str, lang: str
) -> None:
    response = post(client, f"/v1/{task}", {"lang": lang, "texts": texts})
    problems = [text_problem(t) for t in texts]
    if any(problems):  # whitespace-only texts (and bad characters) are refused
        assert response.status_code == 422, (response.text, texts)
        assert response.json()["error"] == "invalid_request"
        return
    assert response.status_code == 200, (response.text, texts)
    check_answer(task, texts, response.json())


@fuzz_settings(30)
@given(
    text=texts_of,
    bad=bad_character,
    where=st.floats(0, 1),
    task=st.sampled_from(TASK_ROUTES),
)
def test_lone_surrogates_and_control_characters_sent_as_json_escapes_are_a_422(
    client: httpx.Client, text: str, bad: str, where: float, task: str
) -> None:
    at = int(where * len(text))
    spoiled = text[:at] + bad + text[at:]
    raw = json.dumps({"lang": "yo", "texts": ["Ọmọ náà lọ.", spoiled]}, ensure_ascii=True).encode("ascii")
    assert bad.encode("utf-8", "surrogatepass") not in raw  # the character travels as a JSON escape
    response = post(client, f"/v1/{task}", raw=raw)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "texts[1]" in detail and ("lone surrogate" in detail or "control character" in detail), detail


@pytest.mark.parametrize(
    "raw",
    [
        b'{"lang": "yo", "texts": ["\xed\xa0\x80"]}',  # a surrogate encoded in UTF-8 (CESU-8): not UTF-8
        b'{"lang": "yo", "texts": ["\xff\xfe"]}',
        b'{"lang": "\\ud83d", "texts": ["a"]}',
        b'{"lang": "yo", "texts": ["\\ud83d\\ude00 \\udc00"]}',  # a valid pair, then a lone low surrogate
        b'{"lang": "yo", "texts": ["a"]' + b"]" * 10_000,
        b"[" * 100_000,  # deep nesting
        b'{"lang": "yo", "texts": "' + b"\\\\" * 50_000 + b'"}',
    ],
    ids=["cesu8", "not-utf8", "lang-surrogate", "pair-then-lone", "trailing", "deep", "backslashes"],
)
def test_undecodable_bodies_are_a_4xx(client: httpx.Client, raw: bytes) -> None:
    for task in TASK_ROUTES:
        response = post(client, f"/v1/{task}", raw=raw)
        assert 400 <= response.status_code < 500 and response.json()["error"], response.text


@fuzz_settings(4)
@given(seed=texts_of.filter(lambda t: text_problem(t) is None), task=st.sampled_from(TASK_ROUTES))
def test_texts_at_the_character_limit_are_read_whole_and_one_more_is_a_413(
    client: httpx.Client, seed: str, task: str
) -> None:
    long = (seed + " ") * (LIMITS.chars // (len(seed) + 1) + 1)
    longest = long[: LIMITS.chars]
    started = time.monotonic()
    response = post(client, f"/v1/{task}", {"lang": "yo", "texts": [longest]})
    assert response.status_code == 200, response.text
    assert check_answer(task, [longest], response.json()) >= 0
    result = response.json()["results"][0]
    windows = (result["ner"] or result["sentiment"])["windows"] if task == "label" else result["windows"]
    assert windows > 1
    print(f"\n{task}: {LIMITS.chars} characters in {windows} windows, {time.monotonic() - started:.2f} s")
    over = post(client, f"/v1/{task}", {"lang": "yo", "texts": [longest + "a"]})
    assert over.status_code == 413 and over.json()["error"] == "payload_too_large", over.text
    assert f"has {LIMITS.chars + 1} characters" in over.json()["detail"]


def test_thousands_of_tiny_texts_from_eight_clients_are_all_answered(client: httpx.Client, fuzzed: Any) -> None:
    rng = random.Random(12)
    alphabet = [w[:2] for w in WORDS] + [e for e in ODD if e.strip()] + list("abcxyz019.,!?")
    count = 4000 * SCALE
    tiny = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))) for _ in range(count)
    ]  # some are only zero-width or marks: those must be refused, not crash
    batches = [tiny[i : i + LIMITS.texts] for i in range(0, count, LIMITS.texts)]
    statuses: list[int] = []
    entities: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def send(index: int) -> None:
        with httpx.Client(base_url=fuzzed.url, timeout=HANG_S) as own:
            for batch_index in range(index, len(batches), 8):
                batch = [t if text_problem(t) is None else "ok" for t in batches[batch_index]]
                task = TASK_ROUTES[batch_index % len(TASK_ROUTES)]
                try:
                    response = own.post(f"/v1/{task}", json={"lang": "yo", "texts": batch})
                    found = check_answer(task, batch, response.json()) if response.status_code == 200 else 0
                except Exception as err:  # recorded; asserted below in the test thread
                    with lock:
                        failures.append(f"{task} batch {batch_index}: {err!r}")
                    continue
                with lock:
                    statuses.append(response.status_code)
                    entities.append(found)

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG_S * len(batches))
    seconds = time.monotonic() - started
    print(f"\n{count} tiny texts in {len(batches)} requests: {seconds:.1f} s, {sum(entities)} entities")
    assert not failures, failures[:5]
    assert statuses == [200] * len(batches)
    too_many = post(client, "/v1/ner", {"lang": "yo", "texts": ["a"] * (LIMITS.texts + 1)})
    assert too_many.status_code == 413 and too_many.json()["error"] == "payload_too_large"
    assert f"{LIMITS.texts + 1} texts in one request" in too_many.json()["detail"]


# ---------------------------------------------------------------------------------------- admin

ADAPTER_IDS = ("yor_Latn-ner", "yor_Latn-sentiment", "yor_Latn-topic", "yor_Latn-mlm-seq_bn", "hau_Latn-ner")
admin_op = st.one_of(
    st.tuples(st.sampled_from(["unload", "pin", "unpin", "load"]), st.sampled_from(ADAPTER_IDS)),
    st.tuples(st.sampled_from(["unload", "pin", "unpin", "load"]), st.text(min_size=1, max_size=20)),
    st.tuples(
        st.just("publish"),
        st.fixed_dictionaries(
            {"path": st.sampled_from(["/", ".", "/proc", "/dev", "/tmp", "..", "/etc/hostname", "nowhere"])},
            optional={"language": st.sampled_from(["yo", "ha", "xx"]), "task": st.sampled_from(["ner", "mlm"])},
        ),
    ),
)


def admin(client: httpx.Client, op: str, target: Any) -> httpx.Response:
    """One admin operation with the key; a 5xx or no answer within HANG_S fails the test."""
    started = time.monotonic()
    target = target if op == "publish" else quote(target, safe="")  # an id is one path segment, `?` and `/` too
    try:
        if op == "publish":
            response = client.post("/v1/adapters/load", json={**target, "wait_s": 10}, headers=ADMIN)
        elif op == "load":
            response = client.post("/v1/adapters/load", json={"id": target, "wait_s": 10}, headers=ADMIN)
        elif op == "unload":
            response = client.delete(f"/v1/adapters/{target}", params={"wait_s": 10}, headers=ADMIN)
        else:
            response = client.post(f"/v1/adapters/{target}/{op}", params={"wait_s": 10}, headers=ADMIN)
    except httpx.TimeoutException:
        pytest.fail(f"no answer within {HANG_S:.0f} s (a hang) to admin {op} {target!r}")
    except httpx.InvalidURL:  # the client cannot put this id in a URL: nothing reached the server
        return httpx.Response(404)
    assert response.status_code < 500, (op, target, response.status_code, response.text[:500])
    assert time.monotonic() - started < HANG_S
    return response


@fuzz_settings(15)
@example(ops=[("publish", {"path": "/", "language": "yo", "task": "ner"})])  # the store has yor_Latn-ner already
@example(ops=[("unload", "yor_Latn-mlm-seq_bn"), ("pin", "yor_Latn-ner"), ("unload", "yor_Latn-ner")])
@given(ops=st.lists(admin_op, min_size=1, max_size=5))
def test_admin_operations_in_any_order_leave_every_task_answering(client: httpx.Client, ops: list[Any]) -> None:
    for op, target in ops:
        response = admin(client, op, target)
        assert response.status_code in (200, 202, 404, 409, 422), (op, target, response.text)
        for task in TASK_ROUTES:  # whatever was unloaded loads again on demand
            answer = post(client, f"/v1/{task}", {"lang": "yo", "texts": ["Adébáyọ̀ ń ṣiṣẹ́ ní Abuja."]})
            assert answer.status_code == 200, (op, target, task, answer.text)
    for adapter in ADAPTER_IDS:
        admin(client, "unpin", adapter)


def test_publishing_a_folder_that_is_no_adapter_is_refused_before_it_is_walked(client: httpx.Client) -> None:
    """Regression: `{"path": "/", ...}` for an id the store has listed the whole file system (711,268 entries, 41 s
    here) to compare it with the latest version, before finding it held no adapter."""
    for path in ("/", "/usr", "/proc"):
        started = time.monotonic()
        response = admin(client, "publish", {"path": path, "language": "yo", "task": "ner"})
        assert time.monotonic() - started < 5
        assert response.status_code == 422 and response.json()["error"] == "invalid_adapter_folder"
        assert "neither a manifest.json nor an adapter_config.json" in response.json()["detail"]


# ------------------------------------------------------------------------------------ schemathesis


@pytest.fixture(scope="module")
def api_schema(fuzzed: Any) -> Any:
    """The server's own OpenAPI schema, as it serves it."""
    return schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")


def call(case: Any) -> Any:
    """Send a generated request (with the admin key on admin routes); fail on a 5xx or no answer in HANG_S."""
    headers = ADMIN if case.path.startswith("/v1/adapters") else {}
    started = time.monotonic()
    try:
        response = case.call(headers=headers, timeout=HANG_S)
    except Exception as err:  # requests' timeouts and connection errors
        pytest.fail(f"{case.method} {case.path}: no answer ({err!r}): {case.as_curl_command()}")
    assert response.status_code < 500, (response.status_code, response.text[:500], case.as_curl_command())
    assert time.monotonic() - started < HANG_S, case.as_curl_command()
    return response


def fuzz_operation(operation: Any, mode: Any) -> Counter[int]:
    """Run generated requests for one operation; the statuses they got."""
    seen: Counter[int] = Counter()

    @fuzz_settings(25)
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        response = call(case)
        seen[response.status_code] += 1
        task = case.path.rsplit("/", 1)[1]
        if response.status_code == 200 and task in ("ner", "label"):
            check_answer(task, case.body["texts"], response.json())

    inputs = [operation.path_parameters, operation.headers, operation.cookies, operation.query, operation.body]
    if mode == GenerationMode.NEGATIVE and not any(len(part) for part in inputs):
        return seen  # a route without parameters or body has nothing a negative case could break
    fuzz()
    return seen


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_route_answers_every_generated_request_without_a_5xx_or_a_hang(api_schema: Any, mode: Any) -> None:
    """Each operation of the schema in turn: requests that follow it (positive) or break it (negative)."""
    statuses: dict[str, Counter[int]] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {"POST /v1/ner", "POST /v1/label", "DELETE /v1/adapters/{adapter_id}"} <= {op.label for op in operations}
    for operation in operations:
        statuses[operation.label] = fuzz_operation(operation, mode)
    print(f"\nschemathesis {mode.value}: " + "; ".join(f"{op} {dict(c)}" for op, c in statuses.items()))


def test_the_server_is_still_healthy_after_the_fuzz(client: httpx.Client, fuzzed: Any) -> None:
    assert client.get("/ready").status_code == 200
    assert fuzzed.process.poll() is None
    log = fuzzed.log.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:4000]
