"""The supervisor, in process: what happens when a worker dies, fails to start, or the group gets SIGTERM.

The real thing (a `kill -9` of a worker under load, a corrupt base, SIGTERM during load) is in
`tests/integration/test_server_faults.py`; here the decisions are checked with stand-in processes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import litserve as ls
import pytest
from fastapi import HTTPException
from litserve.server import RegularRequestHandler
from litserve.utils import LitAPIStatus, ResponseBufferItem, WorkerSetupStatus

from langadapt.errors import LangadaptError
from langadapt.serve.metrics import get_metrics
from langadapt.serve.supervisor import (
    SupervisedServer,
    WorkerStartError,
    guard_worker,
    start_failures_recorded,
)

READY, STARTING, ERROR = WorkerSetupStatus.READY, WorkerSetupStatus.STARTING, WorkerSetupStatus.ERROR


class EchoAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.ready = True

    def predict(self, x: Any) -> Any:
        return x


class StandIn:
    """A worker process as the supervisor sees it."""

    def __init__(self, pid: int, alive: bool = True, exitcode: int | None = None) -> None:
        self.pid, self.alive, self.exitcode, self.killed = pid, alive, exitcode, False
        self.sentinel = -1

    def is_alive(self) -> bool:
        return self.alive

    def kill(self) -> None:
        self.killed, self.alive = True, False

    def join(self, timeout: float | None = None) -> None:
        pass


class Event:
    def __init__(self) -> None:
        self.set_ = False

    def set(self) -> None:
        self.set_ = True


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SupervisedServer:
    """A two-worker server that was never run: its workers and their status are stand-ins."""
    built = SupervisedServer(
        EchoAPI(api_path="/v1/label"), runtime_dir=tmp_path, accelerator="cpu", workers_per_device=2
    )
    built.workers_setup_status = {"label_0": READY, "label_1": READY}
    built.inference_workers = [StandIn(100), StandIn(101)]
    built._shutdown_event = Event()
    launched: list[int] = []

    def launch(api: Any, index: int) -> StandIn:
        built.workers_setup_status[f"label_{index}"] = STARTING
        launched.append(index)
        return StandIn(200 + len(launched))

    monkeypatch.setattr(built, "launch_single_inference_worker", launch)
    built.launched = launched  # type: ignore[attr-defined]
    return built


def restarts() -> float:
    return get_metrics().registry.get_sample_value("langadapt_worker_restarts_total") or 0.0


def test_a_worker_that_dies_serving_is_replaced_at_once_and_counted(server: SupervisedServer) -> None:
    before = restarts()
    server.inference_workers[1] = StandIn(101, alive=False, exitcode=-signal.SIGKILL)
    server.supervise_once()
    assert server.launched == [1]  # type: ignore[attr-defined]
    assert server.deaths.snapshot() == (0, 1)  # the HTTP processes answer what it held
    assert server.workers_setup_status["label_1"] == STARTING  # not ready until the new one says so
    assert server.inference_workers[1].pid == 201 and server.failure is None
    assert restarts() == before + 1


def test_a_worker_failing_at_start_is_tried_again_then_the_server_stops_with_its_reason(
    server: SupervisedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITSERVE_WORKER_ID", "0")  # as LitServe sets it in each worker
    for attempt in range(1, 4):
        server.workers_setup_status["label_0"] = ERROR
        with pytest.raises(LangadaptError), start_failures_recorded(server.runtime_dir):
            raise LangadaptError(f"the tokenizer of /models/broken is not valid JSON (attempt {attempt})")
        server.inference_workers[0] = StandIn(100, alive=False, exitcode=0)
        server.supervise_once()
        if attempt < 3:
            assert server.failure is None and 0 in server._due  # tried again after a back-off, not at once
            server._due[0] = 0.0
            server.supervise_once()
    assert server.launched == [0, 0]  # type: ignore[attr-defined]
    assert server.failure is not None
    assert "failed to start 3 times in a row" in server.failure and "attempt 3" in server.failure
    assert server._shutdown_event.set_  # type: ignore[attr-defined]


def test_a_ready_start_resets_the_count_of_failed_starts(server: SupervisedServer) -> None:
    server.workers_setup_status["label_0"] = STARTING
    server.inference_workers[0] = StandIn(100, alive=False, exitcode=-signal.SIGSEGV)
    server.supervise_once()
    assert server._failed_starts[0] == 1
    server._due[0] = 0.0
    server.supervise_once()  # started again; it gets ready, serves, then dies
    server.workers_setup_status["label_0"] = READY
    server.inference_workers[0] = StandIn(300, alive=False, exitcode=-signal.SIGKILL)
    server.supervise_once()
    assert server._failed_starts[0] == 0 and server.failure is None


def test_the_first_start_raises_when_a_worker_keeps_failing(server: SupervisedServer) -> None:
    server.workers_setup_status = {"label_0": STARTING, "label_1": STARTING}
    server.start_attempts = 1
    server.inference_workers[0] = StandIn(100, alive=False, exitcode=-signal.SIGKILL)
    with pytest.raises(WorkerStartError, match="was killed by SIGKILL before it was ready") as caught:
        server.verify_worker_status()
    assert caught.value.hint
    assert server.inference_workers[1].killed  # nothing is left running


def worker(item_worker: int | None) -> ResponseBufferItem:
    return ResponseBufferItem(event=asyncio.Event(), worker_id=item_worker)


def test_requests_a_dead_worker_held_are_answered_503_with_retry_after(server: SupervisedServer) -> None:
    held, elsewhere, queued = worker(0), worker(1), worker(None)
    done = worker(0)
    done.event.set()
    server.response_buffer.update({"a": held, "b": elsewhere, "c": queued, "d": done})
    assert server.answer_orphans({0}, queued=False) == 1
    assert held.event.is_set() and not elsewhere.event.is_set() and not queued.event.is_set()
    response, status = held.response
    assert status == LitAPIStatus.ERROR
    with pytest.raises(HTTPException) as caught:  # what LitServe's handler does with it
        RegularRequestHandler._handle_error_response(response)
    assert caught.value.status_code == 503 and caught.value.headers == {"Retry-After": "1"}
    assert caught.value.detail["error"] == "worker_lost" and caught.value.detail["hint"]
    assert server.answer_orphans({0}, queued=True) == 1  # no worker left: the queued ones too
    assert queued.event.is_set() and not elsewhere.event.is_set()


def test_readiness_holds_a_second_unless_a_worker_died(server: SupervisedServer) -> None:
    assert server.pool_ready()
    server.workers_setup_status = {"label_0": STARTING, "label_1": STARTING}
    assert server.pool_ready()  # trusted for a second: asking the manager costs IPC
    server.deaths.record(0)
    assert not server.pool_ready()  # a death is seen at once
    server.workers_setup_status["label_1"] = READY
    assert server.pool_ready()


def test_start_failures_are_recorded_for_the_main_process_and_cleared_by_a_good_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITSERVE_WORKER_ID", "3")
    with pytest.raises(OSError), start_failures_recorded(tmp_path):
        raise OSError("no space left on device\nat line two")
    recorded = tmp_path / "starts" / "worker-3.txt"
    assert recorded.read_text() == "OSError: no space left on device at line two"
    with start_failures_recorded(tmp_path):
        pass
    assert not recorded.exists()


def _guarded_child(report: Any) -> None:
    guard_worker()
    report.put(os.getpid())
    time.sleep(60)


def _parent_of_guarded_child(report: Any) -> None:
    child = multiprocessing.get_context("fork").Process(target=_guarded_child, args=(report,))
    child.start()
    time.sleep(0.5)
    os._exit(0)  # the main process dies without stopping its worker


def test_a_worker_ignores_group_sigterm_and_ends_with_its_parent() -> None:
    context = multiprocessing.get_context("fork")
    report = context.Queue()
    parent = context.Process(target=_parent_of_guarded_child, args=(report,))
    parent.start()
    pid = report.get(timeout=30)
    os.kill(pid, signal.SIGTERM)  # what Ctrl-C or systemd sends the whole group
    parent.join(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), "the worker outlived its parent"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # an exited orphan may linger as a zombie until init reaps it
    return not stat.exists() or stat.read_text().split(")")[-1].split()[0] != "Z"
