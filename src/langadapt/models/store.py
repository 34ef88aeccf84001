"""The adapter store: one folder per adapter version, published atomically and verified on open.

Layout under the root::

    GENERATION                     integer, bumped on every publish and remove
    adapters/<id>/<version>/       manifest.json + safetensors weights + other files
    adapters/<id>/.highwater       highest version ever published, so removed versions are never reused
    .staging/                      folders being published or removed; readers ignore it
    .lock                          file lock held while versions are allocated or removed

Readers take no lock: a version folder appears by one `os.rename` of a complete, fsynced folder.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import logging
import os
import re
import reprlib
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout
from pydantic import ValidationError

from langadapt.errors import AdapterNotFoundError, FingerprintMismatchError, StoreError, StoreUnwritableError
from langadapt.models.kinds import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    HEAD_CONFIG,
    HEAD_WEIGHTS,
    LANGUAGE_TASK,
    MANIFEST_FILE,
)
from langadapt.models.manifest import Manifest, adapter_id, check_id, check_relative_path
from langadapt.paths import atomic_write, default_store_dir, fsync_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

GENERATION_FILE = "GENERATION"
ADAPTERS_DIR = "adapters"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
HIGHWATER_FILE = ".highwater"

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})
SAFETENSORS_HINT = (
    "re-save it as safetensors: safetensors.torch.save_file(state_dict, path), "
    "or model.save_adapter(path, name, use_safetensors=True)"
)
# Names of the adapter weights file, in the order `load_tensors` looks for them: the `adapters` library's
# `save_adapter(..., use_safetensors=True)` writes `adapter.safetensors`; PEFT writes `adapter_model.safetensors`.
WEIGHTS_FILES = (ADAPTER_WEIGHTS, "adapter_model.safetensors")
ADAPTERS_LIB_FILES = {  # safetensors file -> the pickle the `adapters` library writes by default instead
    ADAPTER_WEIGHTS: "pytorch_adapter.bin",
    HEAD_WEIGHTS: "pytorch_model_head.bin",
}

MANIFEST_HINT = (
    "fix the fields named above (`langadapt adapters show <id>` prints a valid manifest); "
    "nothing was published and the versions already in the store keep serving"
)
VERSION_NAME = re.compile(r"^[1-9][0-9]*$")
STALE_STAGING_S = 24 * 3600.0
LOCK_TIMEOUT_S = 120.0
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class VerifyProblem:
    """One thing wrong with one stored adapter version (file None: the folder or id itself)."""

    id: str
    version: int | None
    file: str | None
    reason: str

    def __str__(self) -> str:
        where = self.id + (f" v{self.version}" if self.version is not None else "")
        return f"{where}{f' {self.file}' if self.file else ''}: {self.reason}"


UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT})


class AdapterStore:
    """A directory of published adapter versions; safe for concurrent publishers (threads and processes)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_dir()

    def __repr__(self) -> str:
        return f"AdapterStore({str(self.root)!r})"

    # ----------------------------------------------------------------------------------------- publish

    def publish(
        self, folder: Path | str, manifest: Manifest | dict[str, Any], *, version: int | None = None
    ) -> Manifest:
        """Copy `folder` into the store as the next version of `manifest.id` (or `version`); return the manifest.

        The store fills `manifest.version` and `manifest.files`; a top-level `manifest.json` in `folder` is
        ignored (the `manifest` argument wins). A crash before the final rename leaves the store unchanged.
        """
        folder = Path(folder)
        meta = _coerce_manifest(manifest)
        check_id_or_raise(meta.id)
        if version is not None:
            check_version_or_raise(version)
        files = _scan_source(folder)
        with self._writing():
            self._ensure_layout()
            self.clean_staging()
            staging = self._new_staging("publish")
            try:
                meta = _with(meta, files=_stage_files(folder, files, staging))
                return self._commit(staging, meta, version)
            except BaseException:
                _discard(staging)
                raise

    def import_adapters_folder(
        self,
        folder: Path | str,
        *,
        language: str | None,
        task: str,
        kind: str,
        base_model: str,
        base_fingerprint: str,
        labels: tuple[str, ...] | list[str] = (),
        head_type: str | None = None,
        **fields: Any,
    ) -> Manifest:
        """Publish a folder written by the `adapters` library's `save_adapter(..., use_safetensors=True)`.

        Reads `adapter_config.json` into the manifest; labels and head type default to `head_config.json`'s.
        The id defaults to `adapter_id(language, task)`, plus the kind for language (`mlm`) adapters.
        """
        folder = Path(folder)
        adapter_config = _read_json(folder / ADAPTER_CONFIG, "an adapters-library folder")
        _require_safetensors(folder, ADAPTER_WEIGHTS)
        head_config: dict[str, Any] = {}
        if (folder / HEAD_CONFIG).is_file():
            head_config = _read_json(folder / HEAD_CONFIG, "an adapters-library head config")
            _require_safetensors(folder, HEAD_WEIGHTS)
        head_settings = head_config.get("config") or {}
        version = fields.pop("version", None)
        fields.setdefault("id", adapter_id(language, task, kind if task == LANGUAGE_TASK else None))
        manifest = {
            "language": language,
            "task": task,
            "kind": kind,
            "base_model": base_model,
            "base_fingerprint": base_fingerprint,
            "labels": list(labels) or _labels_from_head(head_settings),
            "head_type": head_type or head_settings.get("head_type"),
            "adapter_config": adapter_config,
            **fields,
        }
        return self.publish(folder, manifest, version=version)

    # -------------------------------------------------------------------------------------------- read

    def ids(self) -> list[str]:
        """Ids that have at least one version, sorted."""
        base = self.root / ADAPTERS_DIR
        if not base.is_dir():
            return []
        names = (entry.name for entry in base.iterdir() if _is_valid_id(entry.name))
        return sorted(name for name in names if self.versions(name))

    def versions(self, id: str) -> list[int]:
        """Published versions of `id`, ascending; empty when the id is unknown."""
        check_id_or_raise(id)
        id_dir = self.root / ADAPTERS_DIR / id
        if not id_dir.is_dir():
            return []
        return sorted(int(entry.name) for entry in id_dir.iterdir() if VERSION_NAME.match(entry.name))

    def get(self, id: str, version: int | None = None) -> Manifest:
        """The manifest of `id` at `version` (latest when None)."""
        return self._read_manifest(id, self._resolve_version(id, version))

    def path(self, id: str, version: int | None = None) -> Path:
        """The folder of `id` at `version` (latest when None); refuses links out of the store."""
        return self._version_dir(id, self._resolve_version(id, version))

    def list(self, *, language: str | None = None, task: str | None = None, latest_only: bool = True) -> list[Manifest]:
        """Manifests matching `language` and `task` (None: any), sorted by id then version.

        Unreadable versions are skipped with a warning (`verify()` reports them); with `latest_only` the
        newest readable version of each id stands for it.
        """
        found: builtins.list[Manifest] = []
        for id in self.ids():
            for version in sorted(self.versions(id), reverse=True):
                try:
                    meta = self._read_manifest(id, version)
                except StoreError as err:
                    log.warning("skipping unreadable adapter %s v%d: %s", id, version, err)
                    continue
                if (language is None or meta.language == language) and (task is None or meta.task == task):
                    found.append(meta)
                if latest_only:
                    break
        return sorted(found, key=lambda m: (m.id, m.version))

    def open(
        self,
        id: str,
        version: int | None = None,
        *,
        expected_fingerprint: str | None = None,
        verify: bool = True,
    ) -> tuple[Manifest, Path]:
        """The manifest and folder of an adapter, after checking it is safe and intact to load.

        Always refuses pickles, symlinks, special files and paths outside the store; checks the base-model
        fingerprint when given; re-checks every file's sha256 when `verify`.
        """
        meta = self.get(id, version)
        folder = self._version_dir(meta.id, meta.version)
        if expected_fingerprint is not None and meta.base_fingerprint != expected_fingerprint:
            raise FingerprintMismatchError(
                f"adapter {meta.id} v{meta.version} was trained on base model {meta.base_model!r} with "
                f"fingerprint {meta.base_fingerprint!r}, but the loaded base has fingerprint {expected_fingerprint!r}",
                hint=f"load the base model {meta.base_model!r} it was trained on, or retrain the adapter on this base",
            )
        problems = _inspect_folder(meta.id, meta.version, folder, meta, checksums=verify)
        if problems:
            raise StoreError(
                f"adapter {meta.id} v{meta.version} failed its checks: " + "; ".join(str(p) for p in problems),
                hint=f"remove this version (store.remove({meta.id!r}, {meta.version})) and publish it again from "
                "its source; pickles must be re-saved as safetensors",
            )
        return meta, folder

    def load_tensors(
        self,
        id: str,
        version: int | None = None,
        *,
        file: str | None = None,
        expected_fingerprint: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tensors of one verified safetensors file (the adapter weights when `file` is None); never unpickles."""
        meta, folder = self.open(id, version, expected_fingerprint=expected_fingerprint)
        name = file if file is not None else _weights_file(meta)
        if name not in meta.files:
            raise StoreError(
                f"adapter {meta.id} v{meta.version} has no file {name!r}",
                hint=f"pick one of {sorted(meta.files)}",
            )
        if not name.endswith(".safetensors"):
            raise StoreError(f"{name!r} is not a safetensors file", hint="load_tensors reads .safetensors files only")
        from safetensors.torch import load_file

        return load_file(folder / name)

    def write_problem(self) -> str | None:
        """Why nothing can be published into the store now (read-only, no permission, full), or None.

        Looks at the nearest existing folder of the root; a store that cannot be written still serves what it has.
        """
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            info = os.statvfs(folder)
        except OSError as err:
            return f"{folder} cannot be examined ({err.strerror})"
        if info.f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only file system"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable by this user"
        if info.f_bavail == 0 or (info.f_favail == 0 and info.f_files > 0):
            return f"no space left on the device of {folder}"
        return None

    def generation(self) -> int:
        """The store's generation counter: 0 for a new store, +1 on every publish and remove."""
        path = self.root / GENERATION_FILE
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            return 0
        try:
            return int(text.strip())
        except ValueError:
            raise StoreError(
                f"{path} holds {text[:40]!r}, not an integer",
                hint="write the highest generation readers may have seen (or 1) into it",
            ) from None

    # ---------------------------------------------------------------------------------- verify, remove

    def verify(self, id: str | None = None) -> builtins.list[VerifyProblem]:
        """Every problem in every version of `id` (all ids when None): checksums, missing, extra, unsafe files."""
        if id is not None:
            check_id_or_raise(id)
            if not self.versions(id):
                raise self._not_found(id)
            ids, problems = [id], builtins.list[VerifyProblem]()
        else:
            ids, problems = self._stored_ids(), self._stray_entries()
        for one in ids:
            for version in self.versions(one):
                problems.extend(self._verify_version(one, version))
        return problems

    def remove(self, id: str, version: int | None = None) -> builtins.list[int]:
        """Remove one version of `id` (all when None) atomically; return the versions removed."""
        check_id_or_raise(id)
        if version is not None:
            check_version_or_raise(version)
        self._ensure_layout()
        self.clean_staging()
        removed: builtins.list[Path] = []
        with self._lock():
            existing = self.versions(id)
            if not existing or (version is not None and version not in existing):
                raise self._not_found(id) if not existing else self._no_version(id, version, existing)
            targets = [version] if version is not None else existing
            for target in targets:
                removed.append(self._new_staging("remove"))
                (self.root / ADAPTERS_DIR / id / str(target)).rename(removed[-1])
            fsync_dir(self.root / ADAPTERS_DIR / id)
            self._write_highwater(id, max(existing))
            self._bump_generation()
        for leftover in removed:
            _discard(leftover)
        return targets

    def clean_staging(self) -> int:
        """Delete staging folders left by publishers or removers that died; return how many."""
        staging = self.root / STAGING_DIR
        if not staging.is_dir():
            return 0
        stale = [entry for entry in staging.iterdir() if _is_stale(entry)]
        for entry in stale:
            log.info("removing stale staging folder %s", entry)
            _discard(entry)
        return len(stale)

    # -------------------------------------------------------------------------------------- internals

    def _commit(self, staging: Path, meta: Manifest, version: int | None) -> Manifest:
        """Under the lock: allocate the version, write the manifest, rename staging into place, bump."""
        id_dir = self.root / ADAPTERS_DIR / meta.id
        with self._lock():
            existing = self.versions(meta.id)
            if version is None:
                version = max([*existing, self._highwater(meta.id)]) + 1
            elif version in existing:
                raise StoreError(
                    f"adapter {meta.id} version {version} already exists",
                    hint="omit version= to publish as the next free version, or remove that version first",
                )
            meta = _with(meta, version=version)
            _write_synced(staging / MANIFEST_FILE, meta.model_dump_json(indent=2).encode())
            fsync_dir(staging)
            if not id_dir.is_dir():
                id_dir.mkdir()
                fsync_dir(id_dir.parent)
            staging.rename(id_dir / str(version))
            fsync_dir(id_dir)
            self._write_highwater(meta.id, max(version, self._highwater(meta.id)))
            self._bump_generation()
        return meta

    def _resolve_version(self, id: str, version: int | None) -> int:
        """The requested version, or the latest; AdapterNotFoundError listing what exists otherwise."""
        check_id_or_raise(id)
        if version is not None:
            check_version_or_raise(version)
        existing = self.versions(id)
        if not existing:
            raise self._not_found(id)
        if version is None:
            return existing[-1]
        if version not in existing:
            raise self._no_version(id, version, existing)
        return version

    def _version_dir(self, id: str, version: int) -> Path:
        """The folder of a version, refusing one that is a link or resolves outside the store."""
        folder = self.root / ADAPTERS_DIR / id / str(version)
        reason = self._escape_reason(folder)
        if reason:
            raise StoreError(
                f"{folder} {reason}", hint="the store holds real folders only: remove the link and publish again"
            )
        return folder

    def _escape_reason(self, folder: Path) -> str | None:
        """Why `folder` (a version folder) is not safely inside the store, or None."""
        for part in (folder.parent, folder):
            if part.is_symlink():
                return f"is a symlink ({part.name} -> {part.readlink()})"
        base = os.path.realpath(self.root / ADAPTERS_DIR)
        if os.path.commonpath([base, os.path.realpath(folder)]) != base:
            return "resolves outside the store"
        return None

    def _read_manifest(self, id: str, version: int) -> Manifest:
        """The parsed manifest of a version, checked against the folder it lives in."""
        path = self._version_dir(id, version) / MANIFEST_FILE
        hint = f"run store.verify({id!r}); remove this version and publish it again"
        if path.is_symlink():
            raise StoreError(f"{path} is a symlink", hint=hint)
        try:
            meta = Manifest.model_validate(json.loads(path.read_bytes()))  # messages as `read_manifest` gives
        except FileNotFoundError:
            if not path.parent.exists():
                raise self._no_version(id, version, self.versions(id)) from None
            raise StoreError(f"{path} is missing", hint=hint) from None
        except ValidationError as err:
            raise StoreError(f"{path} is unreadable: {manifest_problems(err)}", hint=hint) from None
        except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
            raise StoreError(f"{path} is unreadable: {_one_line(err)}", hint=hint) from None
        if meta.id != id or meta.version != version:
            raise StoreError(f"{path} describes {meta.id} v{meta.version}, not {id} v{version}", hint=hint)
        return meta

    def _verify_version(self, id: str, version: int) -> builtins.list[VerifyProblem]:
        """Every problem with one version folder."""
        reason = self._escape_reason(self.root / ADAPTERS_DIR / id / str(version))
        if reason:
            return [VerifyProblem(id, version, None, f"version folder {reason}")]
        try:
            meta: Manifest | None = self._read_manifest(id, version)
        except StoreError as err:
            meta = None
            problems = [VerifyProblem(id, version, MANIFEST_FILE, err.message)]
        else:
            problems = []
        folder = self.root / ADAPTERS_DIR / id / str(version)
        return problems + _inspect_folder(id, version, folder, meta, checksums=True)

    def _stored_ids(self) -> builtins.list[str]:
        """Valid ids with a folder under adapters/, with or without versions."""
        base = self.root / ADAPTERS_DIR
        return sorted(e.name for e in base.iterdir() if _is_valid_id(e.name)) if base.is_dir() else []

    def _stray_entries(self) -> builtins.list[VerifyProblem]:
        """Entries under adapters/ that are neither id folders nor version folders."""
        base = self.root / ADAPTERS_DIR
        if not base.is_dir():
            return []
        problems = []
        for entry in sorted(base.iterdir()):
            if not _is_valid_id(entry.name) or entry.is_symlink() or not entry.is_dir():
                problems.append(VerifyProblem(entry.name, None, None, "not an adapter id folder"))
                continue
            for child in sorted(entry.iterdir()):
                if child.name != HIGHWATER_FILE and not VERSION_NAME.match(child.name):
                    problems.append(VerifyProblem(entry.name, None, child.name, "not a version folder"))
        return problems

    def _highwater(self, id: str) -> int:
        """The highest version ever published for `id` (0 if unknown)."""
        try:
            return int((self.root / ADAPTERS_DIR / id / HIGHWATER_FILE).read_text(encoding="ascii"))
        except (OSError, ValueError):
            return 0

    def _write_highwater(self, id: str, version: int) -> None:
        """Record the highest version published for `id` (caller holds the lock)."""
        _atomic_write_text(self.root / ADAPTERS_DIR / id / HIGHWATER_FILE, f"{version}\n")

    def _bump_generation(self) -> None:
        """Add one to GENERATION, atomically (caller holds the lock)."""
        _atomic_write_text(self.root / GENERATION_FILE, f"{self.generation() + 1}\n")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a store that cannot be written (read-only, no permission, full) into a StoreError saying so."""
        try:
            yield
        except OSError as err:
            where = Path(err.filename) if isinstance(err.filename, str) else None
            if err.errno not in UNWRITABLE or where is None or not where.is_relative_to(self.root):
                raise
            raise StoreUnwritableError(
                f"the adapter store {self.root} cannot be written ({err.strerror})",
                hint="the versions already published keep serving; make the store writable (or free space) "
                "and publish again",
            ) from None

    def _ensure_layout(self) -> None:
        """Create the root, adapters/ and .staging/ folders if missing."""
        for sub in (ADAPTERS_DIR, STAGING_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _new_staging(self, tag: str) -> Path:
        """A fresh staging path named `<uuid>_<tag>_<pid>_<host>`, so cleaners can tell whose it is."""
        return self.root / STAGING_DIR / f"{uuid.uuid4().hex}_{tag}_{os.getpid()}_{socket.gethostname()}"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Hold the store's file lock (a fresh lock object each time, so threads exclude each other too)."""
        path = self.root / LOCK_FILE
        lock = FileLock(path, timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            raise StoreError(
                f"could not lock {path} within {LOCK_TIMEOUT_S:.0f}s",
                hint="another publisher holds it; retry, or delete the lock file if no langadapt process runs",
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _not_found(self, id: str) -> AdapterNotFoundError:
        """The error for an unknown id, listing the ids that exist."""
        available = ", ".join(self.ids()) or "none"
        return AdapterNotFoundError(
            f"no adapter {id!r} in store {self.root}", hint=f"available ids: {available}; publish it first"
        )

    @staticmethod
    def _no_version(id: str, version: int | None, existing: builtins.list[int]) -> AdapterNotFoundError:
        """The error for an unknown version, listing the versions that exist."""
        return AdapterNotFoundError(
            f"adapter {id!r} has no version {version}", hint=f"available versions: {existing or 'none'}"
        )


# --------------------------------------------------------------------------------------- validation


def check_id_or_raise(id: str) -> str:
    """Return `id` if it is a safe adapter id, else raise StoreError (before touching disk)."""
    try:
        return check_id(id)
    except ValueError as err:
        raise StoreError(
            str(err), hint="ids look like `yor_Latn-ner`; see langadapt.models.manifest.adapter_id"
        ) from None


def check_version_or_raise(version: int) -> int:
    """Return `version` if it is an integer >= 1, else raise StoreError."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StoreError(f"invalid version {version!r}", hint="versions are integers >= 1; omit it for the latest")
    return version


def _is_valid_id(name: str) -> bool:
    """Whether `name` is a valid adapter id."""
    try:
        check_id(name)
    except ValueError:
        return False
    return True


def manifest_problems(err: ValidationError) -> str:
    """Every field a manifest has wrong, on one line: `labels: Input should be a valid list (got 'positive')`."""
    problems = []
    for error in err.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "manifest"
        given = "" if error["type"] == "missing" else f" (got {reprlib.repr(error.get('input'))})"
        problems.append(f"{where}: {error['msg']}{given}")
    return "; ".join(problems)


def read_manifest(source: Path | dict[str, Any]) -> Manifest:
    """A manifest from a `manifest.json` file or its parsed JSON, checked; anything wrong is a StoreError naming it.

    `files` and `version` are left out: the store sets them when it publishes.
    """
    where = f"{source}" if isinstance(source, Path) else "the manifest"
    if isinstance(source, Path):
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise StoreError(f"{where} cannot be read as JSON: {_one_line(err)}", hint=MANIFEST_HINT) from None
    else:
        data = source
    if not isinstance(data, dict):
        raise StoreError(f"{where} holds {type(data).__name__}, not a JSON object", hint=MANIFEST_HINT)
    return _coerce_manifest({k: v for k, v in data.items() if k not in ("files", "version")}, where)


def _coerce_manifest(manifest: Manifest | dict[str, Any], where: str = "the manifest") -> Manifest:
    """A validated copy of the caller's manifest; validation errors become StoreError naming every bad field."""
    try:
        data = manifest.model_dump() if isinstance(manifest, Manifest) else dict(manifest)
        return Manifest.model_validate(data)
    except ValidationError as err:
        raise StoreError(f"{where} has invalid fields: {manifest_problems(err)}", hint=MANIFEST_HINT) from None


def _with(meta: Manifest, **changes: Any) -> Manifest:
    """A validated copy of `meta` with some fields changed."""
    return Manifest.model_validate({**meta.model_dump(), **changes})


def _refuse_pickle(rel: str) -> None:
    """Refuse a file whose name says it is a pickle."""
    suffix = Path(rel).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise StoreError(f"{rel!r} is a pickle file ({suffix}); the store never holds pickles", hint=SAFETENSORS_HINT)


def _scan_source(folder: Path) -> list[str]:
    """Relative paths of the regular files to publish; refuses links, special files, pickles and odd names."""
    if folder.is_symlink() or not folder.is_dir():
        raise StoreError(f"{folder} is not a folder", hint="publish a folder holding the adapter's files")
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(folder).as_posix()
            try:
                check_relative_path(rel)
            except ValueError as err:
                raise StoreError(str(err), hint="rename the file") from None
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise StoreError(
                    f"{rel!r} in {folder} is a symlink (-> {full.readlink()})",
                    hint="copy the real file into the folder instead of linking it",
                )
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise StoreError(f"{rel!r} in {folder} is not a regular file", hint="publish regular files only")
            _refuse_pickle(rel)
            if rel != MANIFEST_FILE:
                files.append(rel)
    if not files:
        raise StoreError(f"{folder} holds no files to publish", hint="save the adapter's weights into it first")
    return sorted(files)


def _require_safetensors(folder: Path, name: str) -> None:
    """Refuse an adapters-library folder that lacks `name`, naming the pickle it holds instead."""
    if (folder / name).is_file():
        return
    pickle_name = ADAPTERS_LIB_FILES[name]
    if (folder / pickle_name).exists():
        raise StoreError(
            f"{folder} holds {pickle_name}, a pickle file, instead of {name}",
            hint="re-save it with model.save_adapter(path, name, use_safetensors=True)",
        )
    raise StoreError(
        f"{folder} has no {name}",
        hint="point at a folder written by model.save_adapter(path, name, use_safetensors=True)",
    )


def _labels_from_head(head_settings: dict[str, Any]) -> list[str]:
    """Label names in output order from an adapters-library head config's `label2id`."""
    label2id = head_settings.get("label2id") or {}
    return [label for label, _ in sorted(label2id.items(), key=lambda item: item[1])]


def _weights_file(meta: Manifest) -> str:
    """The adapter weights file of a manifest: a known name, else its only safetensors file."""
    for name in WEIGHTS_FILES:
        if name in meta.files:
            return name
    candidates = [name for name in meta.files if name.endswith(".safetensors")]
    if len(candidates) == 1:
        return candidates[0]
    raise StoreError(
        f"adapter {meta.id} v{meta.version} has no single adapter weights file",
        hint=f"pass file= one of {sorted(candidates) or sorted(meta.files)}",
    )


def _inspect_folder(
    id: str, version: int, folder: Path, meta: Manifest | None, *, checksums: bool
) -> list[VerifyProblem]:
    """Unsafe entries, plus (given a manifest) missing, unlisted and, with `checksums`, corrupted files."""
    problems: list[VerifyProblem] = []
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(folder).as_posix()
            reason = _unsafe_reason(full, rel)
            if reason:
                problems.append(VerifyProblem(id, version, rel, reason))
            elif full.is_file():
                found.add(rel)
    if meta is None:
        return problems
    reported = {p.file for p in problems}
    for rel, digest in sorted(meta.files.items()):
        if rel in reported:
            continue
        if rel not in found:
            problems.append(VerifyProblem(id, version, rel, "listed in the manifest but missing"))
        elif checksums:
            actual = _sha256_or_reason(folder / rel)
            if actual != digest:
                problems.append(VerifyProblem(id, version, rel, f"sha256 is {actual}, the manifest says {digest}"))
    for rel in sorted(found - set(meta.files) - {MANIFEST_FILE}):
        problems.append(VerifyProblem(id, version, rel, "not listed in the manifest (added after publish)"))
    return problems


def _unsafe_reason(full: Path, rel: str) -> str | None:
    """Why an entry of a stored folder must not be loaded, or None."""
    mode = full.lstat().st_mode
    if stat.S_ISLNK(mode):
        return f"symlink to {full.readlink()!r}: the store holds regular files only"
    if stat.S_ISDIR(mode):
        return None
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if Path(rel).suffix.lower() in PICKLE_SUFFIXES:
        return "pickle file: never loaded; re-save it as safetensors"
    return None


# ------------------------------------------------------------------------------------- file helpers


def _stage_files(folder: Path, files: list[str], staging: Path) -> dict[str, str]:
    """Copy `files` from `folder` into a new `staging` folder, fsynced; return path -> sha256 of the copies."""
    staging.mkdir()
    digests = {}
    for rel in files:
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        digests[rel] = _copy_and_hash(folder / rel, target)
    for dirpath, _, _ in os.walk(staging, topdown=False):
        fsync_dir(Path(dirpath))
    return digests


def _copy_and_hash(source: Path, target: Path) -> str:
    """Copy one regular file (never following a link), fsync the copy, return the sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StoreError(f"{source} became a symlink while publishing", hint="publish regular files only") from None
        raise
    with os.fdopen(fd, "rb") as src, target.open("xb") as dst:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{source} is not a regular file", hint="publish regular files only")
        while chunk := src.read(CHUNK_BYTES):
            digest.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def _sha256_or_reason(path: Path) -> str:
    """The sha256 of a file, or a short description of why it could not be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    return digest.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    """Write a new file and fsync it."""
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with ASCII `text` atomically and durably."""
    atomic_write(path, lambda handle: handle.write(text.encode("ascii")))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`, or a StoreError saying what was expected there."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path} is missing", hint=f"point at {what}") from None
    except (OSError, ValueError) as err:
        raise StoreError(f"{path} is not valid JSON: {err}", hint=f"point at {what}") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} holds {type(data).__name__}, not a JSON object", hint=f"point at {what}")
    return data


def _discard(path: Path) -> None:
    """Delete a file, link or folder tree, ignoring what is already gone."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _is_stale(entry: Path) -> bool:
    """Whether a staging entry belongs to a process that died (same host) or is older than a day."""
    try:
        age = time.time() - entry.lstat().st_mtime
    except FileNotFoundError:
        return False
    if age > STALE_STAGING_S:
        return True
    parts = entry.name.split("_", 3)
    if len(parts) != 4 or not parts[2].isdigit() or parts[3] != socket.gethostname():
        return False
    pid = int(parts[2])
    return pid != os.getpid() and not pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (assumed alive where it cannot be told)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _one_line(err: Exception) -> str:
    """An exception's message on one line."""
    return " ".join(str(err).split())
