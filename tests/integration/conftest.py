"""Integration support: a real `python -m langadapt.serve` process on a tiny base, started and stopped by fixtures."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


def _mount(*args: str) -> str | None:
    """Run `mount`; why it failed (not root, no permission in this container, no mount command), or None."""
    try:
        result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if result.returncode == 0 else (result.stderr.strip() or f"mount exited {result.returncode}")


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    """Real mounts for fault tests (a read-only bind, a small tmpfs), undone at teardown; skips where not allowed."""
    made = Mounts()
    try:
        yield made
    finally:
        for path in reversed(made.points):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


class Mounts:
    """Mount points made by one test, newest last."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def read_only(self, path: Path) -> None:
        """Make `path` read-only in place (a bind mount of itself, remounted read-only): even root cannot write."""
        if os.geteuid() != 0:
            pytest.skip("a read-only bind mount needs root (tests write as root here: chmod would not stop them)")
        problem = _mount("--bind", str(path), str(path))
        if problem:
            pytest.skip(f"cannot bind-mount {path} in this environment: {problem}")
        self.points.append(path)
        problem = _mount("-o", "remount,bind,ro", str(path))
        if problem:
            pytest.skip(f"cannot remount {path} read-only in this environment: {problem}")

    def writable(self, path: Path) -> None:
        """Undo `read_only(path)`."""
        subprocess.run(["umount", str(path)], check=True, capture_output=True, timeout=30)
        self.points.remove(path)

    def tmpfs(self, path: Path, size: str) -> None:
        """A fresh tmpfs of `size` (e.g. `1m`) at `path`: a small disk that fills up."""
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        path.mkdir(parents=True, exist_ok=True)
        problem = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        if problem:
            pytest.skip(f"cannot mount a tmpfs in this environment: {problem}")
        self.points.append(path)

    def resize(self, path: Path, size: str) -> None:
        """Give a tmpfs made by `tmpfs` another size (space freed)."""
        problem = _mount("-o", f"remount,size={size}", str(path))
        assert problem is None, problem
