"""Keeping the worker pool answering: a dead inference worker is replaced and its requests answered at once.

LitServe 0.2.19 shuts the whole server down when an inference worker dies. With `restart_workers=True` it restarts
the worker from a thread of the main process that polls every 2 s and fails the dead worker's requests in *that*
process's response buffer; but the requests wait in the HTTP processes' buffers, so they are never answered. A
worker that fails at every start is restarted forever, and one that dies in `setup` without an exception leaves
`verify_worker_status` waiting forever. `SupervisedServer` keeps LitServe's request path and replaces all that:

- the main process waits on the workers' process sentinels; a dead worker is marked not ready, recorded in shared
  memory (`WorkerDeaths`), replaced at once and counted (`langadapt_worker_restarts_total`);
- each HTTP process watches that record and answers the requests the dead worker had taken (LitServe's loops name
  each request's worker once `restart_workers` is on) with 503 `worker_lost` and Retry-After; when no worker is
  left, the requests still queued too. Until a worker is ready again the gateway answers 503 `not_ready`;
- workers are forked from a fork server that imported the inference stack once, not spawned into fresh
  interpreters, so a replacement only loads its model: on a loaded 2-core machine the imports (torch, transformers
  and what they pull in lazily, sklearn included) took 33 s of a replacement's start, the model 1 s;
- a worker that fails `start_attempts` times in a row before it is ready stops the server, and `run` raises
  `WorkerStartError` with the worker's own error (so `langadapt serve` exits non-zero saying why);
- shutdown drains: the gateways answer new requests (and `/ready`) 503 `shutting_down` with Retry-After and
  `Connection: close` while the requests in flight finish, and `LINGER_S` more (at most the drain timeout), so a
  client whose request just finished sees an answer to its next one rather than a reset connection; then the HTTP
  processes stop listening, and only then are the workers stopped. Workers ignore the SIGINT/SIGTERM sent to the
  whole process group (Ctrl-C, systemd) for that reason, and exit by themselves when the main process is gone.

Measured on the tiny test model, one worker, a 2-core machine at load 25 (`tests/integration/test_server_faults.py`):
after `kill -9` of the worker the requests in flight were answered 503 within 0.36 s and `/ready` was 200 again
within 1.6 s (spawning a fresh interpreter instead took 27-40 s there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import FastAPI, HTTPException
from litserve.loops import inference_worker
from litserve.utils import LitAPIStatus, WorkerSetupStatus

from langadapt.errors import LangadaptError
from langadapt.inference.errors import error_body
from langadapt.models.kinds import AUTO_BACKEND, FUSED_ARTIFACT, TORCH_BACKEND
from langadapt.paths import atomic_write
from langadapt.serve.gateway import RETRY_AFTER_S
from langadapt.serve.metrics import get_metrics, mark_process_dead
from langadapt.serve.shared_base import SHARED_BASE_ENV

log = logging.getLogger(__name__)

START_ATTEMPTS = 3  # starts in a row a worker may fail before the server gives up
READY_TTL_S = 1.0  # how long the gateway trusts a "some worker is ready" (asking the manager costs IPC)
WATCH_S = 0.05  # how often each HTTP process looks for worker deaths
POLL_S = 0.1  # the main process's longest wait between looks at its workers
LINGER_S = 0.5  # how long a stopping server with nothing in flight answers 503 before it stops listening
STARTS_DIR = "starts"  # under the runtime directory: why each worker's last start failed
PRELOAD = [  # what the fork server imports once for every worker it forks (transformers imports lazily)
    "langadapt.inference.engine",  # torch, transformers, the engine (serve.api, which imports this module, is not)
    "litserve",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.auto.modeling_auto",
    "transformers.modeling_utils",
    "adapters",
    "adapters.methods",
    "langadapt.serve.shared_base",  # last: the base model itself, when SHARED_BASE_ENV names one (CPU, torch)
]
START_HINT = "the worker's traceback is in the log above; check the base model (--base), the device and free memory"


class WorkerStartError(LangadaptError):
    """An inference worker failed to start again and again: the server stops, saying why."""


class WorkerDeaths:
    """How many times each worker died, in shared memory the forked HTTP processes read."""

    def __init__(self, workers: int) -> None:
        self._counts = mp.Array("i", workers)

    def record(self, worker: int) -> None:
        """Count one death of `worker`."""
        with self._counts.get_lock():
            self._counts[worker] += 1

    def snapshot(self) -> tuple[int, ...]:
        """The deaths per worker, now."""
        return tuple(self._counts[:])


def share_base_with_workers(lit_api: ls.LitAPI) -> None:
    """Name the base for the fork server to load once, when the workers run it in torch on the CPU.

    Only the fork server's first start reads it; a GPU worker moves its own copy to its device instead.
    """
    settings = getattr(lit_api, "settings", None)
    torch_base = (AUTO_BACKEND, TORCH_BACKEND, FUSED_ARTIFACT)  # the backends that load the torch base
    if settings is not None and not settings.on_gpu and settings.backend in torch_base:
        os.environ[SHARED_BASE_ENV] = settings.base


def worker_lost() -> HTTPException:
    """The answer to a request whose worker died while holding it."""
    return HTTPException(
        503,
        detail=error_body(
            "worker_lost",
            "the inference worker holding this request stopped; a new one is starting",
            "retry after the Retry-After delay (labelling is idempotent); GET /ready says when the server is ready",
        ),
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# ----------------------------------------------------------------------------------- in a worker


def guard_worker() -> None:
    """In an inference worker: leave group SIGINT/SIGTERM to the main process (it drains first); end with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="langadapt-parent", daemon=True).start()


