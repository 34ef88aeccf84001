"""AdapterCache state machine: the bank slots, registered versions and evictions after every step."""

from __future__ import annotations

import pytest
import torch

from langadapt.inference.cache import ADAPTER, STACK, AdapterCache, AdapterLoadError, LoadedAdapter, weights_nbytes
from langadapt.inference.routing import StackKey
from langadapt.models.bank import AdapterBank, AdapterWeights, BankLayout
from langadapt.models.heads import Head
from langadapt.models.store_view import AdapterRef

HIDDEN, LAYERS, RANK = 8, 2, 2
LAYOUT = BankLayout(num_layers=LAYERS, hidden_size=HIDDEN)


def weights(name: str, value: float, hidden: int = HIDDEN) -> AdapterWeights:
    """A bottleneck adapter whose every weight is `value` (so slots can be told apart)."""
    layer = (
        torch.full((hidden, RANK), value),
        torch.full((RANK,), value),
        torch.full((RANK, hidden), value),
        torch.full((hidden,), value),
    )
    return AdapterWeights(name, "bottleneck", hidden, "relu", dict.fromkeys(range(LAYERS), layer), {}, None)


class FakeStore:
    """A loader over in-memory adapters: ids starting with `lang` are language adapters."""

    def __init__(self) -> None:
        self.loads: list[AdapterRef] = []
        self.broken: set[AdapterRef] = set()
        self.wrong_size: set[AdapterRef] = set()

    def __call__(self, ref: AdapterRef) -> LoadedAdapter:
        self.loads.append(ref)
        if ref in self.broken:
            raise AdapterLoadError(ref, "sha256 mismatch")
        value = float(ref.version) + (0.5 if ref.id.startswith("lang") else 0.0)
        w = weights(ref.id, value, hidden=HIDDEN * 2 if ref in self.wrong_size else HIDDEN)
        if ref.id.startswith("lang"):
            return LoadedAdapter(ref, w, None)
        head = Head("classification", ["a", "b"], [(torch.ones(2, HIDDEN), torch.zeros(2))], None)
        return LoadedAdapter(ref, w, head, ("a", "b"))


def task(name: str, version: int = 1) -> AdapterRef:
    return AdapterRef(name, version)


def lang(name: str, version: int = 1) -> AdapterRef:
    return AdapterRef(f"lang-{name}", version)


def slots(cache: AdapterCache) -> dict[int, tuple[str, int, bool, bool]]:
    """index → (stack, leases, pinned, retired)."""
    return {i: (str(s.key), s.leases, s.pinned, s.retired) for i, s in cache.slots().items()}


ADAPTER_BYTES = weights_nbytes(weights("x", 1.0))
HEAD_BYTES = 2 * HIDDEN * 4 + 2 * 4


def per_stack_bytes() -> int:
    bank = AdapterBank(LAYOUT)
    bank.add_members("probe", [weights("a", 1.0), weights("b", 1.0)])
    return bank.nbytes // bank.capacity


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def make_cache(store: FakeStore, budget: int = 10**9) -> tuple[AdapterCache, list[tuple[str, str]]]:
    evicted: list[tuple[str, str]] = []
    cache = AdapterCache(AdapterBank(LAYOUT), store, budget, on_evict=lambda kind, what: evicted.append((kind, what)))
    return cache, evicted


def test_acquire_registers_members_and_fills_the_lowest_free_index(store: FakeStore) -> None:
    cache, evicted = make_cache(store)
    yo = StackKey(task("yo-ner"), lang("yo"))
    lease = cache.acquire(yo)
    assert lease.index == 1 and lease.labels == ("a", "b")
    assert slots(cache) == {1: (str(yo), 1, False, False)}
    assert set(cache.registered()) == {task("yo-ner"), lang("yo")}
    cache.release(lease)
    assert slots(cache) == {1: (str(yo), 0, False, False)}

    ha = StackKey(task("ha-ner"))
    assert cache.activate(ha) == 2
    assert slots(cache) == {1: (str(yo), 0, False, False), 2: (str(ha), 0, False, False)}
    # the language slot of a task-only stack stays empty; the task adapter sits in slot 1
    tensors = cache.tensors()
    assert torch.all(tensors["bn_up_w"][2, 0] == 0)
    assert torch.all(tensors["bn_up_w"][2, 1, :, :RANK] == 1.0)
    assert torch.all(tensors["bn_up_w"][1, 0, :, :RANK] == 1.5)  # the language adapter, in slot 0
    assert store.loads == [lang("yo"), task("yo-ner"), task("ha-ner")]
    assert evicted == []


def test_a_shared_language_adapter_is_loaded_once(store: FakeStore) -> None:
    cache, _ = make_cache(store)
    cache.activate(StackKey(task("yo-ner"), lang("yo")))
    cache.activate(StackKey(task("yo-topic"), lang("yo")))
    assert store.loads.count(lang("yo")) == 1
    assert len(cache.slots()) == 2


def test_over_budget_evicts_unused_registrations_then_lru_stacks(store: FakeStore) -> None:
    stack = per_stack_bytes()
    task_bytes = ADAPTER_BYTES + HEAD_BYTES
    budget = 2 * (task_bytes + stack) + task_bytes // 2  # room for two task-only stacks, not three
    cache, evicted = make_cache(store, budget)
    a, b, c = (StackKey(task(n)) for n in ("a", "b", "c"))
    cache.activate(a)
    cache.activate(b)
    assert slots(cache) == {1: (str(a), 0, False, False), 2: (str(b), 0, False, False)}
    assert cache.nbytes <= budget

    cache.activate(a)  # a becomes most recently used
    cache.activate(c)
    assert slots(cache) == {1: (str(a), 0, False, False), 3: (str(c), 0, False, False)}
    assert evicted == [(STACK, str(b)), (ADAPTER, str(task("b")))]
    assert task("b") not in cache.registered()
    assert torch.all(cache.tensors()["bn_up_w"][2] == 0)  # the freed index is zeroed

    d = StackKey(task("d"))
    assert cache.activate(d) == 2  # the lowest free index is reused
    assert slots(cache) == {2: (str(d), 0, False, False), 3: (str(c), 0, False, False)}


