"""Request and response bodies of the HTTP API (pydantic; FastAPI publishes them at /docs).

Request bodies are strict: unknown fields, wrong types, empty lists, empty or whitespace-only texts, lone
surrogates and control characters are refused with 422 before anything reaches an inference worker; too many
texts or too long a text is refused with 413 (the error types `too_many_texts` / `text_too_long` say which).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from langadapt.serve.limits import Limits, code_problem, text_problem

TOO_MANY_TEXTS = "too_many_texts"
TEXT_TOO_LONG = "text_too_long"
SIZE_ERRORS = frozenset({TOO_MANY_TEXTS, TEXT_TOO_LONG})

_STRICT = ConfigDict(extra="forbid", strict=True)
ServedTask = Literal["ner", "sentiment", "topic"]


class LabelRequest(BaseModel):
    """Texts in one language to label with one task's adapter stack."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"lang": "yo", "texts": ["Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá."]}]},
    )

    lang: str = Field(
        min_length=1,
        max_length=64,
        description="Language of the texts: `yo`, `yor`, `yor-Latn`, `yor_Latn` or an English name like `Yoruba`; "
        "`auto`: identify each text's language (texts below the confidence threshold get a 422 asking for `lang`).",
    )
    texts: list[str] = Field(
        min_length=1,
        description="Texts to label (at most `LANGADAPT_MAX_TEXTS`, each at most `LANGADAPT_MAX_CHARS` characters; "
        "longer texts are read in overlapping windows, never truncated).",
    )

    @field_validator("lang")
    @classmethod
    def _usable_code(cls, value: str) -> str:
        """A language code must be printable text."""
        problem = code_problem(value)
        if problem:
            raise ValueError(f"lang {problem}")
        return value

    @field_validator("texts")
    @classmethod
    def _labellable_texts(cls, value: list[str]) -> list[str]:
        """Every text must be non-empty printable Unicode, and the request within the configured limits."""
        limits = Limits.from_env()
        if len(value) > limits.texts:
            raise PydanticCustomError(
                TOO_MANY_TEXTS,
                "{count} texts in one request; the limit is {limit}: split them into several requests",
                {"count": len(value), "limit": limits.texts},
            )
        for index, text in enumerate(value):
            problem = text_problem(text)
            if problem:
                raise ValueError(f"texts[{index}] {problem}")
            if len(text) > limits.chars:
                raise PydanticCustomError(
                    TEXT_TOO_LONG,
                    "texts[{index}] has {count} characters; the limit is {limit}: split the text",
                    {"index": index, "count": len(text), "limit": limits.chars},
                )
        return value


class AdapterRefOut(BaseModel):
    """One stored adapter version."""

    id: str = Field(description="store id, e.g. `yor_Latn-ner`")
    version: int = Field(description="published version")
    source: Literal["store", "default"] = Field(description="the writable store or the packaged default adapters")


class StackOut(BaseModel):
    """The adapter stack that labelled a text, and whether it was a fallback."""

    task_adapter: AdapterRefOut
    language_adapter: AdapterRefOut | None = Field(description="the language adapter under the task adapter, if any")
    adapter_language: str = Field(description="the language the task adapter was trained for")
    task_only: bool = Field(
        description="true when no language adapter is stacked: by design (the task adapter was trained without one) "
        "unless `fallback` says the one it was trained with could not be used"
    )
    fallback: bool = Field(
        description="true when the router served something other than the language's configured best stack: a "
        "related language's adapter, or a stack without the language adapter the task adapter was trained with"
    )
    fallback_reason: str | None = Field(
        description="`no_language_adapter`, `related_language` or `language_adapter_version`"
    )
    served_by: str = Field(
        default="",
        description="what computed it: `torch` (the adapter bank on the torch base), `onnx-swappable` (the bank on "
        "the base's ONNX graph) or `onnx-fused:<precision>` (the stack's own fused graph)",
    )


class LabelScore(BaseModel):
    """A label and its probability."""

    label: str
    score: float


