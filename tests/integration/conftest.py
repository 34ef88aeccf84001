"""Integration support: a real `python -m langadapt.serve` process on a tiny base, started and stopped by fixtures."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_S = 300  # a cold start on a loaded 2-core machine takes about a minute


@dataclass
class RunningServer:
    """A server process in its own process group, its address, log and cache."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    cache: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output."""
        return self.log.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = START_S) -> None:
        """Return once `/ready` answers 200; fail the test with the log if the server exits or takes too long."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left of it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def launch_server() -> Callable[..., RunningServer]:
    """`launch_server(base, store, tmp, *flags, env={...})`: start a server (one worker, one thread, no defaults).

    The environment is this one without `LANGADAPT_*` variables, plus `env`; the cache and runtime directory are
    under `tmp`. The caller waits for it (`wait_ready`) and stops it (`stop`).
    """

    def launch(base: Path, store: Path, tmp: Path, *flags: str, env: dict[str, str] | None = None) -> RunningServer:
        port = free_port()
        log = tmp / "server.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("LANGADAPT_")}
        environ.update({"LANGADAPT_CACHE": str(tmp / "cache"), "TOKENIZERS_PARALLELISM": "false", **(env or {})})
        command = [
            sys.executable,
            "-m",
            "langadapt.serve",
            *("--base", str(base), "--store", str(store), "--no-defaults", "--port", str(port)),
            *("--workers", "1", "--threads", "1", "--runtime-dir", str(tmp / "runtime")),
            *flags,
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=environ, start_new_session=True
            )
        return RunningServer(f"http://127.0.0.1:{port}", port, process, log, tmp / "cache")

    return launch
