"""Label a chunk of rows with the engine: every row's tasks in one `Engine.run`, whatever their languages.

Rows are grouped into one job per (task, language), so a chunk mixing languages is one call and each row is
read under its own language's adapter stack. A row whose language code is unreadable, or has no adapter for a
task, gets null labels for that task and the reason; the rest of the chunk is labelled as usual. With `--lang
auto`, the chunk's texts go through the language-ID head in one call first: each row is routed to its detected
language (written in `detected_language` and `detected_language_score`), and a row identified below the
confidence threshold gets null labels and the reason (`language_not_identified`), never a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langadapt.errors import LanguageCodeError
from langadapt.inference.engine import Engine, Job, TextResult
from langadapt.inference.errors import ServeError
from langadapt.inference.language_id import UNCERTAIN, is_auto, route_texts
from langadapt.inference.routing import Route
from langadapt.label.formats import DETECTED_COLUMNS, ENTITIES_COLUMN, ERROR_COLUMN, NER, Labels, Row, added_columns
from langadapt.models.language import canonical_language

DIGITS = 6  # scores are written rounded: enough for any use, and stable across batchings
UNKNOWN_LANGUAGE, NO_ADAPTER, ENGINE = "unknown_language", "no_adapter", "engine"
MAX_REASON = 400

Resolver = Callable[[str, str], Route]


def _reason(task: str, detail: str, hint: str = "") -> str:
    text = f"{task}: {detail}" + (f" ({hint})" if hint else "")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def result_values(task: str, result: TextResult) -> dict[str, Any]:
    """One task's output columns for one text."""
    if task == NER:
        return {
            ENTITIES_COLUMN: [
                {"type": e.type, "text": e.text, "start": e.start, "end": e.end, "score": round(e.score, DIGITS)}
                for e in result.entities
            ]
        }
    return {
        f"{task}_label": result.label,
        f"{task}_score": round(result.score, DIGITS) if result.score is not None else None,
        f"{task}_scores": {label: round(score, DIGITS) for label, score in result.scores},
    }


class Labeller:
    """Labels rows with an engine for fixed tasks, in one language or each row's own."""

    def __init__(self, engine: Engine, tasks: tuple[str, ...], lang: str | None = None) -> None:
        self.engine = engine
        self.tasks = tasks
        self.lang = lang
        self.auto = is_auto(lang)
        self.columns = added_columns(tasks, self.auto)
        self.routes = RouteBook(engine.resolve)

    def label(self, rows: Sequence[Row]) -> list[Labels]:
        """Labels for every row, in order (unlabellable rows get null values and the reason)."""
        out = [Labels(dict.fromkeys(self.columns)) for _ in rows]
        jobs: dict[tuple[str, str], tuple[Route, list[int]]] = {}
        pending: list[int] = []
        for i, row in enumerate(rows):
            if row.error is not None or row.text is None:
                self._fail(out[i], row.kind or "malformed", row.error or "no text")
                continue
            if self.auto:
                pending.append(i)
                continue
            code = self.lang if self.lang is not None else row.lang
            for task in self.tasks:
                found = self.routes.get(task, code or "")
                if isinstance(found, tuple):
                    self._fail(out[i], *found)
                    continue
                jobs.setdefault((task, found.language), (found, []))[1].append(i)
        if pending:
            self._identify(rows, pending, out, jobs)
        keys = list(jobs)
        outcomes = self.engine.run([Job(jobs[k][0], [rows[i].text or "" for i in jobs[k][1]]) for k in keys])
        for (task, language), outcome in zip(keys, outcomes, strict=True):
            members = jobs[(task, language)][1]
            if isinstance(outcome, ServeError):
                for i in members:
                    self._fail(out[i], ENGINE, _reason(task, outcome.detail, outcome.hint))
                continue
            for i, result in zip(members, outcome, strict=True):
                out[i].values.update(result_values(task, result))
                self.routes.used[(task, result.route.language)] = result.route
        return out

    def _identify(
        self,
        rows: Sequence[Row],
        pending: list[int],
        out: list[Labels],
        jobs: dict[tuple[str, str], tuple[Route, list[int]]],
    ) -> None:
        """Identify the pending rows' languages in one call and add each row to its language's jobs."""
        try:
            detections = self.engine.identify([rows[i].text or "" for i in pending])
        except ServeError as err:
            for i in pending:
                self._fail(out[i], ENGINE, _reason("language", err.detail, err.hint))
            return
        language_column, score_column = DETECTED_COLUMNS
        for i, plan in zip(pending, route_texts(detections, self.engine.resolve, self.tasks, False), strict=True):
            if plan.detection is not None:
                out[i].values[language_column] = plan.detection.language
                out[i].values[score_column] = round(plan.detection.score, DIGITS)
            if plan.error is not None:
                kind = UNCERTAIN if plan.error.error == UNCERTAIN else NO_ADAPTER
                self._fail(out[i], kind, _reason(", ".join(self.tasks), plan.error.detail, plan.error.hint))
                continue
            for task, detail in plan.unavailable.items():
                self._fail(out[i], NO_ADAPTER, _reason(task, detail))
            for task, route in plan.routes.items():
                jobs.setdefault((task, route.language), (route, []))[1].append(i)

    @staticmethod
    def _fail(labels: Labels, kind: str, reason: str) -> None:
        if labels.error is None:
            labels.kind, labels.error = kind, reason
            labels.values[ERROR_COLUMN] = reason
        elif reason not in labels.error:
            labels.error = labels.values[ERROR_COLUMN] = f"{labels.error}; {reason}"


class RouteBook:
    """Routes by (task, code as written), with the reason a code cannot be served kept as (kind, reason)."""

    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve
        self._cache: dict[tuple[str, str], Route | tuple[str, str]] = {}
        self.used: dict[tuple[str, str], Route] = {}  # (task, canonical language) -> the route that labelled

    def get(self, task: str, code: str) -> Route | tuple[str, str]:
        key = (task, code)
        found = self._cache.get(key)
        if found is None:
            found = self._lookup(task, code)
            if len(self._cache) > 65_536:  # codes come from the data: keep the memo bounded
                self._cache.clear()
            self._cache[key] = found
        return found

    def _lookup(self, task: str, code: str) -> Route | tuple[str, str]:
        try:
            canonical_language(code)
        except LanguageCodeError as err:
            hint = f" (did you mean {' or '.join(err.suggestions)}?)" if err.suggestions else ""
            return UNKNOWN_LANGUAGE, err.message + hint  # the same for every task
        try:
            return self.resolve(task, code)
        except ServeError as err:
            return NO_ADAPTER, _reason(task, err.detail, err.hint)
