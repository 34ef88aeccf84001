"""From `(task, language code)` to the adapter stack that serves it, over a layered view of two stores.

The view: the writable store first (`--store`), then the packaged default adapters, read-only. An id in the
writable store shadows the same id in the defaults; within an id, newer versions come first. Hot loading
follows the writable store's generation counter (the defaults never change while the server runs).

Resolution of a request for task T in language code C:

1. C resolves to a canonical code L (`yo`, `yor`, `yor-Latn` → `yor_Latn`); an unreadable code is a 404.
2. The task adapter: among the servable T adapters for L (a bank kind, base fingerprint of the loaded base,
   not refused), the conventional id `L-T` first, else the first id; its newest version.
   None for L, but a related language configured (`--fallback L=R`) has one: that one, a *fallback*.
3. The language adapter under it: the one the task adapter's manifest records (`language_adapter`, as
   `langadapt train task` writes it; a record of None means it was trained without one); without a record,
   the store's language (mlm) adapter for the task adapter's language. For a related-language fallback, L's
   own language adapter replaces it when the store has one (MAD-X cross-lingual transfer).
4. A fallback is only what differs from the language's configured best stack: a related language's task
   adapter (`related_language`), a recorded language adapter that cannot be used (`no_language_adapter`), or
   a recorded version that is gone, replaced by the newest of that id (`language_adapter_version`). A task
   adapter trained without a language adapter (or with no record and none in the store) is task-only by
   design: the stack says `task_only`, not `fallback`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langadapt.errors import LanguageCodeError
from langadapt.inference.errors import ServeError
from langadapt.models.kinds import ADAPTER_ARTIFACT, BANK_KINDS, LANGUAGE_TASK, SERVED_TASKS, TASK_HEAD_TYPES
from langadapt.models.language import canonical_language, display_name
from langadapt.models.manifest import adapter_id
from langadapt.models.store_view import AdapterRef, Candidate, LayeredStore

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 128
DEFAULT_STRIDE = 32
RESOLVE_CACHE_SIZE = 4096

NO_LANGUAGE_ADAPTER = "no_language_adapter"
RELATED_LANGUAGE = "related_language"
LANGUAGE_ADAPTER_VERSION = "language_adapter_version"


@dataclass(frozen=True)
class StackKey:
    """What occupies one bank index: a language adapter version (or none) under a task adapter version."""

    task: AdapterRef
    language: AdapterRef | None = None

    @property
    def refs(self) -> tuple[AdapterRef, ...]:
        """The member adapters in stack order (language first)."""
        return (self.task,) if self.language is None else (self.language, self.task)

    def __str__(self) -> str:
        return f"{self.language}+{self.task}" if self.language else str(self.task)


@dataclass(frozen=True)
class Route:
    """How one (task, language) request is served: the stack, its reading settings, and any fallback."""

    task: str
    language: str
    key: StackKey
    adapter_language: str
    labels: tuple[str, ...]
    head_type: str
    max_length: int = DEFAULT_MAX_LENGTH
    stride: int = DEFAULT_STRIDE
    fallback_reason: str | None = None

    @property
    def fallback(self) -> bool:
        """Whether the stack differs from L's configured best stack (see the module docstring, point 4)."""
        return self.fallback_reason is not None

    def stack_dict(self) -> dict[str, Any]:
        """The response's description of the stack."""
        return {
            "task_adapter": self.key.task.as_dict(),
            "language_adapter": self.key.language.as_dict() if self.key.language else None,
            "adapter_language": self.adapter_language,
            "task_only": self.key.language is None,
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason,
        }


