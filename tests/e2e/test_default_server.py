"""End to end: `python -m langadapt.serve` on the embedded base with the packaged default adapters.

Runs the way `make serve` starts the server (default base, default adapters, an empty writable store), and asks
for NER, sentiment and topic in each of the five default languages. Skipped until the default adapter set is
shipped in `src/langadapt/default_adapters/`.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from langadapt.models.store_view import packaged_defaults_dir

pytestmark = pytest.mark.slow

LANGUAGES = {
    "yo": "Adébáyọ̀ Ògúndélé ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja.",
    "ha": "Shugaban kasa Bola Tinubu ya ziyarci Kano ranar Litinin.",
    "sw": "Rais wa Kenya alizungumza na waandishi wa habari jijini Nairobi.",
    "ig": "Chinedu gara ahịa na Enugu ụnyaahụ.",
    "rw": "Perezida Kagame yasuye abaturage i Kigali ejo.",
}
CANONICAL = {"yo": "yor_Latn", "ha": "hau_Latn", "sw": "swh_Latn", "ig": "ibo_Latn", "rw": "kin_Latn"}


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if packaged_defaults_dir() is None:
        pytest.skip("the default adapter set is not shipped yet (src/langadapt/default_adapters/ has no adapters/)")
    from conftest import start_serve

    tmp = tmp_path_factory.mktemp("default-server")
    server = start_serve(tmp, "--store", str(tmp / "store"), own_cache=False)
    try:
        server.wait_ready(timeout=600)
        yield server.url
    finally:
        server.stop()


def test_a_yoruba_sentence_is_labelled(default_server: str) -> None:
    text = LANGUAGES["yo"]
    response = httpx.post(f"{default_server}/v1/ner", json={"lang": "yo", "texts": [text]}, timeout=120)
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["stack"]["task_adapter"]["source"] == "default"
    assert result["entities"], "a trained NER adapter finds the person and the place"
    for entity in result["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]


@pytest.mark.parametrize("task", ["ner", "sentiment", "topic"])
@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_every_default_language_answers_every_task(default_server: str, task: str, lang: str) -> None:
    response = httpx.post(f"{default_server}/v1/{task}", json={"lang": lang, "texts": [LANGUAGES[lang]]}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == CANONICAL[lang]
    [result] = body["results"]
    assert result["stack"]["task_adapter"]["id"].startswith(CANONICAL[lang]) or result["stack"]["fallback"]
    if task != "ner":
        assert result["label"] and 0.0 < result["score"] <= 1.0


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_every_default_language_answers_all_tasks_in_one_label_request(default_server: str, lang: str) -> None:
    response = httpx.post(f"{default_server}/v1/label", json={"lang": lang, "texts": [LANGUAGES[lang]]}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == CANONICAL[lang] and body["tasks"] == ["ner", "sentiment", "topic"]
    [result] = body["results"]
    for task in ("sentiment", "topic"):
        assert result[task]["label"] and 0.0 < result[task]["score"] <= 1.0
    text = LANGUAGES[lang]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in result["ner"]["entities"])
