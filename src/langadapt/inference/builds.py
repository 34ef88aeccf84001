"""ONNX artifacts built in the background for `--backend auto`: one `langadapt export` child process each.

    builds = ArtifactBuilds(stores)
    builds.start(FusedBuild(task_id, task_version, lang_id, lang_version, "default"))   # returns at once
    builds.poll()                          # finished jobs: {key: None (published) or "why it failed"}

A build is the export a user would run by hand (`export_fused` / `export_swappable`, parity-verified before it
is published into the writable store), run at a lower priority in a child process so the serving worker keeps
its memory and its inference thread. Two workers asking for the same artifact build it once: the child holds an
exclusive lock on `<store>/.auto/<key>.lock` for the whole export and a second child finds it taken and exits.
A failed build leaves `<key>.failed` (the reason) and is not retried by any worker until that file is removed.
The parent polls; nothing here blocks a request.

`python -m langadapt.inference.builds '<json>'` is the child's entry point.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langadapt.models.store_view import LayeredStore

log = logging.getLogger(__name__)

AUTO_DIR = ".auto"  # in the writable store: locks, logs and failure notes of background builds
BUILD_NICE = 10  # the child's niceness: serving comes first
BUSY_EXIT = 3  # the child's exit status when another process holds the build's lock


@dataclass(frozen=True)
class FusedBuild:
    """A fused graph for one stack (exact adapter versions and sources), int8 first when it can be checked."""

    task_id: str
    task_version: int
    language_id: str | None = None
    language_version: int | None = None
    try_int8: bool = True

    @property
    def key(self) -> str:
        """A file-name-safe name of the build."""
        lang = f"{self.language_id}@{self.language_version}+" if self.language_id else ""
        return f"fused-{lang}{self.task_id}@{self.task_version}"


@dataclass(frozen=True)
class SwappableBuild:
    """The swappable graph of one base model."""

    base: str

    @property
    def key(self) -> str:
        """A file-name-safe name of the build."""
        return "swappable-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in self.base)


Build = FusedBuild | SwappableBuild


class ArtifactBuilds:
    """Background export children of one worker, and what became of them."""

    def __init__(self, stores: LayeredStore) -> None:
        self.stores = stores
        self.folder = stores.writable.root / AUTO_DIR
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._started: set[str] = set()

    def problem(self) -> str | None:
        """Why nothing can be built here (a read-only or unwritable store), or None."""
        return self.stores.writable.write_problem()

    def failed(self, build: Build) -> str | None:
        """The reason an earlier build of this artifact failed (any worker's), or None."""
        note = self.folder / f"{build.key}.failed"
        try:
            return note.read_text(encoding="utf-8").strip() or "failed"
        except OSError:
            return None

    def running(self) -> list[str]:
        """Keys of this worker's builds still running."""
        return sorted(self._running)

    def start(self, build: Build) -> bool:
        """Start the build's child once per worker; False when it was started before or the store cannot take it.

        Once is enough: a child that found the lock taken means another worker's child is building it.
        """
        if build.key in self._started or self.problem() is not None or self.failed(build) is not None:
            return False
        self._started.add(build.key)
        self.folder.mkdir(parents=True, exist_ok=True)
        spec = {"kind": type(build).__name__, **asdict(build), "store": str(self.stores.writable.root)}
        spec["defaults"] = str(self.stores.defaults.root) if self.stores.defaults is not None else None
        with (self.folder / f"{build.key}.log").open("ab") as out:
            self._running[build.key] = subprocess.Popen(
                [sys.executable, "-m", __name__, json.dumps(spec)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        log.info("building %s in the background (pid %d)", build.key, self._running[build.key].pid)
        return True

    def poll(self) -> dict[str, str | None]:
        """Builds that ended since the last poll: None when it published (or another worker's child did)."""
        ended: dict[str, str | None] = {}
        for key, child in list(self._running.items()):
            code = child.poll()
            if code is None:
                continue
            del self._running[key]
            ended[key] = None if code in (0, BUSY_EXIT) else f"export exited with status {code}"
        return ended


def _as_a_child() -> None:
    """Lower priority, default signal handling (a worker ignores SIGTERM and SIGINT: do not inherit that), and
    exit when the worker that started this build goes away, so that no export outlives its server."""
    os.nice(BUILD_NICE)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _published(view: Any, spec: dict[str, Any]) -> bool:
    """Whether the artifact the spec names is in the store already (another worker's build, or one by hand)."""
    from langadapt.inference.backends import swappable_graph
    from langadapt.models.base import resolve_base_model
    from langadapt.models.kinds import FUSED_ARTIFACT

    if spec["kind"] == SwappableBuild.__name__:
        return swappable_graph(view, resolve_base_model(spec["base"])) is not None
    wanted = {("task", spec["task_id"], spec["task_version"])}
    if spec["language_id"]:
        wanted.add(("language", spec["language_id"], spec["language_version"]))
    for candidate in view.candidates():
        if candidate.manifest.artifact == FUSED_ARTIFACT:
            rows = {(row.role, row.id, row.version) for row in candidate.manifest.sources or []}
            if rows == wanted:
                return True
    return False


def _export(spec: dict[str, Any]) -> None:
    """Run the export the spec names (parity-verified; published into the store only if every check passes)."""
    from langadapt.export.errors import ExportError
    from langadapt.models.store_view import store_view

    view = store_view(Path(spec["store"]), spec["defaults"])
    if _published(view, spec):
        print("already in the store: nothing to build", flush=True)
        return
    if spec["kind"] == SwappableBuild.__name__:
        from langadapt.export.swappable import export_swappable

        export_swappable(view, base=spec["base"])
        return
    from langadapt.export.cli_export import recorded_labelled_set
    from langadapt.export.fused import export_fused

    args = (view, spec["language_id"], spec["task_id"])
    versions = {"task_version": spec["task_version"], "lang_version": spec["language_version"]}
    task = view.get(spec["task_id"], spec["task_version"])
    labelled = recorded_labelled_set(None, task) if spec["try_int8"] else None
    if labelled is not None:  # int8 only where its quality gate can be checked on the adapter's own test file
        try:
            export_fused(*args, quantize="int8", labelled=labelled, **versions)
            return
        except ExportError as err:
            print(f"int8 refused ({err}); exporting fp32", flush=True)
    export_fused(*args, **versions)


def main(argv: list[str]) -> int:
    """Child entry point: take the build's lock, export, note a failure; exit BUSY_EXIT if the lock is taken."""
    _as_a_child()
    spec = json.loads(argv[0])
    build: Build = (
        SwappableBuild(spec["base"])
        if spec["kind"] == SwappableBuild.__name__
        else FusedBuild(
            spec["task_id"], spec["task_version"], spec["language_id"], spec["language_version"], spec["try_int8"]
        )
    )
    folder = Path(spec["store"]) / AUTO_DIR
    with (folder / f"{build.key}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{build.key}: another process builds it", flush=True)
            return BUSY_EXIT
        try:
            _export(spec)
        except Exception as err:  # noted for every worker, so that none retries a build that cannot succeed
            (folder / f"{build.key}.failed").write_text(f"{type(err).__name__}: {err}\n", encoding="utf-8")
            raise
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
