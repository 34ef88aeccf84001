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
from langadapt.serve.auth import AllowedHosts, ApiKeys
from langadapt.serve.gateway import Gateway, InFlight
from langadapt.serve.limits import Limits
from langadapt.serve.page import PLACEHOLDER, add_page, page_config, render, template
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
    related = page_config(store_view(store.root, None), info.fingerprint, ("ner",), {"ibo_Latn": ("yor_Latn",)})
    assert [(lang["code"], lang["tasks"]) for lang in related["languages"]] == [
        ("ibo_Latn", ["ner"]),
        ("yor_Latn", ["ner"]),
    ], "a language served through --fallback is offered too"


def test_the_page_and_its_fetches_pass_the_gateway_of_a_loopback_server_with_api_keys(
    tiny_xlmr_dir: Path, tmp_path: Path
) -> None:
    """`/` needs no key (the page asks for it); its same-origin POST needs one; both pass the Host check."""
    key = "page-key-0123456789"
    app = FastAPI()
    add_page(app, store_view(tmp_path / "store", None), resolve_base_model(str(tiny_xlmr_dir)).fingerprint, ("ner",))

    @app.post("/v1/label")
    async def label() -> dict[str, bool]:
        return {"labelled": True}

    keys = ApiKeys(api=(key.encode(),), admin=(b"admin-key-0123456789",))
    options = {"keys": keys, "limits": Limits(), "tasks": ("ner",), "in_flight": InFlight()}
    app.add_middleware(Gateway, **options, hosts=AllowedHosts.for_bind("127.0.0.1"))
    for origin in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        client = TestClient(app, base_url=origin)
        page = client.get("/")
        assert page.status_code == 200 and "connect-src 'self'" in page.headers["content-security-policy"]
        body = {"lang": "auto", "texts": ["Ọmọ náà lọ sí ilé ìwé."]}
        same_origin = {"Origin": origin, "Content-Type": "application/json"}
        refused = client.post("/v1/label", json=body, headers=same_origin)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        sent = client.post("/v1/label", json=body, headers={**same_origin, "Authorization": f"Bearer {key}"})
        assert sent.status_code == 200 and sent.json() == {"labelled": True}
    rebound = TestClient(app, base_url="http://evil.example:8000").get("/")
    assert rebound.status_code == 400 and rebound.json()["error"] == "host_not_allowed"


def test_inlined_config_cannot_close_the_script_element() -> None:
    page = render({"tasks": ["ner"], "languages": [{"code": "x", "name": "</script><script>alert(1)</script>"}]})
    assert "</script><script>alert(1)" not in page and PLACEHOLDER not in page
    assert PLACEHOLDER in template()
