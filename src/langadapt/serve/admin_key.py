"""The admin key of a local server: generated at start when none is configured, kept in a file only its user reads.

As Jupyter does with its token: `langadapt serve` without `LANGADAPT_ADMIN_KEYS` (or an `admin` list in
`--api-keys-file`) makes a random key and writes it to `<cache>/serve/admin-<port>.key`, or where the cache is
read-only to `<tmp>/langadapt-<uid>/serve/admin-<port>.key` (mode 0600 from the moment the file exists: written to
a 0600 temporary sibling and renamed into place). It prints the file's path (never the key) and removes the file
when it stops. `langadapt.client.Client` reads it for a loopback URL when it is given no admin key. The admin API
is therefore never open without a key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from langadapt.errors import LangadaptError
from langadapt.paths import cache_dir, fsync_dir
from langadapt.serve.auth import LOOPBACK_HOST_NAMES, ApiKeys

KEY_DIR = "serve"


def admin_key_path(port: int, root: Path | None = None) -> Path:
    """Where the generated admin key of the server on `port` lives (`root`: the cache root)."""
    return (root or cache_dir()) / KEY_DIR / f"admin-{port}.key"


def admin_key_paths(port: int) -> list[Path]:
    """Where a generated key may live, in the order tried: the cache, else a per-user folder in the temp dir.

    The second serves a read-only cache (a container with a read-only root file system and only /tmp writable).
    """
    private_tmp = Path(tempfile.gettempdir()) / f"langadapt-{os.getuid()}"
    return [admin_key_path(port), admin_key_path(port, private_tmp)]


def write_admin_key(path: Path, key: str) -> None:
    """Write `key` to `path`, readable by this user only at every instant (0600 temp file, fsync, rename)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    fsync_dir(path.parent)


def read_admin_key(path: Path) -> str | None:
    """The key in a key file, or None when there is none (or it is not ours to read)."""
    try:
        key = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return key or None


def remove_admin_key(path: Path, key: str) -> None:
    """Remove the key file if it still holds `key` (a later server on the same port may have replaced it)."""
    if read_admin_key(path) == key:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def provide_admin_key(keys: ApiKeys, host: str, port: int) -> tuple[ApiKeys, Path | None, str | None]:
    """`keys` with an admin key: the configured ones, else a new random key written to its file.

    Returns (keys, the key file or None, the generated key or None). Refuses a port already in use before
    writing anything, so a second server cannot replace the first one's key file.
    """
    if keys.admin:
        return keys, None, None
    _check_port_free(host, port)
    key = secrets.token_urlsafe(32)
    failures = []
    for path in admin_key_paths(port):
        try:
            write_admin_key(path, key)
        except OSError as err:
            failures.append(f"{path}: {err.strerror or err}")
            continue
        return keys.with_admin(key), path, key
    raise LangadaptError(
        f"cannot write the generated admin key ({'; '.join(failures)})",
        "set LANGADAPT_CACHE to a writable folder, or configure an admin key (LANGADAPT_ADMIN_KEYS)",
    )


def local_key_for(url: str) -> str | None:
    """The generated admin key of the server at `url`, when `url` is a loopback address on this machine."""
    parts = urlsplit(url)
    if not parts.hostname or not _is_loopback(parts.hostname):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return next((key for key in map(read_admin_key, admin_key_paths(port)) if key), None)


def _is_loopback(name: str) -> bool:
    if name.lower() in LOOPBACK_HOST_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError:
            raise LangadaptError(
                f"port {port} on {host} is already in use", "stop the other server, or pass another --port"
            ) from None