def test_pinned_and_leased_stacks_survive_eviction(store: FakeStore) -> None:
    stack = per_stack_bytes()
    task_bytes = ADAPTER_BYTES + HEAD_BYTES
    cache, evicted = make_cache(store, 2 * (task_bytes + stack))
    a, b, c = (StackKey(task(n)) for n in ("a", "b", "c"))
    cache.pin("a")
    cache.activate(a)
    held_b = cache.acquire(b)
    held_c = cache.acquire(c)  # over budget, but a is pinned and b, c are leased: nothing may go
    assert slots(cache) == {
        1: (str(a), 0, True, False),
        2: (str(b), 1, False, False),
        3: (str(c), 1, False, False),
    }
    assert cache.nbytes > cache.budget_bytes
    assert evicted == []
    cache.release(held_b)  # b is now the only evictable stack
    assert slots(cache) == {1: (str(a), 0, True, False), 3: (str(c), 1, False, False)}
    assert evicted == [(STACK, str(b)), (ADAPTER, str(task("b")))]
    cache.release(held_c)  # back within budget: c stays
    assert slots(cache) == {1: (str(a), 0, True, False), 3: (str(c), 0, False, False)}
    cache.unpin("a")
    assert slots(cache)[1] == (str(a), 0, False, False)
    d = StackKey(task("d"))
    cache.activate(d)  # over budget again: a is now the least recently used, and unpinned
    assert slots(cache) == {2: (str(d), 0, False, False), 3: (str(c), 0, False, False)}


def test_a_stack_activated_beyond_a_full_budget_does_not_stay(store: FakeStore) -> None:
    stack = per_stack_bytes()
    cache, evicted = make_cache(store, ADAPTER_BYTES + HEAD_BYTES + stack)
    a, b = StackKey(task("a")), StackKey(task("b"))
    cache.pin("a")
    cache.activate(a)
    cache.activate(b)  # the budget is hard: with a pinned, b leaves as soon as it is released
    assert slots(cache) == {1: (str(a), 0, True, False)}
    assert evicted == [(STACK, str(b)), (ADAPTER, str(task("b")))]


def test_a_new_version_takes_a_fresh_index_and_the_old_leaves_with_its_last_lease(store: FakeStore) -> None:
    cache, evicted = make_cache(store)
    v1, v2 = StackKey(task("yo-ner", 1), lang("yo")), StackKey(task("yo-ner", 2), lang("yo"))
    in_flight = cache.acquire(v1)
    assert cache.activate(v2) == 2
    assert cache.retire(v1)
    assert slots(cache) == {1: (str(v1), 1, False, True), 2: (str(v2), 0, False, False)}
    assert torch.all(cache.tensors()["bn_up_w"][1, 1, :, :RANK] == 1.0)  # v1's weights still there for it
    cache.release(in_flight)
    assert slots(cache) == {2: (str(v2), 0, False, False)}
    assert evicted == [(STACK, str(v1))]
    assert torch.all(cache.tensors()["bn_up_w"][1] == 0)
    assert cache.retire(v1) is False


def test_unload_drops_stacks_and_versions_and_retires_leased_ones(store: FakeStore) -> None:
    cache, _ = make_cache(store)
    yo_ner, yo_topic = StackKey(task("yo-ner"), lang("yo")), StackKey(task("yo-topic"), lang("yo"))
    cache.activate(yo_ner)
    held = cache.acquire(yo_topic)
    cache.pin("lang-yo")
    assert cache.unload("lang-yo") == 2
    assert "lang-yo" not in cache.pins
    assert slots(cache) == {2: (str(yo_topic), 1, False, True)}
    assert lang("yo") in cache.registered()  # still used by the leased stack
    cache.release(held)
    assert slots(cache) == {}
    assert cache.unload("lang-yo") == 1  # the now-unused registration goes too
    assert cache.registered() == [task("yo-ner"), task("yo-topic")]
    assert cache.unload("lang-yo") == 0  # idempotent


def test_a_broken_or_misfit_adapter_is_refused_without_touching_the_bank(store: FakeStore) -> None:
    cache, _ = make_cache(store)
    good = StackKey(task("yo-ner", 1))
    cache.activate(good)
    store.broken.add(task("yo-ner", 2))
    with pytest.raises(AdapterLoadError, match="sha256"):
        cache.acquire(StackKey(task("yo-ner", 2)))
    store.wrong_size.add(task("ha-ner"))
    with pytest.raises(AdapterLoadError, match="bank refused"):
        cache.acquire(StackKey(task("ha-ner")))
    assert slots(cache) == {1: (str(good), 0, False, False)}
    loaded = cache.acquire(good)
    assert loaded.index == 1


def test_loader_exceptions_become_load_errors_and_are_reported(store: FakeStore) -> None:
    calls: list[tuple[AdapterRef, bool]] = []

    def loader(ref: AdapterRef) -> LoadedAdapter:
        raise ValueError("not a safetensors file")

    cache = AdapterCache(AdapterBank(LAYOUT), loader, 10**9, on_load=lambda ref, s, ok: calls.append((ref, ok)))
    with pytest.raises(AdapterLoadError, match="ValueError: not a safetensors file"):
        cache.activate(StackKey(task("x")))
    assert calls == [(task("x"), False)]
    assert cache.slots() == {}
