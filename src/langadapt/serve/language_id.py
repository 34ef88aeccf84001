"""Responses to `lang: "auto"` requests: each text's detected language beside its labels, or its own error.

A text whose language was identified below the threshold (422), or whose language has no adapter for a task it
asked for (404), is answered in its place in `results` (a `TextFailure`, or a `/v1/label` result whose `error` is
set); the request's other texts are labelled as usual. When no text of the request could be labelled, the whole
response carries the error: its status, its body, and every text's failure under `results`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from langadapt.inference.auto import AutoOutcome, request_language
from langadapt.inference.engine import TextResult
from langadapt.inference.errors import ServeError
from langadapt.serve.metrics import NO_LANGUAGE
from langadapt.serve.schemas import (
    ClassificationResponse,
    DetectedLanguage,
    LabelRequest,
    MultiTaskResponse,
    MultiTaskResult,
    NerResponse,
    TextError,
    TextFailure,
)

ItemBuilder = Callable[[str, TextResult], Any]  # (task, result) → NerResult | ClassificationResult


def text_error(err: ServeError) -> TextError:
    """A per-text error from a ServeError."""
    available = err.extra.get("available")
    return TextError(status=err.status, error=err.error, detail=err.detail, hint=err.hint, available=available)


def detected(outcome: AutoOutcome) -> DetectedLanguage | None:
    """The text's detection as a response field."""
    detection = outcome.plan.detection
    return DetectedLanguage.model_validate(detection.as_dict()) if detection is not None else None


def failure(outcome: AutoOutcome) -> TextFailure:
    """A text that was not labelled."""
    assert outcome.error is not None
    return TextFailure(error=text_error(outcome.error), detected=detected(outcome))


def auto_response(
    single: str | None,
    tasks: Sequence[str],
    request: LabelRequest,
    outcomes: list[AutoOutcome] | ServeError,
    item: ItemBuilder,
) -> tuple[int, dict[str, Any], str, dict[str, str]]:
    """(status, JSON body, language for the metrics header, the error's own headers) answering one `auto` request."""
    if isinstance(outcomes, ServeError):
        return outcomes.status, outcomes.body(), NO_LANGUAGE, outcomes.headers
    language = request_language(outcomes)
    if all(o.error is not None for o in outcomes):
        errors = [o.error for o in outcomes if o.error is not None]
        statuses = {e.status for e in errors}
        first = errors[0]
        body = first.body()
        if len(outcomes) > 1:
            body["results"] = [failure(o).model_dump(mode="json") for o in outcomes]
        return (first.status if len(statuses) == 1 else 422), body, language, first.headers
    model: BaseModel
    if single is not None:
        results = [_single(single, o, item) for o in outcomes]
        shape = NerResponse if single == "ner" else ClassificationResponse
        model = shape(task=single, lang=request.lang, language=language, results=results)
    else:
        ran = [task for task in tasks if any(task in o.results for o in outcomes)]
        model = MultiTaskResponse(
            lang=request.lang,
            language=language,
            tasks=ran,
            unavailable={},
            results=[_multi(o, item) for o in outcomes],
        )
    return 200, model.model_dump(mode="json"), language, {}


def _single(task: str, outcome: AutoOutcome, item: ItemBuilder) -> Any:
    if outcome.error is not None or task not in outcome.results:
        return failure(outcome)
    result = item(task, outcome.results[task])
    result.detected = detected(outcome)
    return result


def _multi(outcome: AutoOutcome, item: ItemBuilder) -> MultiTaskResult:
    if outcome.error is not None:
        return MultiTaskResult(detected=detected(outcome), error=text_error(outcome.error))
    found = {task: item(task, result) for task, result in outcome.results.items()}
    return MultiTaskResult(
        **found,
        language=outcome.language,
        detected=detected(outcome),
        unavailable=dict(outcome.plan.unavailable),
    )