def parse_fallbacks(entries: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """`L=R1,R2` entries (any accepted code spelling) to canonical `{L: (R1, R2)}`; later entries extend."""
    table: dict[str, list[str]] = {}
    for entry in entries:
        wanted, sep, related = entry.partition("=")
        if not sep or not wanted.strip() or not related.strip():
            raise LanguageCodeError(
                f"fallback {entry!r} is not LANGUAGE=RELATED[,RELATED...]", "e.g. --fallback ibo_Latn=yor_Latn"
            )
        source = canonical_language(wanted.strip())
        targets = table.setdefault(source, [])
        for code in related.split(","):
            if code.strip():
                target = canonical_language(code.strip())
                if target != source and target not in targets:
                    targets.append(target)
    return {k: tuple(v) for k, v in table.items()}


@dataclass
class RouteTable:
    """An immutable snapshot of what can be served: built from candidates, the base fingerprint and refusals."""

    candidates: Sequence[Candidate]
    fingerprint: str | None
    refused: Mapping[AdapterRef, str] = field(default_factory=dict)
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tasks: Sequence[str] = SERVED_TASKS
    generation: int = 0

    def __post_init__(self) -> None:
        self._task_adapters: dict[tuple[str, str], list[Candidate]] = {}
        self._language_adapters: dict[str, list[Candidate]] = {}
        self._by_ref: dict[AdapterRef, Candidate] = {}
        self._by_id: dict[str, list[Candidate]] = {}
        for c in self.candidates:
            self._by_ref[c.ref] = c
            self._by_id.setdefault(c.ref.id, []).append(c)
            if not self.servable(c):
                continue
            language = c.manifest.language
            if language is None:
                continue
            if c.manifest.task == LANGUAGE_TASK:
                self._language_adapters.setdefault(language, []).append(c)
            elif c.manifest.task in self.tasks:
                self._task_adapters.setdefault((c.manifest.task, language), []).append(c)
        for versions in self._by_id.values():
            versions.sort(key=lambda c: c.ref.version, reverse=True)
        for table in (self._task_adapters, self._language_adapters):
            for key, found in table.items():
                table[key] = sorted(found, key=lambda c: (c.ref.id, -c.ref.version))  # type: ignore[index]
        self._cache: dict[tuple[str, str], Route | ServeError] = {}
        self._lock = threading.Lock()

    def servable(self, c: Candidate) -> bool:
        """Whether the bank can serve this version on the loaded base, and it was not refused."""
        m = c.manifest
        if c.ref in self.refused or m.kind not in BANK_KINDS or m.artifact != ADAPTER_ARTIFACT:
            return False
        if self.fingerprint is not None and m.base_fingerprint != self.fingerprint:
            return False
        if m.task in TASK_HEAD_TYPES:
            return m.head_type in (None, TASK_HEAD_TYPES[m.task])
        return m.task == LANGUAGE_TASK

    def languages(self, task: str) -> list[str]:
        """Canonical codes a task can be asked for: languages with an adapter, then configured fallbacks."""
        direct = sorted({language for (t, language) in self._task_adapters if t == task})
        related = sorted(
            source
            for source, targets in self.fallbacks.items()
            if source not in direct and any((task, target) in self._task_adapters for target in targets)
        )
        return direct + related

    def versions(self, adapter_id: str) -> list[Candidate]:
        """Every visible version of an id, newest first (servable or not)."""
        return list(self._by_id.get(adapter_id, []))

    def candidate(self, ref: AdapterRef) -> Candidate | None:
        """The candidate for a ref, if visible."""
        return self._by_ref.get(ref)

    def resolve(self, task: str, code: str) -> Route:
        """The route for a task and a language code as a client sent it; ServeError 404 when there is none."""
        if task not in self.tasks:
            raise ServeError(
                404,
                "unknown_task",
                f"this server does not serve the task {task!r}",
                f"available tasks: {', '.join(self.tasks)}",
                extra={"available": list(self.tasks)},
            )
        key = (task, code)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            try:
                cached = self._resolve(task, code)
            except ServeError as err:
                cached = err
            with self._lock:
                if len(self._cache) >= RESOLVE_CACHE_SIZE:  # codes come from clients: keep the memo bounded
                    self._cache.clear()
                self._cache[key] = cached
        if isinstance(cached, ServeError):
            raise cached
        return cached

    def routes_for(self, adapter_id: str) -> list[tuple[str, str]]:
        """(task, language) pairs whose route would use this adapter id (task or language adapter)."""
        pairs = []
        for task in self.tasks:
            for language in self.languages(task):
                try:
                    route = self.resolve(task, language)
                except ServeError:
                    continue
                if any(ref.id == adapter_id for ref in route.key.refs):
                    pairs.append((task, language))
        return pairs

    def _unknown_language(self, task: str, detail: str, suggestions: Sequence[str] = ()) -> ServeError:
        available = self.languages(task)
        listing = ", ".join(available) if available else "none yet (publish a task adapter)"
        hint = f"{task} is available in: {listing}"
        if suggestions:
            hint = f"did you mean {' or '.join(suggestions)}? " + hint
        return ServeError(404, "unknown_language", detail, hint, extra={"available": available})

    def _resolve(self, task: str, code: str) -> Route:
        try:
            language = canonical_language(code)
        except LanguageCodeError as err:
            raise self._unknown_language(task, err.message, err.suggestions) from None
        direct = self._task_adapters.get((task, language))
        reason: str | None = None
        chosen: Candidate | None = None
        if direct:
            chosen = _preferred(direct, adapter_id(language, task))
        else:
            for related in self.fallbacks.get(language, ()):
                found = self._task_adapters.get((task, related))
                if found:
                    chosen, reason = _preferred(found, adapter_id(related, task)), RELATED_LANGUAGE
                    break
        if chosen is None:
            raise self._unknown_language(task, f"no {task} adapter for {display_name(language)} ({language})")
        manifest = chosen.manifest
        adapter_language = manifest.language or language
        lang_ref, lang_reason = self._language_adapter(chosen, language if reason == RELATED_LANGUAGE else None)
        if reason is None:
            reason = lang_reason
        return Route(
            task=task,
            language=language,
            key=StackKey(task=chosen.ref, language=lang_ref),
            adapter_language=adapter_language,
            labels=tuple(manifest.labels),
            head_type=manifest.head_type or TASK_HEAD_TYPES[task],
            max_length=manifest.max_length if manifest.max_length is not None else DEFAULT_MAX_LENGTH,
            stride=manifest.stride if manifest.stride is not None else DEFAULT_STRIDE,
            fallback_reason=reason,
        )

    def _language_adapter(self, task_adapter: Candidate, target: str | None) -> tuple[AdapterRef | None, str | None]:
        """The language adapter to stack under a task adapter, and the fallback reason it implies (if any)."""
        if target is not None:  # related-language fallback: the requested language's own adapter first
            own = self._language_adapters.get(target)
            if own:
                return own[0].ref, None
        if task_adapter.manifest.records_language_adapter:
            recorded = task_adapter.manifest.language_adapter
            if recorded is None:  # trained without one: task-only by design, not a fallback
                return None, None
            rec_id, rec_version = recorded.id, recorded.version
            versions = [c for c in self._by_id.get(rec_id, []) if self.servable(c) and c.manifest.task == LANGUAGE_TASK]
            exact = [c for c in versions if c.ref.version == rec_version]
            if exact:
                return exact[0].ref, None
            if versions:
                log.warning(
                    "%s records language adapter %s v%s, which is not servable here; using v%d",
                    task_adapter.ref,
                    rec_id,
                    rec_version,
                    versions[0].ref.version,
                )
                return versions[0].ref, LANGUAGE_ADAPTER_VERSION
            return None, NO_LANGUAGE_ADAPTER
        language = task_adapter.manifest.language
        found = self._language_adapters.get(language or "")
        if found:
            return found[0].ref, None
        return None, None  # no record and no language adapter to use: task-only, nothing fell back


def _preferred(found: Sequence[Candidate], conventional: str) -> Candidate:
    """The conventional id's newest version if present, else the first id's newest version."""
    for c in found:
        if c.ref.id == conventional:
            return c
    return found[0]


class Router:
    """The current `RouteTable`, rebuilt when the writable store's generation moves or a version is refused."""

    def __init__(
        self,
        stores: LayeredStore,
        fingerprint: str | None,
        *,
        fallbacks: Mapping[str, tuple[str, ...]] | None = None,
        tasks: Sequence[str] = SERVED_TASKS,
    ) -> None:
        self.stores = stores
        self.fingerprint = fingerprint
        self.fallbacks = dict(fallbacks or {})
        self.tasks = tuple(tasks)
        self._refused: dict[AdapterRef, str] = {}
        self._lock = threading.Lock()
        generation = stores.generation()
        self._table = self._build(stores.candidates(), generation)

    @property
    def table(self) -> RouteTable:
        """The table requests are resolved against now."""
        return self._table

    @property
    def refused(self) -> dict[AdapterRef, str]:
        """Adapter versions refused: since start (corrupt, mismatched, unloadable), and unreadable manifests now."""
        unreadable = self.stores.unreadable()
        with self._lock:
            return {**unreadable, **self._refused}

    def resolve(self, task: str, code: str) -> Route:
        """Resolve against the current table."""
        return self._table.resolve(task, code)

    def stage(self) -> RouteTable | None:
        """A table for the store as it is now, if its generation moved since the current one; not installed."""
        generation = self.stores.generation()
        if generation == self._table.generation:
            return None
        return self._build(self.stores.candidates(), generation)

    def install(self, table: RouteTable) -> None:
        """Make `table` current (one reference swap; in-flight resolutions keep the one they read)."""
        self._table = table

    def refuse(self, ref: AdapterRef, reason: str, table: RouteTable | None = None) -> RouteTable:
        """Record that `ref` cannot be served; return `table` (default: the current one) rebuilt without it."""
        with self._lock:
            self._refused[ref] = reason
        base = table or self._table
        rebuilt = self._build(base.candidates, base.generation)
        if table is None:
            self._table = rebuilt
        return rebuilt

    def _build(self, candidates: Sequence[Candidate], generation: int) -> RouteTable:
        with self._lock:
            refused = dict(self._refused)
        return RouteTable(
            candidates=list(candidates),
            fingerprint=self.fingerprint,
            refused=refused,
            fallbacks=self.fallbacks,
            tasks=self.tasks,
            generation=generation,
        )
