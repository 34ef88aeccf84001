"""How admin requests reach every inference worker, and how workers report what they hold.

LitServe's workers are separate processes with one request queue per task, so an admin call handled by an
HTTP process cannot touch their caches directly. Instead, the server's runtime directory holds:

    control.json            the admin log: `{"seq": n, "pins": [...], "ops": [{"seq", "op", "id", "tasks"}]}`
    workers/<task>-<i>.json each worker's report: pid, applied seq, store generation, active stacks, refusals

An admin call appends an operation under a file lock (`ControlChannel.submit`) and waits until the workers it
concerns report that seq as applied. In each worker a `ControlFollower` thread polls the store generation (hot
loading) and the log every `interval` seconds, applies new operations to its engine, and rewrites its report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from langadapt.inference.engine import Engine
from langadapt.inference.errors import ServeError
from langadapt.models.store import pid_alive
from langadapt.paths import atomic_write_json

log = logging.getLogger(__name__)

CONTROL_FILE = "control.json"
WORKERS_DIR = "workers"
OPS = ("load", "unload", "pin", "unpin")
KEEP_OPS = 1000
HEARTBEAT_S = 1.0


@dataclass(frozen=True)
class ControlOp:
    """One admin operation: `load`, `unload`, `pin` or `unpin` of an adapter id, for some tasks (None: all)."""

    seq: int
    op: str
    id: str
    tasks: tuple[str, ...] | None = None

    def concerns(self, task: str) -> bool:
        """Whether a worker serving `task` applies it."""
        return self.tasks is None or task in self.tasks


@dataclass(frozen=True)
class ControlState:
    """The admin log as read: its last seq, the pinned ids, and the recent operations."""

    seq: int = 0
    pins: tuple[str, ...] = ()
    ops: tuple[ControlOp, ...] = field(default_factory=tuple)


class ControlChannel:
    """The admin log in the runtime directory; writers lock it, readers take the file as it is."""

    def __init__(self, runtime_dir: Path) -> None:
        self.runtime_dir = Path(runtime_dir)
        self.path = self.runtime_dir / CONTROL_FILE
        self.workers_dir = self.runtime_dir / WORKERS_DIR
        self.workers_dir.mkdir(parents=True, exist_ok=True)

    def read(self) -> ControlState:
        """The log as it is now (an empty one before the first operation)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return ControlState()
        ops = tuple(
            ControlOp(int(o["seq"]), str(o["op"]), str(o["id"]), tuple(o["tasks"]) if o.get("tasks") else None)
            for o in data.get("ops", [])
        )
        return ControlState(int(data.get("seq", 0)), tuple(data.get("pins", [])), ops)

    def signature(self) -> tuple[int, int] | None:
        """A cheap change marker (mtime, size) of the log file."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def submit(self, op: str, adapter_id: str, tasks: Sequence[str] | None = None) -> int:
        """Append an operation and update the pin set; return its seq."""
        if op not in OPS:
            raise ValueError(f"unknown control operation {op!r}; expected one of {OPS}")
        with FileLock(str(self.path) + ".lock", timeout=30):
            state = self.read()
            seq = state.seq + 1
            pins = set(state.pins)
            if op == "pin":
                pins.add(adapter_id)
            elif op in ("unpin", "unload"):
                pins.discard(adapter_id)
            ops = [*state.ops, ControlOp(seq, op, adapter_id, tuple(tasks) if tasks else None)][-KEEP_OPS:]
            atomic_write_json(
                self.path,
                {
                    "seq": seq,
                    "pins": sorted(pins),
                    "ops": [{"seq": o.seq, "op": o.op, "id": o.id, "tasks": list(o.tasks or [])} for o in ops],
                },
                durable=False,  # runtime state of this server's processes
            )
        return seq

    # ------------------------------------------------------------------------------------- reports

    def report_path(self, task: str, worker: int) -> Path:
        """Where one worker writes its report."""
        return self.workers_dir / f"{task}-{worker}.json"

    def write_report(self, task: str, worker: int, report: dict[str, Any]) -> None:
        """Replace one worker's report atomically."""
        atomic_write_json(self.report_path(task, worker), report, durable=False)  # dies with the server

    def reports(self) -> list[dict[str, Any]]:
        """The reports of live workers, by task then worker (reports of dead processes are skipped)."""
        found = []
        for path in sorted(self.workers_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                report = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(report, dict) and pid_alive(int(report.get("pid", -1))):
                    found.append(report)
        return sorted(found, key=lambda r: (r.get("task", ""), r.get("worker", 0)))

    def wait_applied(self, seq: int, tasks: Sequence[str], timeout: float) -> tuple[bool, list[dict[str, Any]]]:
        """Wait until every live worker of `tasks` reports `seq` applied; (all applied, their reports)."""
        deadline = time.monotonic() + timeout
        while True:
            reports = [r for r in self.reports() if r.get("task") in tasks]
            done = bool(reports) and all(int(r.get("applied", 0)) >= seq for r in reports)
            if done or time.monotonic() >= deadline:
                return done, reports
            time.sleep(0.02)


class ControlFollower:
    """In one worker: follow the store's generation and the admin log, apply changes, report status."""

    def __init__(
        self,
        engine: Engine,
        channel: ControlChannel,
        task: str,
        worker: int,
        *,
        interval: float,
        on_tick: Callable[[Engine], None] | None = None,
    ) -> None:
        self.engine = engine
        self.channel = channel
        self.task = task
        self.worker = worker
        self.interval = interval
        self.on_tick = on_tick
        self.applied = 0
        self.ready = False
        self._signature: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_report = 0.0
        self._last_marker: Any = None

    def start(self) -> None:
        """Apply the pins recorded so far, report, and start following in a daemon thread."""
        state = self.channel.read()
        for adapter_id in state.pins:
            self._apply(ControlOp(0, "pin", adapter_id))
        self.applied = state.seq
        self._signature = self.channel.signature()
        self.ready = True
        self.report(force=True)
        self._thread = threading.Thread(target=self._loop, name=f"langadapt-follow-{self.task}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following (the thread ends within one interval)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def step(self) -> bool:
        """One round: hot-load from the store, apply new admin operations, report; whether anything changed."""
        changed = False
        try:
            changed = self.engine.refresh()
        except Exception:  # a broken store must not kill the worker: keep serving what is loaded
            log.exception("following the adapter store failed; serving what is loaded")
        signature = self.channel.signature()
        if signature != self._signature:
            self._signature = signature
            state = self.channel.read()
            for op in state.ops:
                if op.seq > self.applied:
                    if op.concerns(self.task):
                        self._apply(op)
                    self.applied = op.seq
                    changed = True
            self.applied = max(self.applied, state.seq)
        self.report(force=changed)
        return changed

    def _apply(self, op: ControlOp) -> None:
        try:
            if op.op in ("load", "pin"):
                self.engine.refresh()  # a folder published just before the operation must be visible to it
            if op.op == "load":
                self.engine.load(op.id)
            elif op.op == "pin":
                self.engine.pin(op.id)
            elif op.op == "unpin":
                self.engine.unpin(op.id)
            elif op.op == "unload":
                self.engine.unload(op.id)
        except ServeError as err:  # e.g. an id this worker's store view does not have
            log.info("admin %s %s: %s", op.op, op.id, err.detail)
        except Exception:
            log.exception("admin %s %s failed", op.op, op.id)

    def report(self, *, force: bool = False) -> None:
        """Rewrite this worker's report (and call `on_tick`) when something changed, or once per heartbeat."""
        now = time.monotonic()
        marker = (self.engine.marker(), self.applied)
        if not force and marker == self._last_marker and now - self._last_report < HEARTBEAT_S:
            return
        self._last_marker, self._last_report = marker, now
        if self.on_tick is not None:
            self.on_tick(self.engine)
        status = self.engine.status()
        report = {
            "task": self.task,
            "worker": self.worker,
            "pid": os.getpid(),
            "ready": self.ready,
            "applied": self.applied,
            "base": self.engine.info.id,
            "backend": self.engine.backend.name,
            "device": str(self.engine.device),
            **status,
        }
        try:
            self.channel.write_report(self.task, self.worker, report)
        except OSError:
            log.exception("could not write the worker report")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:
                log.exception("control follower step failed")
