"""The inference engine: request → route → lease → tokenise (windows) → batched forward → heads → decode.

A plain Python class, used by the HTTP workers and usable on its own (batch labelling, notebooks)::

    engine = Engine(InferenceSettings(base="embedded"))
    engine.label("ner", "yo", ["Adébáyọ̀ ń ṣiṣẹ́ ní Abuja."])

`run` takes many jobs at once: every text of every job, in whatever languages and tasks, is cut into windows,
the windows are sorted by length and packed into forward passes (at most `max_rows` rows and `max_tokens`
padded tokens each: cache-sized on a CPU, large on a GPU), each row under its own adapter stack (its `Lease`
on a bank index), and the heads run once per group of rows sharing a stack. Long texts are never truncated:
classification averages the label probabilities of overlapping windows (weighted by each window's token
count); NER reads each word in the window where it is most central (`langadapt.models.alignment`) and maps
entities back to character offsets.

Hot loading: `refresh()` follows the writable store's generation. For every (task, language) it has served,
a changed route is loaded into a fresh bank index *before* the new routing table is installed, then the old
stack is retired; a version that fails to load (corrupt files, another base model, a shape the bank refuses) is
refused and the previous version keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from langadapt.errors import StoreError
from langadapt.inference.auto_backend import create_backend
from langadapt.inference.backends import resolve_device
from langadapt.inference.cache import AdapterCache, AdapterLoadError, Lease, LoadedAdapter
from langadapt.inference.errors import ServeError
from langadapt.inference.language_id import Detection, LanguageIdentifier, find_head, load_identifier
from langadapt.inference.routing import Route, Router, StackKey
from langadapt.inference.settings import MIB, InferenceSettings
from langadapt.inference.shared import TOKENIZER, take_shared
from langadapt.models.alignment import Entity, WordEncoding, decode_entities, encode_text, merge_windows
from langadapt.models.bank import AdapterWeights
from langadapt.models.base import load_tokenizer, resolve_base_model
from langadapt.models.heads import Head
from langadapt.models.kinds import FUSED_ARTIFACT, LANGUAGE_TASK, TAGGING, TASK_HEAD_TYPES
from langadapt.models.language_id import input_embeddings, read_input_embeddings
from langadapt.models.store_view import AdapterRef, store_view

log = logging.getLogger(__name__)

MAX_REROUTES = 8
CPU_PASS_TOKENS, CUDA_PASS_TOKENS = 512, 16_384


@dataclass(frozen=True)
class Job:
    """Texts to label with one route (all texts of one request)."""

    route: Route
    texts: Sequence[str]


@dataclass(frozen=True)
class TextResult:
    """One text's labels: a label and every label's probability (classification), or entities (NER)."""

    route: Route
    windows: int
    label: str | None = None
    score: float | None = None
    scores: tuple[tuple[str, float], ...] = ()
    entities: tuple[Entity, ...] = ()
    served_by: str = ""  # the inference path(s) of its windows: torch, onnx-swappable, onnx-fused:<precision>


Outcome = list[TextResult] | ServeError


@dataclass
class BatchStats:
    """What one `run` did: jobs, texts per task, windows (rows), real and padded tokens, forward passes."""

    jobs: int = 0
    texts: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    forwards: int = 0
    seconds: float = 0.0


@dataclass
class EngineHooks:
    """Callbacks for metrics; every one optional."""

    on_batch: Callable[[BatchStats], None] | None = None
    on_load: Callable[[AdapterRef, float, bool], None] | None = None
    on_evict: Callable[[str, str], None] | None = None


@dataclass
class _Window:
    """One model input row: which job and text it belongs to, its ids, and its weight in a merge."""

    job: int
    text: int
    ids: list[int]
    weight: int
    values: np.ndarray | None = None  # probabilities: [C] (classification) or [T, C] (tagging)
    served_by: str = ""  # the path that computed it: torch, onnx-swappable or onnx-fused:<precision>


@dataclass
class _Text:
    """How one text was encoded: its windows (indices into the row list) and, for NER, the word encoding."""

    job: int
    text: int
    rows: list[int]
    encoding: WordEncoding | None = None


class Engine:
    """Language-routed, adapter-stacked inference over one shared base model."""

    def __init__(self, settings: InferenceSettings | None = None, *, hooks: EngineHooks | None = None) -> None:
        self.settings = settings or InferenceSettings()
        self.hooks = hooks or EngineHooks()
        self.info = resolve_base_model(self.settings.base)
        self.tokenizer = take_shared(TOKENIZER, self.info) or load_tokenizer(self.info)
        self.device = resolve_device(self.settings.device)
        self.stores = store_view(self.settings.store, self.settings.defaults)
        policy = self.settings.auto_policy()
        self.backend = create_backend(
            self.settings.backend, self.info, self.device, self.settings.threads, self.stores, policy
        )
        self.router = Router(
            self.stores, self.info.fingerprint, fallbacks=self.settings.fallback, tasks=self.settings.tasks
        )
        self.cache = AdapterCache(
            self.backend.new_bank(),
            self._load_adapter,
            int(self.settings.cache_mb * MIB),
            on_evict=self.hooks.on_evict,
            on_load=self.hooks.on_load,
        )
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        # On a CPU, passes that stay in cache are fastest (measured: 512 padded tokens per pass ran 1.7x the
        # requests/s of 8192 with e5-small on one thread); a GPU wants the largest batches.
        self.max_tokens = self.settings.max_tokens or (
            CUDA_PASS_TOKENS if self.device.type == "cuda" else CPU_PASS_TOKENS
        )
        self._specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        self._in_use: dict[tuple[str, str], Route] = {}
        self.last_swap: dict[str, Any] | None = None  # when the last new store generation went live, and how
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._identifier: tuple[int, LanguageIdentifier | ServeError] | None = None  # (store generation, head)

    # --------------------------------------------------------------------------------------- routing

    @property
    def generation(self) -> int:
        """The store generation of the routing table in use."""
        return self.router.table.generation

    def resolve(self, task: str, lang: str) -> Route:
        """The route for a task and a language code as a client sends it (ServeError 404 when none)."""
        return self.router.resolve(task, lang)

    def label(self, task: str, lang: str, texts: Sequence[str]) -> list[TextResult]:
        """Label texts in one language with one task; raises ServeError when it cannot be served."""
        outcome = self.run([Job(self.resolve(task, lang), list(texts))])[0]
        if isinstance(outcome, ServeError):
            raise outcome
        return outcome

    def identify(self, texts: Sequence[str]) -> list[Detection]:
        """Each text's language by the store's language-ID head on this base (ServeError 503 when there is none)."""
        if not texts:
            return []  # loads nothing: a worker that never sees `auto` never builds the score table
        generation = self.stores.generation()
        if self._identifier is None or self._identifier[0] != generation:
            held = self._identifier[1] if self._identifier is not None else None
            if isinstance(held, LanguageIdentifier) and find_head(self.stores, self.info.fingerprint) == held.ref:
                self._identifier = (generation, held)  # the store moved, the head did not
        if self._identifier is None or self._identifier[0] != generation:
            try:
                found: LanguageIdentifier | ServeError = load_identifier(
                    self.stores, self.info.fingerprint, self._input_embeddings, self.settings.lid_threshold
                )
            except ServeError as err:
                found = err
            self._identifier = (generation, found)
        identifier = self._identifier[1]
        if isinstance(identifier, ServeError):
            raise identifier
        return identifier.identify(self.tokenizer, texts)

    def _input_embeddings(self) -> Tensor:
        """The base's input embedding matrix: the loaded torch model's, else read from its safetensors."""
        model = getattr(self.backend, "model", None)
        return input_embeddings(model) if model is not None else read_input_embeddings(Path(self.info.path))

    # ----------------------------------------------------------------------------------------- run

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Label every job's texts in shared forward passes; one outcome per job, in order."""
        started = time.perf_counter()
        stats = BatchStats(jobs=len(jobs))
        errors: dict[int, ServeError] = {}
        results: dict[int, list[TextResult]] = {}
        with self._run_lock:
            leases: dict[StackKey, Lease] = {}
            routes: list[Route | None] = [None] * len(jobs)
            try:
                for j, job in enumerate(jobs):
                    try:
                        route, lease = self._lease_for(job.route, leases)
                    except ServeError as err:
                        errors[j] = err
                        continue
                    routes[j] = route
                    leases.setdefault(route.key, lease)
                rows, texts = self._encode(jobs, routes, stats)
                self._forward(rows, [leases[r.key] if r else None for r in routes], routes, stats)
                for j, (job, routed) in enumerate(zip(jobs, routes, strict=True)):
                    if routed is not None:
                        results[j] = [self._merge(routed, job.texts[t.text], t, rows) for t in texts[j]]
            finally:
                for lease in leases.values():
                    self.cache.release(lease)
        stats.seconds = time.perf_counter() - started
        if self.hooks.on_batch is not None:
            self.hooks.on_batch(stats)
        return [errors[j] if j in errors else results[j] for j in range(len(jobs))]

    def _lease_for(self, route: Route, held: Mapping[StackKey, Lease]) -> tuple[Route, Lease]:
        """A lease on the route's stack; versions that fail to load are refused and the route re-resolved."""
        for _ in range(MAX_REROUTES):
            if route.key in held:
                return route, held[route.key]
            try:
                lease = self.cache.acquire(route.key)
            except AdapterLoadError as err:
                log.warning("refusing adapter %s: %s", err.ref, err.reason)
                self.router.refuse(err.ref, err.reason)
                try:
                    route = self.router.resolve(route.task, route.language)
                except ServeError:
                    break
                continue
            with self._lock:
                self._in_use[(route.task, route.language)] = route
            return route, lease
        refused = {str(ref): reason for ref, reason in self.router.refused.items()}
        raise ServeError(
            503,
            "adapter_unavailable",
            f"no loadable {route.task} adapter version for {route.language}: every candidate was refused",
            "publish a working version (GET /v1/adapters lists the refused ones and why)",
            extra={"refused": refused},
        )

    def _window_size(self, route: Route) -> tuple[int, int]:
        """(max_length, stride) for a route, fitted to the base model and the tokenizer's special tokens."""
        length = max(self._specials + 2, min(route.max_length, self.backend.max_positions))
        content = length - self._specials
        return length, max(0, min(route.stride, content - 1))

    def _encode(
        self, jobs: Sequence[Job], routes: Sequence[Route | None], stats: BatchStats
    ) -> tuple[list[_Window], list[list[_Text]]]:
        """Every text of every routed job as windows; texts[j] describes job j's texts.

        A text is tokenized once per reading, however many jobs share it (a `/v1/label` request runs each of its
        texts under several tasks): classification heads read the tokenizer's own pieces of the raw text, tagging
        heads the pieces of the words `split_words` finds (as they were trained), so topic and sentiment share one
        tokenization and NER has its own. Classification texts are tokenized in one batched call per window size.
        """
        pieces = self._classification_pieces(jobs, routes)
        word_encodings: dict[tuple[str, int, int], WordEncoding] = {}
        rows: list[_Window] = []
        texts: list[list[_Text]] = [[] for _ in jobs]
        for j, (job, route) in enumerate(zip(jobs, routes, strict=True)):
            if route is None:
                continue
            stats.texts[route.task] += len(job.texts)
            length, stride = self._window_size(route)
            for t, text in enumerate(job.texts):
                first = len(rows)
                if route.head_type == TAGGING:
                    key = (text, length, stride)
                    if key not in word_encodings:
                        word_encodings[key] = encode_text(self.tokenizer, text, length, stride)
                    encoding = word_encodings[key]
                    for window in encoding.windows:
                        content = sum(1 for w in window.word_ids if w is not None)
                        rows.append(_Window(j, t, list(window.input_ids), content))
                    texts[j].append(_Text(j, t, list(range(first, len(rows))), encoding))
                    continue
                for ids, content in pieces[(length, stride)][text]:
                    rows.append(_Window(j, t, ids, content))
                texts[j].append(_Text(j, t, list(range(first, len(rows)))))
        return rows, texts

    def _classification_pieces(
        self, jobs: Sequence[Job], routes: Sequence[Route | None]
    ) -> dict[tuple[int, int], dict[str, list[tuple[list[int], int]]]]:
        """(max_length, stride) → text → its windows as (ids, content tokens), each distinct text tokenized once."""
        wanted: dict[tuple[int, int], dict[str, None]] = {}
        for job, route in zip(jobs, routes, strict=True):
            if route is not None and route.head_type != TAGGING:
                wanted.setdefault(self._window_size(route), {}).update(dict.fromkeys(job.texts))
        pieces: dict[tuple[int, int], dict[str, list[tuple[list[int], int]]]] = {}
        for (length, stride), distinct in wanted.items():
            unique = list(distinct)
            encoded = self.tokenizer(
                unique,
                truncation=True,
                max_length=length,
                stride=stride,
                return_overflowing_tokens=True,
                return_special_tokens_mask=True,
                verbose=False,
            )
            windows: dict[str, list[tuple[list[int], int]]] = {text: [] for text in unique}
            for ids, special, t in zip(
                encoded["input_ids"], encoded["special_tokens_mask"], encoded["overflow_to_sample_mapping"], strict=True
            ):
                windows[unique[int(t)]].append((list(ids), max(1, len(ids) - sum(special))))
            pieces[(length, stride)] = windows
        return pieces

    def _forward(
        self,
        rows: list[_Window],
        leases: Sequence[Lease | None],
        routes: Sequence[Route | None],
        stats: BatchStats,
    ) -> None:
        """Fill each row's probabilities: fused stacks in their own sessions, the rest packed into bank passes."""
        bank_rows: list[int] = []
        fused_rows: dict[StackKey, list[int]] = {}
        sessions: dict[StackKey, Any] = {}
        for i, row in enumerate(rows):
            route = routes[row.job]
            assert route is not None  # rows exist only for routed jobs
            if route.key not in sessions:
                session = self.backend.fused_for(route.key)
                if session is not None and list(getattr(session, "labels", route.labels)) != list(route.labels):
                    session = None  # an artifact whose head disagrees with the adapter's labels is not used
                sessions[route.key] = session
            if sessions[route.key] is None:
                bank_rows.append(i)
            else:
                fused_rows.setdefault(route.key, []).append(i)
        for key, members in fused_rows.items():
            path = f"{FUSED_ARTIFACT}:{getattr(sessions[key], 'manifest', {}).get('precision') or 'fp32'}"
            for chunk, ids, mask in self._chunks(rows, members):
                logits = torch.from_numpy(sessions[key].run(ids.numpy(), mask.numpy()))
                self._store_probs(rows, chunk, torch.softmax(logits.float(), dim=-1).numpy(), path)
                self._count(stats, mask)
        for chunk, ids, mask in self._chunks(rows, bank_rows):
            index = torch.tensor([self._index_of(leases, rows[i]) for i in chunk], dtype=torch.long)
            path = self.backend.bank_path(mask.numel())
            hidden = self.backend.hidden_states(ids, mask, index, self.cache.tensors())
            self._count(stats, mask)
            groups: dict[StackKey, list[int]] = {}
            for b, i in enumerate(chunk):
                route = routes[rows[i].job]
                assert route is not None
                groups.setdefault(route.key, []).append(b)
            for members in groups.values():
                lease = leases[rows[chunk[members[0]]].job]
                assert lease is not None and lease.head is not None
                selected = torch.tensor(members, dtype=torch.long, device=hidden.device)
                with torch.inference_mode():
                    logits = lease.head(hidden.index_select(0, selected))
                    probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                self._store_probs(rows, [chunk[b] for b in members], probs, path)

    def _chunks(self, rows: Sequence[_Window], members: Sequence[int]) -> Iterator[tuple[list[int], Tensor, Tensor]]:
        """Rows longest first, packed into right-padded (ids, mask) passes within `max_rows` and `max_tokens`."""
        order = sorted(members, key=lambda i: len(rows[i].ids), reverse=True)
        start = 0
        while start < len(order):
            longest = len(rows[order[start]].ids)
            size = max(1, min(self.settings.max_rows, self.max_tokens // max(1, longest)))
            chunk = order[start : start + size]
            start += size
            ids = torch.full((len(chunk), longest), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), longest), dtype=torch.long)
            for b, i in enumerate(chunk):
                length = len(rows[i].ids)
                ids[b, :length] = torch.tensor(rows[i].ids, dtype=torch.long)
                mask[b, :length] = 1
            yield chunk, ids, mask

    @staticmethod
    def _index_of(leases: Sequence[Lease | None], row: _Window) -> int:
        lease = leases[row.job]
        assert lease is not None
        return lease.index

    @staticmethod
    def _store_probs(rows: Sequence[_Window], chunk: Sequence[int], probs: np.ndarray, path: str) -> None:
        """Give each row its probabilities (`[C]`, or `[T, C]` trimmed to its length) and the path that made them."""
        for position, i in enumerate(chunk):
            values = probs[position]
            rows[i].values = values[: len(rows[i].ids)] if values.ndim == 2 else values
            rows[i].served_by = path

    @staticmethod
    def _count(stats: BatchStats, mask: Tensor) -> None:
        stats.forwards += 1
        stats.rows += int(mask.shape[0])
        stats.tokens += int(mask.sum())
        stats.padded_tokens += mask.numel()

    def _merge(self, route: Route, text: str, plan: _Text, rows: Sequence[_Window]) -> TextResult:
        """One text's result from its windows' probabilities."""
        labels = route.labels
        windows = [rows[i] for i in plan.rows]
        served_by = "+".join(sorted({w.served_by for w in windows}))
        if plan.encoding is not None:
            encoding = plan.encoding
            values: list[Any] = [w.values for w in windows]
            per_word = merge_windows(encoding, values, None)
            tags, scores = [], []
            for probs in per_word:
                if probs is None:
                    tags.append("O")
                    scores.append(1.0)
                    continue
                best = int(np.argmax(probs))
                tags.append(labels[best] if best < len(labels) else "O")
                scores.append(float(probs[best]))
            spans = encoding.word_spans or []
            entities = decode_entities(text, spans, tags, scores)
            return TextResult(route, len(windows), entities=tuple(entities), served_by=served_by)
        weights = np.array([w.weight for w in windows], dtype=np.float64)
        stacked = np.stack([np.asarray(w.values, dtype=np.float64) for w in windows])
        probs = (stacked * weights[:, None]).sum(axis=0) / weights.sum()
        order = np.argsort(-probs, kind="stable")
        ranked = tuple((labels[i] if i < len(labels) else f"LABEL_{i}", float(probs[i])) for i in order)
        return TextResult(
            route, len(windows), label=ranked[0][0], score=ranked[0][1], scores=ranked, served_by=served_by
        )

    # ------------------------------------------------------------------------------- adapters, hot load

    def _load_adapter(self, ref: AdapterRef) -> LoadedAdapter:
        """Open (checksums, base fingerprint), parse and place one adapter version, or raise why not."""
        try:
            manifest, folder = self.stores.open_ref(ref, self.info.fingerprint)
        except StoreError as err:
            raise AdapterLoadError(ref, err.message) from err
        weights = AdapterWeights.from_folder(folder)
        if manifest.task == LANGUAGE_TASK:
            return LoadedAdapter(ref, weights, None)
        head = Head.from_folder(folder)
        expected = TASK_HEAD_TYPES.get(manifest.task)
        if expected is not None and head.head_type != expected:
            raise AdapterLoadError(ref, f"its head is {head.head_type}, a {manifest.task} adapter needs {expected}")
        if manifest.labels and list(manifest.labels) != list(head.labels):
            raise AdapterLoadError(ref, f"its manifest labels {manifest.labels} differ from its head's {head.labels}")
        return LoadedAdapter(ref, weights, self.backend.place_head(head), tuple(head.labels))

    def refresh(self) -> bool:
        """Follow the store: when its generation moved, preload changed routes, then switch; whether it moved."""
        with self._refresh_lock:
            detected = time.time()
            table = self.router.stage()
            if table is None:
                return False
            with self._lock:
                in_use = dict(self._in_use)
            updated: dict[tuple[str, str], Route] = {}
            for (task, language), old in in_use.items():
                route: Route | None = None
                for _ in range(MAX_REROUTES):
                    try:
                        route = table.resolve(task, language)
                    except ServeError:
                        route = None
                        break
                    if route.key == old.key:
                        break
                    try:
                        self.cache.activate(route.key)
                        break
                    except AdapterLoadError as err:
                        log.warning("refusing adapter %s: %s", err.ref, err.reason)
                        table = self.router.refuse(err.ref, err.reason, table)
                        route = None
                if route is not None:
                    updated[(task, language)] = route
            self.router.install(table)
            installed = time.time()
            changed = sorted(str(route.key) for pair, route in updated.items() if in_use[pair].key != route.key)
            self.last_swap = {
                "generation": table.generation,
                "detected_at": detected,
                "installed_at": installed,
                "load_seconds": installed - detected,
                "swapped": changed,
            }
            with self._lock:
                for pair, route in updated.items():
                    self._in_use[pair] = route
                for pair in set(in_use) - set(updated):
                    self._in_use.pop(pair, None)
                kept = {route.key for route in self._in_use.values()}
            for key in {route.key for route in in_use.values()} - kept:
                self.cache.retire(key)
            return True

    def preload(self, limit: int) -> int:
        """Activate up to `limit` routes (by task, then language) so the first requests need no load."""
        loaded = 0
        table = self.router.table
        for task in self.settings.tasks:
            for language in table.languages(task):
                if loaded >= limit:
                    return loaded
                if self._activate(task, language):
                    loaded += 1
        return loaded

    def _activate(self, task: str, language: str) -> Route | None:
        """Resolve and activate one route, refusing versions that fail; the route, or None."""
        for _ in range(MAX_REROUTES):
            try:
                route = self.router.resolve(task, language)
            except ServeError:
                return None
            try:
                self.cache.activate(route.key)
            except AdapterLoadError as err:
                log.warning("refusing adapter %s: %s", err.ref, err.reason)
                self.router.refuse(err.ref, err.reason)
                continue
            with self._lock:
                self._in_use[(task, language)] = route
            return route
        return None

    def load(self, adapter_id: str) -> dict[str, Any]:
        """Activate every route that uses this adapter id (or register it when none does); what happened."""
        table = self.router.table
        versions = table.versions(adapter_id)
        if not versions:
            raise ServeError(
                404,
                "unknown_adapter",
                f"no adapter {adapter_id!r} in the store",
                "publish it first (POST /v1/adapters/load with a path), or list ids with GET /v1/adapters",
            )
        loaded: list[str] = []
        for task, language in table.routes_for(adapter_id):
            route = self._activate(task, language)
            if route is not None:
                loaded.append(str(route.key))
        if not loaded:
            servable = [c for c in versions if table.servable(c)]
            if servable:
                try:
                    self.cache.register(servable[0].ref)
                    loaded.append(str(servable[0].ref))
                except AdapterLoadError as err:
                    self.router.refuse(err.ref, err.reason)
        refused = {str(ref): reason for ref, reason in self.router.refused.items() if ref.id == adapter_id}
        return {"loaded": loaded, "refused": refused}

    def unload(self, adapter_id: str) -> int:
        """Drop every stack and registered version of this id (unpinning it); it loads again on demand."""
        with self._lock:
            for pair in [p for p, r in self._in_use.items() if any(ref.id == adapter_id for ref in r.key.refs)]:
                del self._in_use[pair]
        return self.cache.unload(adapter_id)

    def pin(self, adapter_id: str) -> dict[str, Any]:
        """Pin an id (never evicted) and load it."""
        self.cache.pin(adapter_id)
        return self.load(adapter_id)

    def unpin(self, adapter_id: str) -> None:
        """Unpin an id; its stacks stay until evicted."""
        self.cache.unpin(adapter_id)

    def marker(self) -> tuple[int, int, int, int]:
        """Cheap to compute; changes whenever `status()` may (leases aside): cache, routing table, refusals."""
        return self.cache.version, id(self.router.table), len(self.router.refused), getattr(self.backend, "version", 0)

    def status(self) -> dict[str, Any]:
        """What is loaded, refused and used: for admin pages and worker reports."""
        slots = self.cache.slots()
        return {
            "generation": self.generation,
            "active": [
                {
                    "index": s.index,
                    "stack": str(s.key),
                    "task_adapter": s.key.task.as_dict(),
                    "language_adapter": s.key.language.as_dict() if s.key.language else None,
                    "pinned": s.pinned,
                    "leases": s.leases,
                    "retired": s.retired,
                }
                for s in slots.values()
            ],
            "registered": [str(ref) for ref in self.cache.registered()],
            "refused": {str(ref): reason for ref, reason in self.router.refused.items()},
            "pins": sorted(self.cache.pins),
            "cache_bytes": self.cache.nbytes,
            "budget_bytes": self.cache.budget_bytes,
            "bank_bytes": self.cache.bank.nbytes,
            "last_swap": self.last_swap,
            "runtime": self.backend.describe(),
        }
