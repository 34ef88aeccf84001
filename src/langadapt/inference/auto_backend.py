"""`--backend auto` (the default): the torch bank path, and ONNX graphs wherever they measure faster here.

- **Every stack** runs on the bank path: torch, or the base's swappable ONNX graph for the pass sizes where it
  measured faster on this machine (timed against torch at start-up, or when the graph appears in the store).
- **Hot stacks**: a stack used in `promote_after` passes, and in at least `HOT_SHARE` of the recent ones (use
  counts halve every `8 × promote_after` uses, so old traffic fades), gets a fused ONNX graph (int8 where the
  export's quality gate passes on the adapter's recorded test file, fp32 otherwise). A missing graph is built in
  the background by a `langadapt export` child (`builds.py`, parity-verified before it is published, as by
  hand); once in the store it is timed against the bank path and serves the stack only if it is `MIN_GAIN`
  faster. A session idle for `idle_s` is closed, and the open ones stay within `fused_bytes` (least recently
  used closed first).
- With `build` on and a writable store, the swappable graph is built the same way once the server has run
  `promote_after` bank passes.
- On a GPU: the torch bank path alone (its batched kernels are the fast path there).

Every choice and the timings behind it are in `describe()`, which the server shows in `/v1/adapters`, and each
text's response names the path that computed it (`served_by` in its stack).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from langadapt.errors import LangadaptError
from langadapt.inference.backends import (
    Backend,
    FusedBackend,
    SwappableBackend,
    TorchBackend,
    _precision_rank,
    swappable_graph,
    swappable_states,
)
from langadapt.inference.builds import AUTO_DIR, ArtifactBuilds, FusedBuild, SwappableBuild
from langadapt.models.bank import BankLayout
from langadapt.models.kinds import AUTO_BACKEND, BACKENDS, SWAPPABLE_ARTIFACT, TORCH_BACKEND

if TYPE_CHECKING:
    from langadapt.inference.routing import StackKey
    from langadapt.models.base import BaseModelInfo
    from langadapt.models.store_view import Candidate, LayeredStore

log = logging.getLogger(__name__)

MIN_GAIN = 1.1  # an ONNX path replaces the torch one only when at least this much faster where measured
HOT_SHARE = 0.25  # a stack is hot when at least this share of recent stack uses is its own
FOLLOW_S = 1.0  # how often (seconds, at most) the store is looked at for new graphs and ended builds
SHAPES = ((1, 32), (4, 48), (16, 64))  # (rows, tokens) of the timing passes: one short text up to a full pass
REPEATS = 3


@dataclass(frozen=True)
class AutoPolicy:
    """When `auto` promotes and demotes: passes before a stack goes fused, idle time, memory, background builds."""

    promote_after: int = 32
    idle_s: float = 600.0
    fused_bytes: int = 1024 * 1024 * 1024
    build: bool = True


def best_seconds(run: Callable[[], Any], repeats: int = REPEATS) -> float:
    """The fastest of `repeats` timed calls, after one untimed warm-up call."""
    run()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def machine_key(threads: int | None) -> str:
    """What a timing depends on besides the graph: the CPU, the thread count and the library versions."""
    import onnxruntime

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    model = model or platform.processor() or platform.machine()
    cpus = len(os.sched_getaffinity(0))
    return f"{model}|cpus={cpus}|threads={threads}|torch={torch.__version__}|ort={onnxruntime.__version__}"


class TimingCache:
    """Timings kept in the writable store (`.auto/timings.json`), so that later starts and other workers reuse them."""

    def __init__(self, folder: Path, writable: bool) -> None:
        self.path = folder / "timings.json"
        self.writable = writable

    def get(self, key: str) -> dict[str, Any] | None:
        """The timing stored under `key`, if any (an unreadable file counts as none)."""
        try:
            value = json.loads(self.path.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a timing (whole-file replace; a concurrent writer's entry may be lost and is measured again)."""
        if not self.writable:
            return
        try:
            table = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        except (OSError, ValueError):
            table = {}
        table[key] = value
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temporary.write_text(json.dumps(table, indent=1, sort_keys=True), encoding="utf-8")
            temporary.replace(self.path)