class DetectedLanguage(BaseModel):
    """With `lang: "auto"`: the language identified for a text, and how sure the language-ID head is."""

    language: str = Field(description="canonical code of the most probable language")
    name: str = Field(description="its English name")
    score: float = Field(description="its probability")
    confident: bool = Field(description="whether the score reaches the threshold (else the text gets a 422)")
    threshold: float = Field(description="the server's confidence threshold")
    candidates: list[LabelScore] = Field(description="the most probable languages, most probable first")


class TextError(BaseModel):
    """Why one text of a request was not labelled (the request's other texts were)."""

    status: int = Field(description="the HTTP status this error would have alone, e.g. 422 or 404")
    error: str
    detail: str
    hint: str
    available: list[str] | None = None


class TextFailure(BaseModel):
    """A text that was not labelled: the error, and what language identification found."""

    error: TextError
    detected: DetectedLanguage | None = None


class ClassificationResult(BaseModel):
    """One text's label (topic or sentiment), every label's probability, and how it was read."""

    label: str
    score: float
    scores: list[LabelScore] = Field(description="every label, most probable first")
    windows: int = Field(description="how many overlapping windows the text was read in")
    windowed: bool = Field(description="true when the text was longer than one window (probabilities averaged)")
    stack: StackOut
    detected: DetectedLanguage | None = Field(default=None, description='with lang "auto": the identified language')


class EntityOut(BaseModel):
    """A named entity: `text == input[start:end]` in character offsets of the original text."""

    type: str
    text: str
    start: int
    end: int
    score: float


class NerResult(BaseModel):
    """One text's named entities and how it was read."""

    entities: list[EntityOut]
    windows: int = Field(description="how many overlapping windows the text was read in")
    windowed: bool = Field(description="true when the text was longer than one window (words read where central)")
    stack: StackOut
    detected: DetectedLanguage | None = Field(default=None, description='with lang "auto": the identified language')


class ClassificationResponse(BaseModel):
    """Labels for every text of a topic or sentiment request, in request order."""

    task: str
    lang: str = Field(description="the language code as sent")
    language: str = Field(description='the canonical code it resolved to (lang "auto": the one detected, or "mixed")')
    results: list[ClassificationResult | TextFailure] = Field(
        description='in request order; with lang "auto", a text whose language was not identified is a TextFailure'
    )


class NerResponse(BaseModel):
    """Entities for every text of an NER request, in request order."""

    task: str
    lang: str
    language: str
    results: list[NerResult | TextFailure] = Field(
        description='in request order; with lang "auto", a text whose language was not identified is a TextFailure'
    )


class MultiTaskRequest(LabelRequest):
    """Texts in one language to label with several tasks at once (`POST /v1/label`)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"lang": "yo", "texts": ["Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá."], "tasks": ["ner", "topic"]}]
        },
    )

    tasks: list[ServedTask] | None = Field(
        default=None,
        min_length=1,
        description="Tasks to run on every text. Left out: every task the language has an adapter for. A task "
        "named here that the language lacks is a 404 listing what it has.",
    )

    @field_validator("tasks")
    @classmethod
    def _distinct_tasks(cls, value: list[str] | None) -> list[str] | None:
        """Each task at most once."""
        if value is not None:
            twice = sorted({t for t in value if value.count(t) > 1})
            if twice:
                raise ValueError(f"tasks names {', '.join(twice)} more than once: list each task once")
        return value


class MultiTaskResult(BaseModel):
    """One text's result for each task that ran (a task not asked for, or not available, is null)."""

    ner: NerResult | None = None
    sentiment: ClassificationResult | None = None
    topic: ClassificationResult | None = None
    language: str | None = Field(default=None, description='with lang "auto": the language this text was routed to')
    detected: DetectedLanguage | None = Field(default=None, description='with lang "auto": the identified language')
    unavailable: dict[str, str] | None = Field(
        default=None, description='with lang "auto": tasks its language has no adapter for, and why'
    )
    error: TextError | None = Field(default=None, description="why this text was not labelled (its tasks are null)")


