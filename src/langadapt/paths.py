"""Where langadapt keeps its cache and its default adapter store."""

from __future__ import annotations

import os
from pathlib import Path

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