def timing_inputs(rows: int, tokens: int) -> tuple[Tensor, Tensor, Tensor]:
    """Fixed token ids, a full mask and stack 0 for a timing pass of this shape."""
    ids = torch.randint(5, 100, (rows, tokens), generator=torch.Generator().manual_seed(rows * 1000 + tokens))
    return ids, torch.ones_like(ids), torch.zeros(rows, dtype=torch.long)


class AutoBackend(FusedBackend):
    """Torch bank path plus measured ONNX paths: the swappable graph for pass sizes it wins, fused hot stacks."""

    name = AUTO_BACKEND

    def __init__(
        self,
        info: BaseModelInfo,
        device: torch.device,
        threads: int | None,
        stores: LayeredStore,
        policy: AutoPolicy | None = None,
    ) -> None:
        super().__init__(info, device, threads, stores)  # fused_for below bounds sessions by memory, not max_sessions
        self.policy = policy or AutoPolicy()
        self.on_cpu = device.type == "cpu"
        self.builds = ArtifactBuilds(stores)
        self.version = 0  # bumped whenever a choice changes, so worker reports follow
        self.swappable: Any | None = None
        self.swappable_ref: str | None = None  # the newest graph considered
        self.swappable_in_use: str | None = None  # the graph serving (an older one when the newest was refused)
        self._description: dict[str, Any] = {}
        self.swappable_wins: dict[int, bool] = {}  # padded tokens of a timing pass -> swappable was faster
        self.timings: dict[str, dict[str, Any]] = {}  # what was measured, for describe()
        self.rejected: dict[str, str] = {}  # stack -> why it stays on the bank path
        self.uses: Counter[StackKey] = Counter()
        self.last_used: dict[StackKey, float] = {}
        self.session_bytes: dict[StackKey, int] = {}
        self.bank_passes = 0
        self._uses_since_decay = 0
        self._last_bank: Mapping[str, Tensor] | None = None
        self._candidates_at: int | None = None
        self._followed_at = -math.inf
        self._build_problem = self.builds.problem() if self.policy.build else "background builds are off"
        self.cache = TimingCache(stores.writable.root / AUTO_DIR, stores.writable.write_problem() is None)
        if self.on_cpu:
            self._adopt_swappable()

    # ------------------------------------------------------------------------------------------ bank path

    def hidden_states(
        self, input_ids: Tensor, attention_mask: Tensor, stack_index: Tensor, bank: Mapping[str, Tensor]
    ) -> Tensor:
        """One batched pass on whichever bank path measured faster for a pass of about this size."""
        self._last_bank = bank
        self.bank_passes += 1
        return self._bank_pass(input_ids, attention_mask, stack_index, bank)

    def _bank_pass(
        self, input_ids: Tensor, attention_mask: Tensor, stack_index: Tensor, bank: Mapping[str, Tensor]
    ) -> Tensor:
        if self.swappable is not None and self._swappable_for(input_ids.numel()):
            return self._swappable_states(input_ids, attention_mask, stack_index, bank)
        return TorchBackend.hidden_states(self, input_ids, attention_mask, stack_index, bank)

    def bank_path(self, tokens: int) -> str:
        """The name of the path a bank pass of `tokens` padded tokens takes now."""
        return SWAPPABLE_ARTIFACT if self.swappable is not None and self._swappable_for(tokens) else TORCH_BACKEND

    def _swappable_for(self, tokens: int) -> bool:
        nearest = min(self.swappable_wins, key=lambda t: abs(math.log(t) - math.log(max(tokens, 1))))
        return self.swappable_wins[nearest]

    def _swappable_states(
        self, input_ids: Tensor, attention_mask: Tensor, stack_index: Tensor, bank: Mapping[str, Tensor]
    ) -> Tensor:
        assert self.swappable is not None
        return swappable_states(self.swappable, input_ids, attention_mask, stack_index, bank)

    def _adopt_swappable(self) -> None:
        """Open the store's swappable graph for this base, if any, and time it against torch per pass size.

        Whatever goes wrong (a checksum, a layout, a session that does not start) leaves the path in use as it was
        and says why in `describe()`: a broken graph never stops a worker.
        """
        chosen = swappable_graph(self.stores, self.info)
        if chosen is None or str(chosen.ref) == self.swappable_ref:
            return
        self.swappable_ref = str(chosen.ref)
        try:
            self._try_swappable(chosen)
        except Exception as err:
            self.rejected[SWAPPABLE_ARTIFACT] = f"{chosen.ref} cannot be used: {err}"
            log.warning("auto backend: swappable graph %s not used (%s)", chosen.ref, err)
        self.version += 1

    def _try_swappable(self, chosen: Candidate) -> None:
        from langadapt.export.runtime import SwappableRuntime

        manifest, folder = self.stores.open_ref(chosen.ref, self.info.fingerprint)
        saved = dict(manifest.layout or {})
        layout = BankLayout(**{**saved, "lora_matrices": tuple(saved.get("lora_matrices", ()))}) if saved else None
        if layout != self.layout:
            self.rejected[SWAPPABLE_ARTIFACT] = f"{chosen.ref} was exported for another adapter layout"
            return
        runtime = SwappableRuntime(folder, device="cpu", threads=self.threads)
        key = f"swappable {chosen.ref} {machine_key(self.threads)}"
        wins = self._swappable_timings(runtime, key)
        if any(wins.values()):
            self.swappable, self.swappable_wins, self.swappable_in_use = runtime, wins, str(chosen.ref)
            self.rejected.pop(SWAPPABLE_ARTIFACT, None)
            log.info("auto backend: swappable graph %s used for %s", chosen.ref, wins)
        else:
            self.rejected[SWAPPABLE_ARTIFACT] = f"{chosen.ref} was slower than torch at every timed pass size"

    def _swappable_timings(self, runtime: Any, key: str) -> dict[int, bool]:
        """Per timed pass size, whether the swappable graph beats torch by MIN_GAIN (timings cached, else measured)."""
        cached = self.cache.get(key)
        if cached is None:
            cached = self._time_swappable(runtime)
            self.cache.put(key, cached)
        self.timings.update(cached["timings"])
        return {int(tokens): float(gain) >= MIN_GAIN for tokens, gain in cached["speed_up"].items()}

    def _time_swappable(self, runtime: Any) -> dict[str, Any]:
        """Torch and the swappable graph, each timed at every SHAPES pass size."""
        bank = self.new_bank(capacity=2).tensors()
        speed_up: dict[str, float] = {}
        timings: dict[str, Any] = {}
        for rows, tokens in SHAPES:
            ids, mask, index = timing_inputs(rows, tokens)
            torch_s = best_seconds(lambda: TorchBackend.hidden_states(self, ids, mask, index, bank))  # noqa: B023
            onnx_s = best_seconds(
                lambda: runtime.hidden_states(
                    ids.numpy(),  # noqa: B023
                    mask.numpy(),  # noqa: B023
                    index.numpy(),  # noqa: B023
                    {n: t.numpy() for n, t in bank.items()},
                )
            )
            speed_up[str(rows * tokens)] = torch_s / onnx_s
            timings[f"{SWAPPABLE_ARTIFACT} {rows}x{tokens}"] = {
                "torch_ms": round(torch_s * 1000, 2),
                "onnx_ms": round(onnx_s * 1000, 2),
                "speed_up": round(torch_s / onnx_s, 3),
            }
        return {"speed_up": speed_up, "timings": timings, "measured": time.time()}

    # ----------------------------------------------------------------------------------------- hot stacks

    def fused_for(self, key: StackKey) -> Any | None:
        """The stack's fused session when it is hot and measured faster; meanwhile, its build is started."""
        now = time.monotonic()
        with self._lock:
            if now - self._followed_at >= FOLLOW_S:
                self._followed_at = now
                self._follow_artifacts()
            self._count_use(key)
            self.last_used[key] = now
            self._close_idle(now)
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
            if not self.on_cpu or str(key) in self.rejected or not self._hot(key):
                return None
            found = self._index.get(self._signature(key))
            if found:
                return self._promote(key, min(found, key=lambda c: (_precision_rank(c), -c.ref.version)))
            self._build(key)
            return None

    def _time_fused(self, session: Any) -> float:
        """The fused session's speed-up over the bank path, geometric mean over small passes (a hot stack's own)."""
        bank = self._last_bank or self.new_bank(capacity=2).tensors()
        ratios = []
        for rows, tokens in SHAPES[:2]:
            ids, mask, index = timing_inputs(rows, tokens)
            bank_s = best_seconds(lambda: self._bank_pass(ids, mask, index, bank))  # noqa: B023
            fused_s = best_seconds(lambda: session.run(ids.numpy(), mask.numpy()))  # noqa: B023
            ratios.append(bank_s / fused_s)
        return float(np.exp(np.mean(np.log(ratios))))

    def _count_use(self, key: StackKey) -> None:
        """Count a use; every `8 × promote_after` uses all counts halve, so that old traffic fades."""
        self.uses[key] += 1
        self._uses_since_decay += 1
        if self._uses_since_decay >= 8 * self.policy.promote_after:
            self._uses_since_decay = 0
            self.uses = Counter({k: n // 2 for k, n in self.uses.items() if n > 1})

    def _hot(self, key: StackKey) -> bool:
        """Used `promote_after` times and in at least HOT_SHARE of the recent uses."""
        uses = self.uses[key]
        return uses >= self.policy.promote_after and uses >= HOT_SHARE * sum(self.uses.values())

    def _promote(self, key: StackKey, chosen: Candidate) -> Any | None:
        """The stack's fused session if it can be opened and times faster; otherwise None, with the reason kept."""
        try:
            return self._try_fused(key, chosen)
        except Exception as err:  # a broken graph or a failed timing: the bank path serves, and the reason is shown
            self.rejected[str(key)] = f"{chosen.ref} cannot be used: {err}"
            log.warning("auto backend: fused graph %s not used for %s (%s)", chosen.ref, key, err)
            return None

    def _try_fused(self, key: StackKey, chosen: Candidate) -> Any | None:
        size = int(chosen.manifest.extra.get("graph_bytes") or 0)
        if size > self.policy.fused_bytes:
            self.rejected[str(key)] = f"{chosen.ref} ({size >> 20} MiB) exceeds the fused budget"
            return None
        session = self._open(chosen)
        cache_key = f"fused {chosen.ref} vs {self.bank_path(SHAPES[0][0] * SHAPES[0][1])} {machine_key(self.threads)}"
        cached = self.cache.get(cache_key)
        if cached is None:
            cached = {"speed_up": self._time_fused(session), "measured": time.time()}
            self.cache.put(cache_key, cached)
        gain = float(cached["speed_up"])
        self.timings[str(key)] = {"speed_up": round(gain, 3), "artifact": str(chosen.ref)}
        self.version += 1
        if gain < MIN_GAIN:
            self.rejected[str(key)] = f"{chosen.ref} measured {gain:.2f}x the bank path (needs {MIN_GAIN}x)"
            return None
        while self._sessions and sum(self.session_bytes.values()) + size > self.policy.fused_bytes:
            old, _ = self._sessions.popitem(last=False)
            self.session_bytes.pop(old, None)
            self.uses[old] = 0  # it has to earn promotion again, or two hot stacks would evict each other per pass
        self._sessions[key] = session
        self.session_bytes[key] = size
        log.info("auto backend: %s serves fused from %s (%.2fx the bank path)", key, chosen.ref, gain)
        return session

    def _close_idle(self, now: float) -> None:
        for key in [k for k in self._sessions if now - self.last_used.get(k, now) > self.policy.idle_s]:
            del self._sessions[key]
            self.session_bytes.pop(key, None)
            self.uses[key] = 0  # it has to earn promotion again
            self.version += 1
            log.info("auto backend: %s idle for %.0f s, fused session closed", key, self.policy.idle_s)

    def _build(self, key: StackKey) -> None:
        if not self.policy.build:
            return
        language = key.language
        build = FusedBuild(
            key.task.id,
            key.task.version,
            language.id if language else None,
            language.version if language else None,
        )
        failed = self.builds.failed(build)
        if failed is not None:
            self.rejected[str(key)] = f"its fused build failed: {failed}"
        elif self.builds.start(build):
            self.version += 1

    def _follow_artifacts(self) -> None:
        """Collect ended builds; on a new store generation re-index fused graphs and look for a swappable one."""
        if self.policy.build:
            self._build_problem = self.builds.problem()
        for key, problem in self.builds.poll().items():
            self.version += 1
            if problem is not None:
                log.warning("auto backend: build %s failed (%s)", key, problem)
        self._follow_store()
        if self.on_cpu and self._candidates_at != self._generation:
            self._candidates_at = self._generation
            # a new store generation may hold a graph for a stack refused before: judge the fused ones again
            self.rejected = {k: v for k, v in self.rejected.items() if k == SWAPPABLE_ARTIFACT}
            self._adopt_swappable()
        if (
            self.on_cpu
            and self.policy.build
            and self.swappable_ref is None
            and self.bank_passes >= self.policy.promote_after
        ):
            self.builds.start(SwappableBuild(self.info.id))

    # ------------------------------------------------------------------------------------------- reports

    def describe(self) -> dict[str, Any]:
        """Every choice, and the timings behind it: for `/v1/adapters`.

        Never waits long: while the inference thread is timing or opening a graph (it holds the lock for seconds),
        the last description is returned, marked busy, so that the control thread's reports and admin work go on.
        """
        if not self._lock.acquire(timeout=0.05):
            return {**self._description, "busy": "timing or opening an ONNX graph"}
        try:
            self._description = {
                "backend": self.name,
                "bank_path": {
                    "swappable_graph": self.swappable_in_use if self.swappable is not None else None,
                    "swappable_for_tokens": {str(t): won for t, won in sorted(self.swappable_wins.items())},
                },
                "fused": {str(k): {"bytes": self.session_bytes.get(k, 0)} for k in self._sessions},
                "fused_budget_bytes": self.policy.fused_bytes,
                "promote_after_passes": self.policy.promote_after,
                "building": self.builds.running(),
                "build_problem": self._build_problem,
                "timings": dict(self.timings),
                "not_used": dict(self.rejected),
            }
            return self._description
        finally:
            self._lock.release()


def create_backend(
    name: str,
    info: BaseModelInfo,
    device: torch.device,
    threads: int | None,
    stores: LayeredStore,
    policy: AutoPolicy | None = None,
) -> Backend:
    """The backend called `name` for a resolved base model on `device`, reading exports from `stores`."""
    if name == AUTO_BACKEND:
        return AutoBackend(info, device, threads, stores, policy)
    if name == TorchBackend.name:
        return TorchBackend(info, device, threads)
    if name == SwappableBackend.name:
        return SwappableBackend(info, device, threads, stores)
    if name == FusedBackend.name:
        return FusedBackend(info, device, threads, stores)
    raise LangadaptError(f"unknown backend {name!r}", f"choose one of {', '.join(BACKENDS)}")