class MultiTaskResponse(BaseModel):
    """Every task's result for every text of a `/v1/label` request, in request order."""

    lang: str = Field(description="the language code as sent")
    language: str = Field(description="the canonical code it resolved to")
    tasks: list[str] = Field(description="the tasks that ran, in the order of the request (or ner, sentiment, topic)")
    unavailable: dict[str, str] = Field(
        default_factory=dict, description="tasks left out because the language has no adapter for them, and why"
    )
    results: list[MultiTaskResult]


class ErrorBody(BaseModel):
    """Every error the server answers with."""

    error: str = Field(description="short machine-readable slug, e.g. `unknown_language`")
    detail: str = Field(description="what went wrong")
    hint: str = Field(description="what to do about it")
    available: list[str] | None = Field(default=None, description="what is available instead, where that helps")


class LoadRequest(BaseModel):
    """Load an adapter already in the store (`id`), or publish a server-side folder into the store (`path`)."""

    model_config = _STRICT

    id: str | None = Field(default=None, min_length=1, max_length=128, description="adapter id in the store")
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="folder on the server: `save_adapter(..., use_safetensors=True)` output, or a folder with a "
        "`manifest.json`",
    )
    language: str | None = Field(default=None, max_length=64, description="with `path`: the adapter's language")
    task: str | None = Field(default=None, max_length=32, description="with `path`: topic, sentiment, ner or mlm")
    kind: str = Field(default="seq_bn", max_length=32, description="with `path`: seq_bn, seq_bn_inv or lora")
    adapter_id: str | None = Field(default=None, max_length=128, description="with `path`: the id to publish as")
    language_adapter: str | None = Field(
        default=None, max_length=128, description="with `path`: id of the language adapter it was trained on"
    )
    wait_s: float = Field(default=30.0, ge=0, le=300, description="how long to wait for every worker to load it")

    @model_validator(mode="after")
    def _one_source(self) -> LoadRequest:
        """Exactly one of `id` and `path`."""
        if (self.id is None) == (self.path is None):
            raise ValueError("give exactly one of `id` (in the store) or `path` (a folder to publish)")
        for name in ("path", "language", "task", "adapter_id", "language_adapter", "id"):
            value = getattr(self, name)
            if value is not None and code_problem(value):
                raise ValueError(f"{name} {code_problem(value)}")
        return self


class WorkerView(BaseModel):
    """What one inference worker holds."""

    task: str
    worker: int
    pid: int
    ready: bool
    applied: int = Field(description="the last admin operation this worker applied")
    generation: int = Field(description="the store generation this worker follows")
    active: list[dict[str, Any]] = Field(description="adapter stacks in the worker's bank")
    registered: list[str] = Field(description="adapter versions parsed in the worker's memory")
    refused: dict[str, str] = Field(description="adapter versions refused, with the reason")
    cache_bytes: int
    budget_bytes: int
    last_swap: dict[str, Any] | None = Field(
        default=None, description="when the last store generation went live here (wall-clock seconds) and what moved"
    )
    runtime: dict[str, Any] = Field(
        default_factory=dict,
        description="the backend's choices: with `auto`, which ONNX graphs serve which stacks and the timings behind "
        "them, builds running, and what is not used and why",
    )


class StoreState(BaseModel):
    """The writable store: where it is, and why nothing can be published into it now, if so."""

    root: str
    writable: bool = Field(description="false when publishing would fail; what the store holds still serves")
    problem: str | None = Field(default=None, description="why it cannot be written: read-only, permission, full")


class AdaptersResponse(BaseModel):
    """Adapters the store offers and what each worker has loaded."""

    available: list[dict[str, Any]]
    pinned: list[str]
    workers: list[WorkerView]
    store: StoreState


class AdminResult(BaseModel):
    """What an admin operation did."""

    op: str
    id: str
    applied: bool = Field(description="true when every worker it concerns applied it within `wait_s`")
    published: dict[str, Any] | None = None
    workers: list[WorkerView] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict, description="versions a worker refused, with reasons")
