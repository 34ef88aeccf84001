"""Exactly-once output: chunks committed atomically into `OUTPUT.partial/`, a checkpoint after each.

Layout of `OUTPUT.partial/`:

    lock                        flock'ed while a job writes here (a second job on the same output is refused)
    checkpoint.json             what is committed: chunks, the input position after them, counts, adapters used,
                                the job's options and the input's fingerprint
    chunk-00000000.jsonl        chunk k: the labelled rows k*N .. k*N+N-1, in the output format (no header)
    chunk-00000000.errors.jsonl that chunk's bad rows (only when it has some)

A chunk is written to a temporary file, fsync'ed and renamed into place; then the checkpoint is replaced the same
way. A kill between the two leaves a chunk the checkpoint does not count: resuming deletes it and labels those rows
again, so every row is in the output exactly once. When every chunk is committed the chunks are concatenated
into OUTPUT (and the errors file) through temporary files renamed into place, a summary is written beside the
output (`OUTPUT.summary.json`, which a rerun of the same job recognises as finished), and the partial directory is
removed: the checkpoint first, so a kill at any point of the finish is resumed by finishing again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from langadapt.errors import LangadaptError
from langadapt.label.formats import Position
from langadapt.paths import atomic_write_json, fsync_dir

CHECKPOINT = "checkpoint.json"
LOCK = "lock"
SAMPLE_BYTES = 1 << 20
FORMAT_VERSION = 1


def write_json(path: Path, data: Any) -> None:
    """Atomically and durably write JSON."""
    atomic_write_json(path, data, indent=1)


def input_fingerprint(path: Path) -> dict[str, Any]:
    """Size, modification time and sha256 of the first and last MiB: cheap, and changes when the input does."""
    stat = path.stat()
    with path.open("rb") as f:
        head = hashlib.sha256(f.read(SAMPLE_BYTES)).hexdigest()
        f.seek(max(SAMPLE_BYTES, stat.st_size - SAMPLE_BYTES))
        tail = hashlib.sha256(f.read(SAMPLE_BYTES)).hexdigest()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head, "tail_sha256": tail}


@dataclass
class Checkpoint:
    """What is committed in the partial directory."""

    job: dict[str, Any]
    input: dict[str, Any]
    position: Position
    chunks: int = 0
    done: bool = False
    counts: dict[str, Any] = field(default_factory=dict)
    adapters: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "job": self.job,
            "input": self.input,
            "position": self.position.as_dict(),
            "chunks": self.chunks,
            "done": self.done,
            "counts": self.counts,
            "adapters": self.adapters,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            job=data["job"],
            input=data["input"],
            position=Position.from_dict(data["position"]),
            chunks=int(data["chunks"]),
            done=bool(data["done"]),
            counts=dict(data["counts"]),
            adapters=dict(data["adapters"]),
            seconds=float(data.get("seconds", 0.0)),
        )


class Partial:
    """The partial-output directory of one output path."""

    def __init__(self, output: Path, suffix: str) -> None:
        self.output = output
        self.dir = output.with_name(output.name + ".partial")
        self.suffix = suffix
        self._lock: IO[bytes] | None = None

    def lock(self) -> None:
        """Create the directory and hold its lock (refused when another job holds it)."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        handle = (self.dir / LOCK).open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise LangadaptError(
                f"another `langadapt label` is writing {self.output}", "wait for it, or write to another -o path"
            ) from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self) -> Checkpoint | None:
        """The committed checkpoint, if any."""
        path = self.dir / CHECKPOINT
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format version {data.get('format_version')}")
            return Checkpoint.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise LangadaptError(
                f"{path} is not a checkpoint this version can resume ({exc})",
                f"delete {self.dir} (or rerun with --restart) to label from the start",
            ) from None

    def save(self, checkpoint: Checkpoint) -> None:
        write_json(self.dir / CHECKPOINT, checkpoint.as_dict())

    def chunk(self, index: int) -> Path:
        return self.dir / f"chunk-{index:08d}{self.suffix}"

    def errors(self, index: int) -> Path:
        return self.dir / f"chunk-{index:08d}.errors.jsonl"

    def clear(self) -> None:
        """Remove everything but the lock (a fresh start)."""
        for path in self.dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name != LOCK:
                path.unlink()
        fsync_dir(self.dir)

    def drop_uncommitted(self, committed: int) -> int:
        """Delete chunk files (and temporaries) the checkpoint does not count; how many were found."""
        dropped = 0
        for path in self.dir.iterdir():
            name = path.name
            if name.startswith(".") or (name.startswith("chunk-") and int(name[6:14]) >= committed):
                path.unlink()
                dropped += 1
        if dropped:
            fsync_dir(self.dir)
        return dropped

    def committed(self, chunks: int) -> Iterator[tuple[Path, Path]]:
        """(chunk, errors) paths of the committed chunks, in order (the errors file may not exist)."""
        for index in range(chunks):
            yield self.chunk(index), self.errors(index)

    def remove(self) -> None:
        """Remove the directory: the checkpoint first (a kill after it leaves nothing to resume)."""
        with contextlib.suppress(FileNotFoundError):
            (self.dir / CHECKPOINT).unlink()
            fsync_dir(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.unlock()
