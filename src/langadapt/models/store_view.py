"""The one view of adapters every command and server sees: the writable store over the packaged defaults.

The packaged default adapter set (`src/langadapt/default_adapters/`) is a read-only layer under the writable
store (`--store`, `$LANGADAPT_STORE`, or `<cache>/store`). `store_view()` builds it, the same way for
`adapters list`, `export`, `eval`, `label`, `serve` and Ray. Every adapter version it shows carries its source
(`store` or `default`), so the two layers are never confused.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt.errors import StoreError
from langadapt.models.manifest import Manifest, check_id
from langadapt.models.store import ADAPTERS_DIR, AdapterStore

log = logging.getLogger(__name__)

STORE, DEFAULTS = "store", "default"
PACKAGED = "packaged"


def packaged_defaults_dir() -> Path | None:
    """The default adapter store shipped inside the package, if this build has one."""
    root = Path(__file__).resolve().parent.parent / "default_adapters"
    return root if (root / "adapters").is_dir() else None


def defaults_root(defaults: str | Path | None) -> Path | None:
    """The read-only layer's directory: `"packaged"` (the shipped set), a directory, or None (no layer)."""
    if defaults is None:
        return None
    if defaults == PACKAGED:
        return packaged_defaults_dir()
    return Path(defaults)


def store_view(store: str | Path | None = None, defaults: str | Path | None = PACKAGED) -> LayeredStore:
    """The layered view: the writable store (None: `$LANGADAPT_STORE` or `<cache>/store`) over the defaults."""
    root = defaults_root(defaults)
    return LayeredStore(AdapterStore(store), AdapterStore(root) if root is not None else None)


@dataclass(frozen=True, order=True)
class AdapterRef:
    """One stored adapter version, and which layer of the store view it lives in."""

    id: str
    version: int
    source: str = STORE

    def __str__(self) -> str:
        suffix = "" if self.source == STORE else f" ({self.source})"
        return f"{self.id}@v{self.version}{suffix}"

    def as_dict(self) -> dict[str, Any]:
        """JSON form for responses."""
        return {"id": self.id, "version": self.version, "source": self.source}


@dataclass(frozen=True)
class Candidate:
    """A stored adapter version visible through the layered view."""

    ref: AdapterRef
    manifest: Manifest


class StoreIndex:
    """The manifests of one store, read incrementally: version folders never change once published.

    Listing a store means reading every manifest; doing that on every generation change would cost the hot
    load its latency as the store grows. An id's versions are listed again only when its folder changed (its
    mtime moved, or is too recent to trust), and each version's manifest is read once.
    """

    RECENT_S = 2.0  # an id folder modified this recently is listed again (mtime granularity)

    def __init__(self, store: AdapterStore, source: str) -> None:
        self.store = store
        self.source = source
        self._versions: dict[str, tuple[int, list[int]]] = {}
        self._manifests: dict[tuple[str, int], Manifest | None] = {}

    def candidates(self) -> list[Candidate]:
        """Every readable version of every id, sorted by id then version."""
        base = self.store.root / ADAPTERS_DIR
        if not base.is_dir():
            return []
        now = time.time_ns()
        seen: dict[str, list[int]] = {}
        with os.scandir(base) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False) or not _valid_id(entry.name):
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                cached = self._versions.get(entry.name)
                if cached is None or cached[0] != mtime or now - mtime < self.RECENT_S * 1e9:
                    cached = (mtime, self.store.versions(entry.name))
                    self._versions[entry.name] = cached
                seen[entry.name] = cached[1]
        for gone in set(self._versions) - set(seen):
            del self._versions[gone]
        found: list[Candidate] = []
        live: set[tuple[str, int]] = set()
        for ident in sorted(seen):
            for version in seen[ident]:
                live.add((ident, version))
                if (ident, version) not in self._manifests:
                    self._manifests[(ident, version)] = self._read(ident, version)
                manifest = self._manifests[(ident, version)]
                if manifest is not None:
                    found.append(Candidate(AdapterRef(ident, version, self.source), manifest))
        for stale in set(self._manifests) - live:
            del self._manifests[stale]
        return found

    def _read(self, ident: str, version: int) -> Manifest | None:
        try:
            return self.store.get(ident, version)
        except StoreError as err:
            log.warning("skipping unreadable adapter %s v%d: %s", ident, version, err)
            return None


def _valid_id(name: str) -> bool:
    try:
        check_id(name)
    except ValueError:
        return False
    return True


class LayeredStore:
    """The writable store over the packaged defaults (read-only); ids in the writable store shadow defaults."""

    def __init__(self, writable: AdapterStore, defaults: AdapterStore | None = None) -> None:
        self.writable = writable
        self.defaults = defaults
        self._writable_index = StoreIndex(writable, STORE)
        self._default_candidates: list[Candidate] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LayeredStore({self.writable.root}, defaults={self.defaults.root if self.defaults else None})"

    def generation(self) -> int:
        """The writable store's generation counter (the defaults do not change while serving)."""
        return self.writable.generation()

    def store(self, source: str) -> AdapterStore:
        """The store behind a source name."""
        if source == STORE:
            return self.writable
        if source == DEFAULTS and self.defaults is not None:
            return self.defaults
        raise StoreError(f"no {source!r} layer in this store view", "sources are `store` and `default`")

    def open(self, ref: AdapterRef, fingerprint: str | None) -> tuple[Manifest, Path]:
        """The verified manifest and folder of `ref` (checksums; base fingerprint when given)."""
        return self.store(ref.source).open(ref.id, ref.version, expected_fingerprint=fingerprint)

    def candidates(self) -> list[Candidate]:
        """Every readable version of every id, writable store first, ids there shadowing the defaults."""
        with self._lock:
            own = self._writable_index.candidates()
            if self._default_candidates is None:
                self._default_candidates = StoreIndex(self.defaults, DEFAULTS).candidates() if self.defaults else []
        shadowed = {c.ref.id for c in own}
        return own + [c for c in self._default_candidates if c.ref.id not in shadowed]