def _exit_with(parent: Any) -> None:
    parent.join()  # returns when the main process is gone
    os._exit(0)


@contextlib.contextmanager
def start_failures_recorded(runtime_dir: Path | str) -> Iterator[None]:
    """In an inference worker's setup: write why it failed, for the main process to report."""
    path = Path(runtime_dir) / STARTS_DIR / f"worker-{os.environ.get('LITSERVE_WORKER_ID', '0')}.txt"
    try:
        yield
    except Exception as err:
        reason = err.message if isinstance(err, LangadaptError) else f"{type(err).__name__}: {err}"
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            text = " ".join(reason.split())[:1000]
            atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), durable=False)
        raise
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- the server


class SupervisedServer(ls.LitServer):
    """A `LitServer` whose dead workers are replaced, their requests answered, and whose shutdown drains."""

    def __init__(
        self,
        lit_api: ls.LitAPI,
        *,
        runtime_dir: Path | str,
        drain_timeout: float = 30.0,
        start_attempts: int = START_ATTEMPTS,
        in_flight: Any | None = None,
        **options: Any,
    ) -> None:
        # restart_workers makes the loops send a START naming each request's worker: the HTTP processes need it.
        super().__init__(lit_api, restart_workers=True, **options)
        self.uvicorn_graceful_timeout = drain_timeout  # each HTTP process drains for that long on SIGTERM
        self.drain_timeout = drain_timeout
        self.runtime_dir = Path(runtime_dir)
        self.start_attempts = start_attempts
        self.endpoint = lit_api.api_path.split("/")[-1]  # LitServe names the workers `<endpoint>_<i>`
        self.deaths = WorkerDeaths(len(self._inference_workers_config_for_api(lit_api.api_path)))
        self.in_flight = in_flight  # the gateways' count of admitted inference requests (shared memory)
        self._draining = mp.Value("b", 0)  # set when shutdown starts; the forked HTTP processes read it
        self.failure: str | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._failed_starts: dict[int, int] = {}
        self._due: dict[int, float] = {}
        self._ready_seen: tuple[float, int] | None = None

    # ---------------------------------------------------------------- readiness (HTTP processes)

    def draining(self) -> bool:
        """Whether the server is stopping (the gateway then answers 503 `shutting_down`)."""
        return bool(self._draining.value)

    def pool_ready(self) -> bool:
        """Whether some worker is ready to answer; a yes holds for a second, unless a worker died since."""
        status = getattr(self, "workers_setup_status", None)
        if status is None:  # not started through `run` (in-process tests): nothing to wait for
            return True
        now, deaths = time.monotonic(), sum(self.deaths.snapshot())
        seen = self._ready_seen
        if seen is not None and seen[1] == deaths and now - seen[0] < READY_TTL_S:
            return True
        try:
            answer = any(v == WorkerSetupStatus.READY for v in dict(status).values())
        except (OSError, EOFError):  # the manager is gone: the server is stopping
            answer = False
        self._ready_seen = (now, deaths) if answer else None
        return answer

    def answer_orphans(self, died: set[int], *, queued: bool) -> int:
        """Answer 503 to the waiting requests the `died` workers held (and with `queued`, every unclaimed one)."""
        answered = 0
        for item in list(self.response_buffer.values()):
            if item.event.is_set() or not (item.worker_id in died or (queued and item.worker_id is None)):
                continue
            item.response = (worker_lost(), LitAPIStatus.ERROR)
            item.event.set()
            answered += 1
        return answered

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """LitServe's lifespan, plus the watch for worker deaths in this HTTP process."""
        async with super().lifespan(app):
            watch = asyncio.get_running_loop().create_task(self._watch_deaths(), name="langadapt-worker-deaths")
            try:
                yield
            finally:
                watch.cancel()

    async def _watch_deaths(self) -> None:
        seen = self.deaths.snapshot()
        while True:
            await asyncio.sleep(WATCH_S)
            now = self.deaths.snapshot()
            if now == seen:
                continue
            died = {i for i, (before, after) in enumerate(zip(seen, now, strict=True)) if before != after}
            seen = now
            alone = not await asyncio.to_thread(self.pool_ready)
            answered = self.answer_orphans(died, queued=alone)
            if answered:
                log.warning("answered %d requests of dead worker(s) %s with 503", answered, sorted(died))

    # ------------------------------------------------------------------ supervision (main process)

    def launch_inference_worker(self, lit_api: ls.LitAPI) -> list[Any]:
        """Every worker of the pool, each as `launch_single_inference_worker` starts one."""
        count = len(self._inference_workers_config_for_api(lit_api.api_path))
        return [self.launch_single_inference_worker(lit_api, index) for index in range(count)]

    def launch_single_inference_worker(self, lit_api: ls.LitAPI, worker_id: int) -> Any:
        """LitServe's worker process, forked from the warm fork server rather than spawned."""
        if lit_api.spec:  # LitServe's spec set-up (none here) stays LitServe's
            return super().launch_single_inference_worker(lit_api, worker_id)
        device = self._inference_workers_config_for_api(lit_api.api_path)[worker_id]
        device = device[0] if len(device) == 1 else device
        self.workers_setup_status[f"{self.endpoint}_{worker_id}"] = WorkerSetupStatus.STARTING
        share_base_with_workers(lit_api)
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        process = context.Process(
            target=inference_worker,
            args=(
                lit_api,
                device,
                worker_id,
                self._get_request_queue(lit_api.api_path),
                self._transport,
                self.workers_setup_status,
                self._callback_runner,
                self.restart_workers,
            ),
            name="inference-worker",
        )
        process.start()
        return process

    def _init_manager(self, num_api_servers: int) -> Any:
        """LitServe's manager, forked ignoring SIGINT/SIGTERM: the queues must outlive a group signal to drain."""
        with _group_signals_ignored():
            return super()._init_manager(num_api_servers)

    def verify_worker_status(self) -> None:
        """Wait for a first ready worker, starting failed ones again; stop when one keeps failing."""
        try:
            while not any(v == WorkerSetupStatus.READY for v in dict(self.workers_setup_status).values()):
                self.supervise_once()
                if self.failure is not None:
                    raise WorkerStartError(self.failure, START_HINT)
                self._wait_for_a_death()
        except BaseException:  # LitServe calls this outside its clean-up: stop what was started (Ctrl-C too)
            self._stopping.set()
            self._stop_workers()
            with contextlib.suppress(Exception):
                self._transport.close(send_sentinel=False)
            with contextlib.suppress(Exception):
                self.transport_config.manager.shutdown()
            raise

    def _start_worker_monitoring(self, manager: Any, uvicorn_workers: dict[Any, Any]) -> None:
        """Supervise the workers from a thread of the main process (in place of LitServe's monitor)."""

        def supervise() -> None:
            while not self._stopping.is_set() and self.failure is None:
                try:
                    self.supervise_once()
                except Exception:  # e.g. the manager went away while stopping
                    if not self._stopping.is_set():
                        log.exception("worker supervision failed")
                self._wait_for_a_death()

        self._supervisor = threading.Thread(target=supervise, name="langadapt-supervisor", daemon=True)
        self._supervisor.start()

    def _wait_for_a_death(self) -> None:
        live = [p.sentinel for p in self.inference_workers if p.is_alive()]
        if live:
            wait(live, timeout=POLL_S)
        else:
            time.sleep(POLL_S)

    def supervise_once(self) -> None:
        """Start again the workers whose restart is due; handle each worker found dead."""
        status = self.workers_setup_status
        for index, process in enumerate(self.inference_workers):
            if self._stopping.is_set() or self.failure is not None:
                return
            if index in self._due:
                if time.monotonic() >= self._due[index]:
                    del self._due[index]
                    self._replace(index)
            elif not process.is_alive():
                self._on_death(index, process, status.get(f"{self.endpoint}_{index}"))

    def _on_death(self, index: int, process: Any, state: str | None) -> None:
        self.workers_setup_status[f"{self.endpoint}_{index}"] = WorkerSetupStatus.STARTING  # not ready, at once
        self.deaths.record(index)  # the HTTP processes answer the requests it held
        mark_process_dead(process.pid)
        how = _exit_text(process.exitcode)
        if state == WorkerSetupStatus.READY:
            self._failed_starts[index] = 0
            log.error("inference worker %d (pid %s) %s; starting a new one", index, process.pid, how)
            self._replace(index)
            return
        failures = self._failed_starts[index] = self._failed_starts.get(index, 0) + 1
        reason = self._start_failure(index) or f"it {how} before it was ready"
        if failures >= self.start_attempts:
            self.failure = f"inference worker {index} failed to start {failures} times in a row: {reason}"
            log.error("%s; stopping the server", self.failure)
            with contextlib.suppress(Exception):
                self._shutdown_event.set()
            return
        delay = min(0.5 * 2 ** (failures - 1), 5.0)
        log.error("inference worker %d failed to start (%s); trying again in %.1f s", index, reason, delay)
        self._due[index] = time.monotonic() + delay

    def _replace(self, index: int) -> None:
        if self._stopping.is_set():
            return
        self.inference_workers[index] = self.launch_single_inference_worker(self.lit_api, index)
        get_metrics().worker_restarts.inc()

    def _start_failure(self, index: int) -> str | None:
        path = self.runtime_dir / STARTS_DIR / f"worker-{index}.txt"
        try:
            reason = path.read_text(encoding="utf-8").strip() or None
            path.unlink()  # the next start's failure must not be mistaken for this one
        except OSError:
            return None
        return reason

    # ------------------------------------------------------------------------------------ stopping

    def run(self, *args: Any, **kwargs: Any) -> None:
        """LitServe's `run`; raises `WorkerStartError` when it stopped because a worker could not start."""
        super().run(*args, **kwargs)
        if self.failure is not None:
            raise WorkerStartError(self.failure, START_HINT)

    def _perform_graceful_shutdown(
        self, manager: Any, uvicorn_workers: dict[Any, Any], shutdown_reason: str = "normal"
    ) -> None:
        """Drain, then stop: the HTTP processes finish their requests while the workers still answer them."""
        self._stopping.set()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the drain short
                signal.signal(sig, signal.SIG_IGN)
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        log.info("draining: finishing the requests in flight (at most %.0f s)", self.drain_timeout)
        self._draining.value = 1
        deadline = time.monotonic() + self.drain_timeout
        quiet_since: float | None = None  # nothing in flight since then
        while (now := time.monotonic()) < deadline:
            if self._busy():
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= LINGER_S:
                break
            time.sleep(0.02)
        for process in uvicorn_workers.values():
            if process.is_alive() and hasattr(process, "terminate"):
                process.terminate()  # uvicorn: stop listening, finish what it holds, exit
        deadline += 5
        for process in uvicorn_workers.values():
            process.join(timeout=max(0.1, deadline - time.monotonic()))
            if process.is_alive() and hasattr(process, "kill"):
                log.warning("HTTP process %s did not drain within %.0f s; killing it", process.name, self.drain_timeout)
                process.kill()
        with contextlib.suppress(Exception):
            self._transport.close(send_sentinel=False)
        self._stop_workers()
        with contextlib.suppress(Exception):
            manager.shutdown()
        log.info("stopped (%s)", shutdown_reason)

    def _busy(self) -> bool:
        return self.in_flight is not None and self.in_flight.value > 0

    def _stop_workers(self) -> None:
        """Kill the inference workers (they ignore SIGTERM, and nothing is in flight any more)."""
        for process in self.inference_workers:
            if process.is_alive():
                process.kill()
        for process in self.inference_workers:
            process.join(timeout=5)


@contextlib.contextmanager
def _group_signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored while processes are forked here (they inherit it), restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
