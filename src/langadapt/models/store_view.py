"""The one view of adapters every command and server sees: the writable store over the packaged defaults.

The packaged default adapter set (`src/langadapt/default_adapters/`) is a read-only layer under the writable
store (`--store`, `$LANGADAPT_STORE`, or `<cache>/store`). `store_view()` builds it, the same way for
`adapters list`, `export`, `eval`, `label`, `serve` and Ray. Every adapter version it shows carries its source
(`store` or `default`), so the two layers are never confused.

Names: a bare id (`yor_Latn-topic`) is the writable store's adapter when the store has that id (it shadows the
default of the same id), else the packaged default's. `default:yor_Latn-topic` always names the packaged
default and `store:yor_Latn-topic` the writable store's. Refs print the same way: `yor_Latn-topic@v1` is in the
writable store, `default:yor_Latn-topic@v1` is packaged (ids cannot hold ':', so the two never read alike).
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt.errors import AdapterNotFoundError, StoreError
from langadapt.models.manifest import Manifest, check_id
from langadapt.models.store import ADAPTERS_DIR, AdapterStore

log = logging.getLogger(__name__)

STORE, DEFAULTS = "store", "default"
SOURCES = (STORE, DEFAULTS)
PACKAGED = "packaged"


def split_name(name: str) -> tuple[str | None, str]:
    """`default:<id>` / `store:<id>` → (source, id); a bare id → (None, id): either layer, the store first."""
    source, sep, ident = name.partition(":")
    if sep and source in SOURCES:
        return source, ident
    return None, name


def qualified_name(ident: str, source: str) -> str:
    """How an adapter is named to people: bare in the writable store, `default:<id>` in the packaged defaults."""
    return ident if source == STORE else f"{source}:{ident}"


def packaged_defaults_dir() -> Path | None:
    """The default adapter store shipped inside the package, if this build has one."""
    root = Path(__file__).resolve().parent.parent / "default_adapters"
    return root if (root / "adapters").is_dir() else None


def defaults_root(defaults: str | Path | bool | None) -> Path | None:
    """The read-only layer's directory: `"packaged"` or True (the shipped set), a directory, or None/False (none)."""
    if defaults is None or defaults is False:
        return None
    if defaults is True or defaults == PACKAGED:
        return packaged_defaults_dir()
    return Path(defaults)


def source_in(store: AdapterStore | LayeredStore, name: str) -> str:
    """The layer `name` resolves to in a view; everything in a plain store is `store`."""
    return store.source_of(name) if isinstance(store, LayeredStore) else STORE


def address(store: AdapterStore | LayeredStore, ident: str, source: str) -> str:
    """How `store` reaches the adapter `ident` of a known layer: `<source>:<id>` in a view, the bare id in a store."""
    return f"{source}:{ident}" if isinstance(store, LayeredStore) else ident


def store_view(store: str | Path | None = None, defaults: str | Path | bool | None = PACKAGED) -> LayeredStore:
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
        return f"{self.name}@v{self.version}"

    @property
    def name(self) -> str:
        """The id as people see it: `yor_Latn-ner` in the writable store, `default:yor_Latn-ner` if packaged."""
        return qualified_name(self.id, self.source)

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        """The inverse of `str(ref)`: `default:yor_Latn-ner@v1` → AdapterRef("yor_Latn-ner", 1, "default")."""
        name, _, version = text.rpartition("@v")
        source, ident = split_name(name)
        return cls(ident, int(version), source or STORE)

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
        self._unreadable: dict[tuple[str, int], str] = {}

    def unreadable(self) -> dict[AdapterRef, str]:
        """Versions whose manifest cannot be read (malformed, wrong types), with the reason, as last listed."""
        return {AdapterRef(ident, version, self.source): why for (ident, version), why in self._unreadable.items()}

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
            self._unreadable.pop(stale, None)
        return found

    def _read(self, ident: str, version: int) -> Manifest | None:
        try:
            return self.store.get(ident, version)
        except StoreError as err:
            log.warning("refusing adapter %s v%d: %s", ident, version, err)
            self._unreadable[(ident, version)] = err.message
            return None


def _valid_id(name: str) -> bool:
    try:
        check_id(name)
    except ValueError:
        return False
    return True


