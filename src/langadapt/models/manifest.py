"""The manifest that describes one published adapter version in the store.

Fields code reads are typed. Some of them (the stacked language adapter, reading window, export precision,
sources and bank layout) began as untyped entries of `extra`, and they are still written there, in the JSON
(so manifests written now read in older versions, whose manifest forbids unknown fields, and the packaged
defaults read unchanged); reading moves them from `extra` to their typed fields.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from langadapt.models.kinds import ADAPTER_ARTIFACT, HEAD_TYPES, MODEL_KINDS, TASKS

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LANGUAGE_PATTERN = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
ANY_LANGUAGE = "any"


def check_id(value: str) -> str:
    """Return `value` if it is a safe adapter id (one path component), else raise ValueError."""
    if not isinstance(value, str) or not ID_PATTERN.match(value) or ".." in value:
        raise ValueError(
            f"invalid adapter id {value!r}: use 1-128 of [A-Za-z0-9_.-], starting with a letter or digit, without '..'"
        )
    return value


def check_relative_path(value: str) -> str:
    """Return `value` if it is a plain relative POSIX path inside a folder, else raise ValueError."""
    parts = value.split("/")
    unsafe = value.startswith("/") or "\\" in value or "\x00" in value
    if unsafe or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"unsafe file path {value!r}: use a relative path without '..', '.' or empty parts")
    return value


def adapter_id(language: str | None, task: str, kind: str | None = None) -> str:
    """The conventional id: `yor_Latn-ner` for a task adapter, `yor_Latn-mlm-seq_bn` for a language adapter."""
    parts = [language or ANY_LANGUAGE, task] + ([kind] if kind else [])
    return check_id("-".join(parts))


class TrainingInfo(BaseModel):
    """Where an adapter came from: training data, its licence, steps and hyper-parameters."""

    model_config = ConfigDict(extra="forbid")

    data: list[str] = Field(default_factory=list, description="data sets or files trained on")
    licence: str | None = Field(default=None, description="licence of the training data (SPDX id if known)")
    steps: int | None = Field(default=None, ge=0, description="optimizer steps taken")
    params: dict[str, Any] = Field(default_factory=dict, description="hyper-parameters (lr, batch size, ...)")


class AdapterVersion(BaseModel):
    """Another stored adapter version a manifest refers to."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="store id")
    version: int | None = Field(default=None, ge=0, description="its version; None: the newest")


class SourceAdapter(AdapterVersion):
    """One adapter an exported graph was built from, and its place in the stack."""

    role: Literal["language", "task"] = Field(description="`language` (under) or `task` (on top)")
    kind: str = Field(description="its adapter kind")
    source: Literal["store", "default"] = Field(
        default="store", description="the layer of the store view it came from: `store` or the packaged `default`s"
    )


# The typed fields written inside `extra` in the JSON (see the module docstring), in that order.
EXTRA_FIELDS = ("language_adapter", "max_length", "stride", "majority_label", "precision", "sources", "layout")


