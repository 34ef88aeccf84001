"""Where langadapt keeps its cache and its default adapter store, and how it writes files that must never be half."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from platformdirs import user_cache_dir

CACHE_ENV = "LANGADAPT_CACHE"
STORE_ENV = "LANGADAPT_STORE"


def cache_dir() -> Path:
    """The cache root: `$LANGADAPT_CACHE`, else the XDG user cache (`~/.cache/langadapt`)."""
    root = os.environ.get(CACHE_ENV) or user_cache_dir("langadapt", appauthor=False)
    return Path(root).expanduser()


def default_store_dir() -> Path:
    """The adapter store used when none is given: `$LANGADAPT_STORE`, else `<cache>/store`."""
    env = os.environ.get(STORE_ENV)
    return Path(env).expanduser() if env else cache_dir() / "store"


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new files, renames) to disk; a no-op where folders cannot be opened (Windows)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], *, durable: bool = True) -> Any:
    """Write `path` through a temporary sibling renamed into place, so readers never see half a file.

    `durable` also fsyncs the file and its folder (what survives a power cut); runtime state that dies with the
    process can skip that. Returns what `write` returned.
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temp.open("xb") as handle:
            result = write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        temp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    if durable:
        fsync_dir(path.parent)
    return result


def atomic_write_json(path: Path, data: Any, *, durable: bool = True, indent: int | None = None) -> None:
    """Atomically write `data` as UTF-8 JSON (anything JSON cannot encode as its `str`)."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=str)
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), durable=durable)
