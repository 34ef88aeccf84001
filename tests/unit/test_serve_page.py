"""The try-it page: served at `/`, self-contained, listing what the store serves, its config safely inlined."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from langadapt.models.base import resolve_base_model
from langadapt.models.store import AdapterStore
from langadapt.models.store_view import store_view
from langadapt.serve.page import PLACEHOLDER, add_page, render, template
from langadapt.serve.synthetic import AdapterFactory


def test_the_page_lists_the_served_languages_and_fetches_nothing_from_elsewhere(
    tiny_xlmr_dir: Path, tmp_path: Path
) -> None:
    info = resolve_base_model(str(tiny_xlmr_dir))
    store = AdapterStore(tmp_path / "store")
    factory = AdapterFactory(info, seed=1)
    factory.publish_task_adapter(store, "yor_Latn", "ner")
    factory.publish_task_adapter(store, "hau_Latn", "topic")
    app = FastAPI()
    app.get("/")(lambda: "litserve running")  # LitServe's own index, which the page replaces
    add_page(app, store_view(store.root, None), info.fingerprint, ("ner", "sentiment", "topic"))
    response = TestClient(app).get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    config = json.loads(re.search(r'<script id="config" type="application/json">(.*?)</script>', page, re.S)[1])
    assert config["tasks"] == ["ner", "sentiment", "topic"]
    assert [(lang["code"], lang["tasks"]) for lang in config["languages"]] == [
        ("hau_Latn", ["topic"]),
        ("yor_Latn", ["ner"]),
    ]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "no external script, style or font"
    assert "@import" not in page and "url(http" not in page
    for needed in ('for="text"', 'for="lang"', 'for="key"', "sessionStorage", "/v1/label", 'dir="auto"'):
        assert needed in page


def test_inlined_config_cannot_close_the_script_element() -> None:
    page = render({"tasks": ["ner"], "languages": [{"code": "x", "name": "</script><script>alert(1)</script>"}]})
    assert "</script><script>alert(1)" not in page and PLACEHOLDER not in page
    assert PLACEHOLDER in template()
