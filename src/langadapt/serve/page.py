"""`GET /`: a self-contained page to try the server in a browser (no build step, nothing fetched from elsewhere).

The page (`static/index.html`, package data) holds its own styles and script; the server fills in what it serves
(tasks, and the languages that have an adapter for one of them, from the store view as it is now) and answers
with a Content-Security-Policy that lets the page reach nothing but this server. It calls `POST /v1/label` with
an optional API key that it keeps in the browser tab's session storage only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from langadapt.inference.routing import RouteTable
from langadapt.models.language import display_name
from langadapt.models.store_view import LayeredStore

PLACEHOLDER = "__LANGADAPT_CONFIG__"
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@cache
def template() -> str:
    """The page's HTML with its config placeholder."""
    return resources.files("langadapt.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def page_config(
    stores: LayeredStore,
    fingerprint: str | None,
    tasks: tuple[str, ...],
    fallbacks: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """What the page offers: the served tasks, and each language with an adapter (or a fallback) and its tasks."""
    table = RouteTable(stores.candidates(), fingerprint, fallbacks=fallbacks or {}, tasks=tasks)
    by_language: dict[str, list[str]] = {}
    for task in tasks:
        for code in table.languages(task):
            by_language.setdefault(code, []).append(task)
    languages = [{"code": code, "name": display_name(code), "tasks": found} for code, found in by_language.items()]
    return {"tasks": list(tasks), "languages": sorted(languages, key=lambda item: item["name"])}


def render(config: dict[str, Any]) -> str:
    """The page with `config` inlined as JSON (escaped so no text can close the script element)."""
    data = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    return template().replace(PLACEHOLDER, data)


def add_page(
    app: FastAPI,
    stores: LayeredStore,
    fingerprint: str | None,
    tasks: tuple[str, ...],
    fallbacks: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Serve the page at `/`, in place of LitServe's own `/` ("litserve running").

    The gateway answers `/` like `/health`: no API key (the page asks for one and sends it with its requests),
    but only under a Host name the server answers to, so the page and its same-origin fetches pass the same
    DNS-rebinding check as every other route.
    """
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/"]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def try_it() -> HTMLResponse:
        """The try-it page."""
        headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
        return HTMLResponse(render(page_config(stores, fingerprint, tasks, fallbacks)), headers=headers)