def _plain(value: Any, mode: str) -> Any:
    """A field value as the JSON holds it."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode=mode)
    if isinstance(value, list):
        return [_plain(v, mode) for v in value]
    return value


class Manifest(BaseModel):
    """What one adapter version is, what it was trained on, and the sha256 of each of its files."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="store id, e.g. `yor_Latn-ner` or `yor_Latn-mlm-seq_bn`")
    language: str | None = Field(description="canonical `xxx_Scrp` code; None for language-agnostic")
    task: str = Field(description=f"{', '.join(TASKS)} or another short slug")
    kind: str = Field(description=f"{', '.join(MODEL_KINDS)} or an artifact kind like `onnx-fused`")
    version: int = Field(default=0, ge=0, description="set by the store at publish; 0 before")
    labels: list[str] = Field(default_factory=list, description="label names in head output order")
    head_type: str | None = Field(default=None, description=f"{', '.join(HEAD_TYPES)} or None")
    base_model: str = Field(description="hub id or local path of the base model")
    base_fingerprint: str = Field(min_length=1, description="fingerprint of the base model's weights")
    adapter_config: dict[str, Any] = Field(default_factory=dict, description="the adapter library's config")
    metrics: dict[str, Any] = Field(default_factory=dict, description="evaluation results")
    training: TrainingInfo = Field(default_factory=TrainingInfo)
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc), description="UTC")
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256; set by the store")
    artifact: str = Field(default=ADAPTER_ARTIFACT, description="what the folder holds: a registered artifact kind")
    extra: dict[str, Any] = Field(default_factory=dict, description="anything else worth keeping")

    # Task adapters: how training read the texts, and the language adapter it trained under.
    language_adapter: AdapterVersion | None = Field(
        default=None,
        exclude=True,
        description="the language adapter a task adapter was trained stacked on; None also when trained without "
        "one (`records_language_adapter` tells the two apart)",
    )
    max_length: int | None = Field(default=None, ge=1, exclude=True, description="tokens per input (per window)")
    stride: int | None = Field(default=None, ge=0, exclude=True, description="tokens neighbouring windows share")
    majority_label: str | None = Field(default=None, exclude=True, description="the training set's majority label")
    # Exported graphs: what they compute in, what they were built from, the bank layout of a swappable graph.
    precision: str | None = Field(default=None, exclude=True, description="`fp32`, `fp16` or `int8`")
    sources: list[SourceAdapter] | None = Field(
        default=None, exclude=True, description="a fused graph's adapters, in stack order"
    )
    layout: dict[str, Any] | None = Field(
        default=None, exclude=True, description="a swappable graph's bank layout (`models.bank.BankLayout` fields)"
    )

    @property
    def records_language_adapter(self) -> bool:
        """Whether the manifest says which language adapter (or none) its task adapter was trained with."""
        return "language_adapter" in self.model_fields_set

    @model_validator(mode="before")
    @classmethod
    def _typed_from_extra(cls, data: Any) -> Any:
        """Read the typed fields that `extra` holds (as written, and as older manifests hold them)."""
        if not isinstance(data, dict) or not isinstance(data.get("extra"), dict):
            return data
        extra = dict(data["extra"])
        moved = {key: extra.pop(key) for key in EXTRA_FIELDS if key in extra}
        return {**data, **{k: v for k, v in moved.items() if k not in data}, "extra": extra}

    @model_serializer(mode="wrap")
    def _typed_into_extra(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        """Write the typed fields that were set inside `extra`, where older readers expect them."""
        data: dict[str, Any] = handler(self)
        if "extra" in data:
            typed = {key: _plain(getattr(self, key), info.mode) for key in EXTRA_FIELDS if key in self.model_fields_set}
            data["extra"] = {**data["extra"], **typed}
        return data

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        """Ids become folder names, so they must be one safe path component."""
        return check_id(value)

    @field_validator("language")
    @classmethod
    def _canonical_language(cls, value: str | None) -> str | None:
        """Only canonical codes are stored; resolving `yo` or `yor-Latn` is the caller's job."""
        if value is not None and not LANGUAGE_PATTERN.match(value):
            raise ValueError(f"language {value!r} is not canonical `xxx_Scrp` (e.g. `yor_Latn`); resolve it first")
        return value

    @field_validator("task", "kind")
    @classmethod
    def _slug(cls, value: str) -> str:
        """Tasks and kinds are short lowercase slugs."""
        if not SLUG_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a short lowercase slug like `ner` or `onnx-fused`")
        return value

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, value: list[str]) -> list[str]:
        """A label may appear once: the head's output index is its position."""
        duplicates = sorted({label for label in value if value.count(label) > 1})
        if duplicates:
            raise ValueError(f"duplicate labels {duplicates}: each label must appear once")
        return value

    @field_validator("created")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        """Store times in UTC; a naive time is taken to be UTC already."""
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    @field_validator("files")
    @classmethod
    def _safe_files(cls, value: dict[str, str]) -> dict[str, str]:
        """File entries are safe relative paths with lowercase hex sha256 digests."""
        for path, digest in value.items():
            check_relative_path(path)
            if not SHA256_PATTERN.match(digest):
                raise ValueError(f"sha256 of {path!r} is not 64 lowercase hex digits: {digest!r}")
        return value
