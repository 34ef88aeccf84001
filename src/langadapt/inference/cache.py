"""The adapter cache: parsed adapters on the CPU, stacks active in the bank, under one memory budget.

Two tiers, as vLLM's LoRA manager keeps them:

- *registered*: adapter versions loaded from the store and parsed (`AdapterWeights`, head), keyed by `AdapterRef`.
- *active*: stacks written into a bank index (`AdapterBank.add_members`), keyed by `StackKey`; a request holds a
  `Lease` on its stack for the length of its forward pass, so the index cannot be reused under it.

The budget counts registered bytes (weights and heads) plus, for each active stack, its share of the bank
(`bank.nbytes / bank.capacity`). Over budget, the least recently used entries go first: registered adapters no
active stack uses, then active stacks that are neither leased nor pinned. Pinning is by adapter id, so it
covers every version. A *retired* stack (superseded by a new version) leaves the bank as soon as its last lease
is released, so in-flight requests finish on the version they started with.

Thread-safe: one lock guards the tiers and the bank; loading from the store runs outside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from langadapt.inference.routing import StackKey
from langadapt.models.bank import AdapterBank, AdapterWeights
from langadapt.models.heads import Head
from langadapt.models.store_view import AdapterRef

log = logging.getLogger(__name__)

STACK, ADAPTER = "stack", "adapter"


class AdapterLoadError(Exception):
    """An adapter version that cannot be served: corrupt, mismatched with the base, or not bank-compatible."""

    def __init__(self, ref: AdapterRef, reason: str) -> None:
        super().__init__(f"{ref}: {reason}")
        self.ref = ref
        self.reason = reason


@dataclass(frozen=True, eq=False)
class LoadedAdapter:
    """One adapter version parsed for the bank, with its head (task adapters) and label order."""

    ref: AdapterRef
    weights: AdapterWeights
    head: Head | None
    labels: tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        """Bytes of the parsed weights and the head."""
        return weights_nbytes(self.weights) + (self.head.nbytes if self.head is not None else 0)


def weights_nbytes(weights: AdapterWeights) -> int:
    """Bytes held by an adapter's parsed tensors."""
    tensors: list[Tensor] = [t for group in weights.bottleneck.values() for t in group]
    tensors += [t for pair in weights.lora.values() for t in pair]
    if weights.invertible is not None:
        nice = weights.invertible
        tensors += [
            nice.f_down_w,
            nice.f_down_b,
            nice.f_up_w,
            nice.f_up_b,
            nice.g_down_w,
            nice.g_down_b,
            nice.g_up_w,
            nice.g_up_b,
        ]
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class Lease:
    """A request's hold on an active stack: its bank index and head, valid until released."""

    key: StackKey
    index: int
    head: Head | None
    labels: tuple[str, ...]


@dataclass(frozen=True)
class SlotView:
    """A snapshot of one bank index, for status pages and tests."""

    index: int
    key: StackKey
    leases: int
    pinned: bool
    retired: bool


@dataclass
class _Registered:
    adapter: LoadedAdapter
    last_used: float


@dataclass
class _Active:
    key: StackKey
    index: int
    head: Head | None
    labels: tuple[str, ...]
    leases: int
    retired: bool
    last_used: float


Loader = Callable[[AdapterRef], LoadedAdapter]
EvictCallback = Callable[[str, str], None]  # (STACK or ADAPTER, what was evicted)
LoadCallback = Callable[[AdapterRef, float, bool], None]  # (ref, seconds, loaded)


