"""Requests with `lang: "auto"`, batched: identify every text at once, route each, label in the engine's passes.

    batch = AutoBatch(engine, [(texts, ("ner",), True), ...])   # one entry per request
    outcomes = engine.run(other_jobs + batch.jobs)
    per_request = batch.collect(outcomes[len(other_jobs):])

The texts of all `auto` requests in a batch go through the language-ID head in one call; each text is then routed
to its detected language's stacks (`language_id.route_texts`), texts of one (task, language) are gathered into
one `Job`, and the jobs join the batch's other jobs in the same forward passes. The server and `langadapt label`
share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from langadapt.inference.engine import Engine, Job, Outcome, TextResult
from langadapt.inference.errors import ServeError
from langadapt.inference.language_id import AutoText, group_by_route, route_texts

MIXED = "mixed"  # the response's language when an auto request's texts went to several languages


@dataclass
class AutoOutcome:
    """One text of an `auto` request: how it was routed, its result per task, or the error that answers it."""

    plan: AutoText
    results: dict[str, TextResult] = field(default_factory=dict)
    error: ServeError | None = None

    @property
    def language(self) -> str | None:
        """The language the text was routed to (None when it was not)."""
        if self.error is not None or self.plan.detection is None:
            return None
        return self.plan.detection.language


Request = tuple[Sequence[str], Sequence[str], bool]  # texts, tasks, whether the client named the tasks


class AutoBatch:
    """The `auto` requests of one batch: identified together, routed text by text, then their jobs."""

    def __init__(self, engine: Engine, requests: Sequence[Request]) -> None:
        self.requests = list(requests)
        self.failed: dict[int, ServeError] = {}
        self.plans: list[list[AutoText]] = [[] for _ in self.requests]
        self.jobs: list[Job] = []
        self._owners: list[tuple[int, str, list[int]]] = []  # job → (request, task, text indices)
        texts = [text for request_texts, _, _ in self.requests for text in request_texts]
        try:
            detections = engine.identify(texts)
        except ServeError as err:
            self.failed = dict.fromkeys(range(len(self.requests)), err)
            return
        start = 0
        for r, (request_texts, tasks, explicit) in enumerate(self.requests):
            mine = detections[start : start + len(request_texts)]
            start += len(request_texts)
            self.plans[r] = route_texts(mine, engine.resolve, tasks, explicit)
            for task, route, members in group_by_route(self.plans[r]):
                self.jobs.append(Job(route, [request_texts[i] for i in members]))
                self._owners.append((r, task, members))

    def collect(self, outcomes: Sequence[Outcome]) -> list[list[AutoOutcome] | ServeError]:
        """Per request, each text's outcome (the engine's outcomes for `jobs`, in order), or the request's error."""
        per_text = [[AutoOutcome(plan, error=plan.error) for plan in plans] for plans in self.plans]
        for (r, task, members), outcome in zip(self._owners, outcomes, strict=True):
            for position, index in enumerate(members):
                text = per_text[r][index]
                if isinstance(outcome, ServeError):
                    text.error = text.error or outcome
                else:
                    text.results[task] = outcome[position]
        return [self.failed[r] if r in self.failed else per_text[r] for r in range(len(self.requests))]


def request_language(outcomes: Sequence[AutoOutcome]) -> str:
    """The language an `auto` request went to: the one its texts share, `mixed`, or `none` when none was routed."""
    found = {o.language for o in outcomes if o.language is not None}
    if not found:
        return "none"
    return found.pop() if len(found) == 1 else MIXED
