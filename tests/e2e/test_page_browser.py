"""The try-it page in a real browser: headless Chromium (Debian's package, driven by Playwright) on a real server.

The server is `python -m langadapt.serve` on the embedded base with the packaged default adapters and an API key
configured (the page sends it from its key field). The tests type into the page as a user would, and compare
what the page highlights with what the API answers for the same text. Skipped, saying why, where Playwright or
a Chromium binary is missing (`.ci/run` installs both). `LANGADAPT_SCREENSHOTS=<dir>` also saves the screenshots
there (docs/language-id/page.png was taken that way).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from langadapt.models.store_view import packaged_defaults_dir

pytestmark = pytest.mark.slow

API_KEY = "page-test-key-0123456789"
YORUBA = "Adébáyọ̀ Ògúndélé ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja, ó sì lọ sí Èkó lánàá."
SWAHILI = "Rais wa Kenya, William Ruto, alizungumza na waandishi wa habari jijini Nairobi siku ya Jumatatu."
MARATHI = "मुंबई ही महाराष्ट्राची राजधानी आहे आणि ते भारतातील एक मोठे शहर आहे."
UYGHUR = "ئۈرۈمچى شىنجاڭنىڭ مەركىزى ۋە ئەڭ چوڭ شەھىرى."
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server on the default set with an API key; its URL."""
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')")
    if chromium_path() is None:
        pytest.skip("no Chromium binary (apt-get install chromium; .ci/run installs it)")
    if packaged_defaults_dir() is None:
        pytest.skip("the default adapter set is not shipped (src/langadapt/default_adapters/ has no adapters/)")
    from conftest import start_serve

    tmp = tmp_path_factory.mktemp("page-server")
    server = start_serve(tmp, "--store", str(tmp / "store"), env={"LANGADAPT_API_KEYS": API_KEY}, own_cache=False)
    try:
        server.wait_ready(timeout=600)
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def page(browser_server: str, tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile on the page, the API key typed into its key field."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium_path(),
            headless=True,
            args=LAUNCH_ARGS,
            viewport={"width": 1100, "height": 900},
            bypass_csp=True,  # the page's CSP forbids eval, which Playwright's wait_for_function uses
        )
        try:
            tab = context.pages[0] if context.pages else context.new_page()
            tab.set_default_timeout(300_000)
            tab.goto(browser_server + "/")
            tab.fill("#key", API_KEY)
            tab.dispatch_event("#key", "change")
            yield tab
        finally:
            context.close()


def run_and_wait(page: Any) -> None:
    """Ctrl+Enter in the text box, then wait until the page shows a result or an error."""
    page.focus("#text")
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        "!document.getElementById('run').disabled && document.getElementById('output').childNodes.length"
    )


def choose_tasks(page: Any, tasks: set[str]) -> None:
    for task in ("ner", "sentiment", "topic"):
        page.set_checked(f"#task-{task}", task in tasks)


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("LANGADAPT_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / name)
    return path


def api(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/label", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)


def test_yoruba_ner_highlights_exactly_the_api_offsets(page: Any, browser_server: str, tmp_path: Path) -> None:
    page.select_option("#lang", "yor_Latn")
    choose_tasks(page, {"ner"})
    page.fill("#text", YORUBA)
    run_and_wait(page)
    expected = api(browser_server, {"lang": "yor_Latn", "texts": [YORUBA], "tasks": ["ner"]}).json()
    entities = expected["results"][0]["ner"]["entities"]
    assert entities, "the default Yoruba NER adapter finds the person and the places"
    marks = page.eval_on_selector_all(
        "mark",
        "els => els.map(e => ({start: +e.dataset.start, end: +e.dataset.end, type: e.dataset.type,"
        " text: e.querySelector('.span').textContent, title: e.title, label: e.querySelector('.type').textContent}))",
    )
    assert [(m["start"], m["end"], m["type"]) for m in marks] == [(e["start"], e["end"], e["type"]) for e in entities]
    for mark, entity in zip(marks, entities, strict=True):
        assert mark["text"] == YORUBA[entity["start"] : entity["end"]] == entity["text"]
        assert entity["type"] in mark["title"] and "score" in mark["title"], "type and score on hover"
        assert mark["label"] == entity["type"], "the type is written out, not only coloured"
    stacks = page.inner_text("#stacks")
    assert re.search(r"yor_Latn-ner v\d+ \(default\)", stacks)
    assert "ms" in page.inner_text("#latency")
    screenshot(page, tmp_path, "page-yoruba-ner.png")


def test_auto_on_swahili_shows_the_detected_language_and_every_task(page: Any, tmp_path: Path) -> None:
    assert page.eval_on_selector("#lang", "s => s.options[0].value") == "auto"
    page.fill("#text", SWAHILI)
    run_and_wait(page)
    detected = page.inner_text("#detected")
    assert "Swahili" in detected and "swh_Latn" in detected and "%" in detected
    assert page.locator(".bars").count() == 2, "sentiment and topic as labelled score bars"
    assert page.locator("mark").count() >= 1
    assert "swh_Latn-topic" in page.inner_text("#stacks")
    screenshot(page, tmp_path, "page.png")


def test_bad_input_shows_the_servers_message_and_the_page_stays_usable(page: Any) -> None:
    def run(text: str, lang: str = "auto") -> str:
        page.select_option("#lang", lang)
        page.fill("#text", text)
        run_and_wait(page)
        return page.inner_text("#output")

    message = run("")
    assert "422" in message and "empty" in message and "What to do" in message
    message = run("ab cd")
    assert "language_not_identified" in message and "lang" in message, "two words: a 422 asking for lang"
    message = run(MARATHI)
    assert "Marathi" in message and "404" in message, "a language with no adapter: the server's message"
    choose_tasks(page, {"topic"})  # 20,000 characters are ~50 windows per task: one task keeps the test short
    long = " ".join([SWAHILI] * 300)[:20_000]
    assert "Swahili" in run(long) and "Topic" in page.inner_text("#output")
    choose_tasks(page, {"ner", "sentiment", "topic"})
    assert "Result" in run("Adébáyọ̀ 😀🎉 ní Abuja Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá, Москва 北京 🙂", "yor_Latn")
    message = run(UYGHUR, "yor_Latn")
    assert page.eval_on_selector("#output .text", "e => e.matches(':dir(rtl)')"), "right-to-left text renders RTL"
    page.fill("#key", "wrong-key")
    page.dispatch_event("#key", "change")
    message = run(YORUBA, "yor_Latn")
    assert "403" in message and "key" in message
    page.fill("#key", API_KEY)
    page.dispatch_event("#key", "change")
    assert "Result" in run(YORUBA, "yor_Latn"), "still usable after every error"


def test_keyboard_alone_reaches_every_control(page: Any) -> None:
    page.reload()  # focus starts at the top of the page, as after loading it
    assert page.input_value("#key") == API_KEY, "the key is kept in the tab's session storage"
    reached = []
    for _ in range(9):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
    assert reached[:6] == ["text", "lang", "task-ner", "task-sentiment", "task-topic", "key"]
    assert "run" in reached
    labels = page.eval_on_selector_all("input, select, textarea", "els => els.map(e => e.labels.length)")
    assert all(count >= 1 for count in labels), "every input has a label"
