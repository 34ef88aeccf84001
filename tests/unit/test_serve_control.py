"""The admin log workers follow, and the reports they write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from langadapt.inference.errors import ServeError
from langadapt.serve.control import ControlChannel, ControlFollower


class FakeEngine:
    """Records what the follower asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refreshes = 0
        self.info = SimpleNamespace(id="tiny")
        self.backend = SimpleNamespace(name="torch")
        self.device = "cpu"

    def refresh(self) -> bool:
        self.refreshes += 1
        return False

    def load(self, adapter_id: str) -> dict[str, Any]:
        self.calls.append(("load", adapter_id))
        if adapter_id == "missing":
            raise ServeError(404, "unknown_adapter", "no such adapter")
        return {}

    def pin(self, adapter_id: str) -> dict[str, Any]:
        self.calls.append(("pin", adapter_id))
        return {}

    def unpin(self, adapter_id: str) -> None:
        self.calls.append(("unpin", adapter_id))

    def unload(self, adapter_id: str) -> int:
        self.calls.append(("unload", adapter_id))
        return 0

    def marker(self) -> tuple[int, int, int]:
        return (len(self.calls), 0, 0)

    def status(self) -> dict[str, Any]:
        return {"generation": 3, "active": [], "registered": [], "refused": {}, "cache_bytes": 0, "budget_bytes": 1}


def test_the_log_numbers_operations_and_keeps_the_pin_set(tmp_path: Path) -> None:
    channel = ControlChannel(tmp_path)
    assert channel.read().seq == 0
    assert channel.submit("pin", "a", ["ner"]) == 1
    assert channel.submit("pin", "b") == 2
    assert channel.submit("unload", "a", ["ner"]) == 3
    state = channel.read()
    assert (state.seq, state.pins) == (3, ("b",))
    assert [(o.seq, o.op, o.id, o.tasks) for o in state.ops] == [
        (1, "pin", "a", ("ner",)),
        (2, "pin", "b", None),
        (3, "unload", "a", ("ner",)),
    ]
    with pytest.raises(ValueError, match="unknown control operation"):
        channel.submit("delete", "a")


def test_a_follower_restores_pins_applies_what_concerns_its_task_and_reports(tmp_path: Path) -> None:
    channel = ControlChannel(tmp_path)
    channel.submit("pin", "kept")
    engine = FakeEngine()
    follower = ControlFollower(engine, channel, "ner", 0, interval=0.02)  # type: ignore[arg-type]
    follower.start()
    follower.stop()  # drive it by hand below
    assert engine.calls == [("pin", "kept")] and follower.applied == 1
    channel.submit("load", "x", ["sentiment"])  # another task's: skipped, but counted as applied
    channel.submit("load", "missing", ["ner"])  # an error is logged, not raised
    channel.submit("unpin", "kept")
    assert follower.step() is True
    assert engine.calls == [("pin", "kept"), ("load", "missing"), ("unpin", "kept")]
    assert follower.applied == 4
    [report] = channel.reports()
    assert (report["task"], report["worker"], report["applied"], report["pid"]) == ("ner", 0, 4, os.getpid())
    assert report["ready"] is True and report["generation"] == 3
    done, reports = channel.wait_applied(4, ["ner"], timeout=0.1)
    assert done and len(reports) == 1
    done, _ = channel.wait_applied(5, ["ner"], timeout=0.05)
    assert not done
    assert follower.step() is False  # nothing new


def test_reports_of_dead_workers_are_ignored(tmp_path: Path) -> None:
    channel = ControlChannel(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    channel.write_report("ner", 1, {"task": "ner", "worker": 1, "pid": int(gone.stdout), "applied": 9})
    channel.write_report("ner", 0, {"task": "ner", "worker": 0, "pid": os.getpid(), "applied": 9})
    assert [r["worker"] for r in channel.reports()] == [0]