class AdapterCache:
    """Registered adapters and active bank stacks under a byte budget, with LRU eviction, pins and leases."""

    def __init__(
        self,
        bank: AdapterBank,
        loader: Loader,
        budget_bytes: int,
        *,
        on_evict: EvictCallback | None = None,
        on_load: LoadCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget_bytes < 1:
            raise ValueError(f"the cache budget must be at least 1 byte, got {budget_bytes}")
        self.bank = bank
        self.loader = loader
        self.budget_bytes = budget_bytes
        self.on_evict = on_evict
        self.on_load = on_load
        self.clock = clock
        self._lock = threading.RLock()
        self._registered: dict[AdapterRef, _Registered] = {}
        self._active: dict[StackKey, _Active] = {}
        self._pins: set[str] = set()
        self._version = 0

    # ------------------------------------------------------------------------------------------ views

    @property
    def version(self) -> int:
        """A counter that moves on every change of what is registered, active, retired or pinned (not leases)."""
        return self._version

    @property
    def nbytes(self) -> int:
        """Bytes the budget counts: registered adapters plus each active stack's share of the bank."""
        with self._lock:
            return self._nbytes()

    def slots(self) -> dict[int, SlotView]:
        """Every occupied bank index and what it holds."""
        with self._lock:
            return {
                a.index: SlotView(a.index, a.key, a.leases, self._stack_pinned(a.key), a.retired)
                for a in sorted(self._active.values(), key=lambda a: a.index)
            }

    def registered(self) -> list[AdapterRef]:
        """The registered adapter versions, least recently used first."""
        with self._lock:
            return [ref for ref, _ in sorted(self._registered.items(), key=lambda kv: kv[1].last_used)]

    def active(self) -> list[StackKey]:
        """The active stacks, least recently used first."""
        with self._lock:
            return [a.key for a in sorted(self._active.values(), key=lambda a: a.last_used)]

    @property
    def pins(self) -> frozenset[str]:
        """Pinned adapter ids."""
        with self._lock:
            return frozenset(self._pins)

    def tensors(self) -> dict[str, Tensor]:
        """The bank tensors as they are now; safe to read while other indices change (see module notes)."""
        with self._lock:
            return self.bank.tensors()

    # ---------------------------------------------------------------------------------------- tier 1

    def register(self, ref: AdapterRef) -> LoadedAdapter:
        """The parsed adapter, loaded from the store on first use (AdapterLoadError when it cannot be)."""
        loaded = self._register(ref)
        with self._lock:
            self._shrink(protect_refs={ref}, protect_keys=set())
        return loaded

    def _register(self, ref: AdapterRef) -> LoadedAdapter:
        with self._lock:
            entry = self._registered.get(ref)
            if entry is not None:
                entry.last_used = self.clock()
                return entry.adapter
        started = time.perf_counter()
        try:
            adapter = self.loader(ref)
        except AdapterLoadError:
            self._notify_load(ref, time.perf_counter() - started, False)
            raise
        except Exception as err:  # anything a loader raises means the version cannot be served
            self._notify_load(ref, time.perf_counter() - started, False)
            raise AdapterLoadError(ref, f"{type(err).__name__}: {err}") from err
        self._notify_load(ref, time.perf_counter() - started, True)
        with self._lock:
            entry = self._registered.get(ref)
            if entry is None:  # another thread may have loaded it meanwhile: keep the first
                entry = self._registered[ref] = _Registered(adapter, self.clock())
                self._version += 1
            entry.last_used = self.clock()
            return entry.adapter

    # ---------------------------------------------------------------------------------------- tier 2

    def acquire(self, key: StackKey) -> Lease:
        """A lease on `key`'s bank index, registering and activating it first when needed."""
        with self._lock:
            active = self._active.get(key)
            if active is not None:
                return self._lease(active)
        members = [self._register(ref) for ref in key.refs]
        with self._lock:
            active = self._active.get(key)
            if active is None:
                active = self._activate(key, members)
            lease = self._lease(active)
            self._shrink(protect_refs=set(key.refs), protect_keys={key})
            return lease

    def release(self, lease: Lease) -> None:
        """End a lease; a retired stack leaves the bank with its last lease."""
        with self._lock:
            active = self._active.get(lease.key)
            if active is None or active.index != lease.index:
                return
            active.leases = max(0, active.leases - 1)
            if active.retired and active.leases == 0:
                self._drop_stack(active)
            self._shrink(protect_refs=set(), protect_keys=set())

    def activate(self, key: StackKey) -> int:
        """Make `key` active (load, parse, write into the bank) without holding it; return its index."""
        lease = self.acquire(key)
        self.release(lease)
        return lease.index

    def retire(self, key: StackKey) -> bool:
        """Mark a superseded stack to leave the bank once unleased (now, if it is); whether it was active."""
        with self._lock:
            active = self._active.get(key)
            if active is None:
                return False
            active.retired = True
            self._version += 1
            if active.leases == 0:
                self._drop_stack(active)
            return True

    def evict(self, key: StackKey) -> bool:
        """Remove an active stack now (retire it if leased); whether it was active. Pins do not protect it."""
        return self.retire(key)

    def unload(self, adapter_id: str) -> int:
        """Unpin `adapter_id`, and drop every stack and registered version of it; return how many entries went.

        Leased stacks are retired instead and leave with their last lease.
        """
        count = 0
        with self._lock:
            self._pins.discard(adapter_id)
            self._version += 1
            for active in list(self._active.values()):
                if any(ref.id == adapter_id for ref in active.key.refs):
                    active.retired = True
                    if active.leases == 0:
                        self._drop_stack(active)
                    count += 1
            used = self._used_refs()
            for ref in [r for r in self._registered if r.id == adapter_id and r not in used]:
                self._drop_registered(ref)
                count += 1
        return count

    def pin(self, adapter_id: str) -> None:
        """Never evict stacks or registered versions of this id (any version) until unpinned."""
        with self._lock:
            self._pins.add(adapter_id)
            self._version += 1

    def unpin(self, adapter_id: str) -> None:
        """Let this id's stacks and versions be evicted again (when over budget)."""
        with self._lock:
            self._pins.discard(adapter_id)
            self._version += 1
            self._shrink(protect_refs=set(), protect_keys=set())

    # ------------------------------------------------------------------------------------- internals

    def _lease(self, active: _Active) -> Lease:
        active.leases += 1
        if active.retired:
            active.retired = False
            self._version += 1  # a stale route may come back to a retired stack: it stays until released
        active.last_used = self.clock()
        for ref in active.key.refs:
            entry = self._registered.get(ref)
            if entry is not None:
                entry.last_used = active.last_used
        return Lease(active.key, active.index, active.head, active.labels)

    def _activate(self, key: StackKey, members: list[LoadedAdapter]) -> _Active:
        weights: list[AdapterWeights | None] = [m.weights for m in members]
        if key.language is None:
            weights.insert(0, None)  # slot 0 is the language adapter's, empty here
        try:
            index = self.bank.add_members(key, weights)
        except (ValueError, TypeError) as err:
            raise AdapterLoadError(key.task, f"the adapter bank refused the stack {key}: {err}") from err
        now = self.clock()
        for member in members:  # a concurrent shrink may have dropped a member between load and activation
            self._registered.setdefault(member.ref, _Registered(member, now))
        task = members[-1]
        active = _Active(key, index, task.head, task.labels, 0, False, self.clock())
        self._active[key] = active
        self._version += 1
        return active

    def _nbytes(self) -> int:
        per_stack = self.bank.nbytes // max(1, self.bank.capacity)
        return sum(e.adapter.nbytes for e in self._registered.values()) + per_stack * len(self._active)

    def _stack_pinned(self, key: StackKey) -> bool:
        return any(ref.id in self._pins for ref in key.refs)

    def _used_refs(self) -> set[AdapterRef]:
        return {ref for active in self._active.values() for ref in active.key.refs}

    def _shrink(self, protect_refs: set[AdapterRef], protect_keys: set[StackKey]) -> None:
        """Evict least recently used entries until within budget, or until nothing else may go."""
        while self._nbytes() > self.budget_bytes:
            used = self._used_refs() | protect_refs
            idle = [
                (entry.last_used, ref)
                for ref, entry in self._registered.items()
                if ref not in used and ref.id not in self._pins
            ]
            if idle:
                self._drop_registered(min(idle)[1])
                continue
            stacks = [
                a
                for a in self._active.values()
                if a.leases == 0 and a.key not in protect_keys and not self._stack_pinned(a.key)
            ]
            if not stacks:
                log.debug(
                    "adapter cache over budget (%d > %d bytes) with nothing evictable",
                    self._nbytes(),
                    self.budget_bytes,
                )
                return
            self._drop_stack(min(stacks, key=lambda a: a.last_used))

    def _drop_stack(self, active: _Active) -> None:
        self.bank.remove(active.key)
        del self._active[active.key]
        self._version += 1
        if self.on_evict is not None:
            self.on_evict(STACK, str(active.key))

    def _drop_registered(self, ref: AdapterRef) -> None:
        del self._registered[ref]
        self._version += 1
        if self.on_evict is not None:
            self.on_evict(ADAPTER, str(ref))

    def _notify_load(self, ref: AdapterRef, seconds: float, ok: bool) -> None:
        if self.on_load is not None:
            self.on_load(ref, seconds, ok)