class LayeredStore:
    """The writable store over the packaged defaults (read-only); ids in the writable store shadow defaults.

    Besides the candidates the server routes over, it reads like an `AdapterStore` (`get`, `path`, `open`,
    `list`), resolving each name through the layers, and writes (`publish`, `remove`) to the writable store only:
    export, evaluation and the `adapters` commands take it where they took a store.
    """

    def __init__(self, writable: AdapterStore, defaults: AdapterStore | None = None) -> None:
        self.writable = writable
        self.defaults = defaults
        self._writable_index = StoreIndex(writable, STORE)
        self._default_index = StoreIndex(defaults, DEFAULTS) if defaults is not None else None
        self._default_candidates: list[Candidate] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LayeredStore({self.writable.root}, defaults={self.defaults.root if self.defaults else None})"

    @property
    def root(self) -> Path:
        """The writable store's directory (where everything new goes)."""
        return self.writable.root

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

    def layers(self) -> builtins.list[tuple[str, AdapterStore]]:
        """(source, store) of each layer, the writable store first."""
        return [(STORE, self.writable)] + ([(DEFAULTS, self.defaults)] if self.defaults is not None else [])

    def open_ref(self, ref: AdapterRef, fingerprint: str | None) -> tuple[Manifest, Path]:
        """The verified manifest and folder of `ref` (checksums; base fingerprint when given)."""
        return self.store(ref.source).open(ref.id, ref.version, expected_fingerprint=fingerprint)

    def candidates(self) -> builtins.list[Candidate]:
        """Every readable version of every id, writable store first, ids there shadowing the defaults."""
        own, defaults = self._both()
        shadowed = {c.ref.id for c in own}
        return own + [c for c in defaults if c.ref.id not in shadowed]

    def shadowed(self) -> builtins.list[Candidate]:
        """The default versions hidden by a writable-store id of the same name (not served, still addressable)."""
        own, defaults = self._both()
        ids = {c.ref.id for c in own}
        return [c for c in defaults if c.ref.id in ids]

    def _both(self) -> tuple[builtins.list[Candidate], builtins.list[Candidate]]:
        with self._lock:
            own = self._writable_index.candidates()
            if self._default_candidates is None:
                self._default_candidates = self._default_index.candidates() if self._default_index else []
            return own, self._default_candidates

    def unreadable(self) -> dict[AdapterRef, str]:
        """Versions of either layer whose manifest cannot be read, with the reason (as of the last listing)."""
        with self._lock:
            found = self._writable_index.unreadable()
            if self._default_index is not None:
                found.update(self._default_index.unreadable())
            return found

    # ------------------------------------------------------------- reads and writes by name, like AdapterStore

    def source_of(self, name: str) -> str:
        """The layer a name resolves to: its prefix's, else the writable store when it holds the id, else defaults."""
        source, ident = split_name(name)
        if source is not None:
            return source
        if self.defaults is not None and not self.writable.versions(ident) and self.defaults.versions(ident):
            return DEFAULTS
        return STORE

    def locate(self, name: str) -> tuple[AdapterStore, str]:
        """The store holding a name and the bare id there; an unknown name raises, listing the names there are."""
        source, ident = self.source_of(name), split_name(name)[1]
        if source == DEFAULTS and self.defaults is None:
            raise StoreError(f"{name!r} names a packaged default, but this view has none", "leave out --no-defaults")
        layer = self.store(source)
        if not layer.versions(ident):
            raise self._not_found(name)
        return layer, ident

    def get(self, name: str, version: int | None = None) -> Manifest:
        """The manifest of `name` at `version` (latest when None)."""
        layer, ident = self.locate(name)
        return layer.get(ident, version)

    def path(self, name: str, version: int | None = None) -> Path:
        """The folder of `name` at `version` (latest when None)."""
        layer, ident = self.locate(name)
        return layer.path(ident, version)

    def open(
        self,
        name: str,
        version: int | None = None,
        *,
        expected_fingerprint: str | None = None,
        verify: bool = True,
    ) -> tuple[Manifest, Path]:
        """`AdapterStore.open` on the layer `name` resolves to."""
        layer, ident = self.locate(name)
        return layer.open(ident, version, expected_fingerprint=expected_fingerprint, verify=verify)

    def list(
        self, *, language: str | None = None, task: str | None = None, latest_only: bool = True
    ) -> builtins.list[Manifest]:
        """`AdapterStore.list` over the visible adapters: the writable store's, then the unshadowed defaults'."""
        own = self.writable.list(language=language, task=task, latest_only=latest_only)
        if self.defaults is None:
            return own
        shadowed = set(self.writable.ids())
        defaults = self.defaults.list(language=language, task=task, latest_only=latest_only)
        return own + [m for m in defaults if m.id not in shadowed]

    def publish(
        self, folder: Path | str, manifest: Manifest | dict[str, Any], *, version: int | None = None
    ) -> Manifest:
        """Publish to the writable store (`AdapterStore.publish`); warns when the id shadows a packaged default."""
        published = self.writable.publish(folder, manifest, version=version)
        warning = self.shadow_warning(published.id)
        if warning:
            log.warning("%s", warning)
        return published

    def remove(self, name: str, version: int | None = None) -> builtins.list[int]:
        """Remove from the writable store; a packaged default is read-only and refused."""
        source, ident = self.source_of(name), split_name(name)[1]
        if source == DEFAULTS:
            raise StoreError(
                f"{qualified_name(ident, DEFAULTS)} is a packaged default adapter: read-only",
                f"hide the packaged set with --no-defaults (serve, label), or publish your own {ident} to shadow it",
            )
        return self.writable.remove(ident, version)

    def shadow_warning(self, ident: str) -> str | None:
        """What to tell someone whose writable-store id hides packaged default versions of the same id, if it does."""
        hidden = [c for c in self._both()[1] if c.ref.id == ident] if self.writable.versions(ident) else []
        if not hidden:
            return None
        shown = ", ".join(str(c.ref) for c in hidden)
        labels = len(hidden[-1].manifest.labels)
        return (
            f"{ident} in the store {self.writable.root} shadows the packaged {shown} ({labels} labels): the store's "
            f"{ident} is served in its place. Publish under another id to keep both, or `langadapt adapters remove "
            f"{ident}` to restore the default."
        )

    def _not_found(self, name: str) -> AdapterNotFoundError:
        names = self.writable.ids() + ([f"{DEFAULTS}:{i}" for i in self.defaults.ids()] if self.defaults else [])
        where = f"store {self.writable.root}" + (" or the packaged defaults" if self.defaults else "")
        return AdapterNotFoundError(
            f"no adapter {name!r} in {where}", hint=f"available: {', '.join(names) or 'none'}; publish it first"
        )
