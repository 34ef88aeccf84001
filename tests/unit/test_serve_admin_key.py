"""The generated admin key: a 0600 file a local client finds, never the key on screen, never an open admin API."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from langadapt.errors import LangadaptError
from langadapt.serve.admin_key import (
    admin_key_path,
    local_key_for,
    provide_admin_key,
    read_admin_key,
    remove_admin_key,
    write_admin_key,
)
from langadapt.serve.auth import ApiKeys


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LANGADAPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_an_admin_key_one_is_generated_into_a_file_only_the_user_reads(cache: Path) -> None:
    old = os.umask(0)  # even a permissive umask gives no one else a chance to read it
    try:
        port = free_port()
        keys, path, key = provide_admin_key(ApiKeys(), "127.0.0.1", port)
    finally:
        os.umask(old)
    assert path == admin_key_path(port) == cache / "serve" / f"admin-{port}.key"
    assert key is not None and len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert read_admin_key(path) == key and keys.role_of(key.encode()) == "admin"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert local_key_for(f"http://127.0.0.1:{port}") == key
    assert local_key_for(f"http://localhost:{port}/") == key
    assert local_key_for(f"http://[::1]:{port}") == key
    assert local_key_for(f"http://server.example:{port}") is None  # a remote server's key is never guessed
    assert local_key_for(f"http://127.0.0.1:{port + 1}") is None


def test_configured_admin_keys_are_used_and_no_file_is_written(cache: Path) -> None:
    configured = ApiKeys(admin=(b"configured-admin-key",))
    keys, path, key = provide_admin_key(configured, "127.0.0.1", free_port())
    assert keys is configured and path is None and key is None
    assert not (cache / "serve").exists()


def test_a_port_in_use_is_refused_before_a_key_file_is_replaced(cache: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LangadaptError, match="already in use"):
            provide_admin_key(ApiKeys(), "127.0.0.1", port)
    assert not admin_key_path(port).exists()


def test_a_server_removes_only_its_own_key_file(tmp_path: Path) -> None:
    path = tmp_path / "serve" / "admin-8000.key"
    write_admin_key(path, "first-key-0123456789")
    write_admin_key(path, "second-key-0123456789")  # a later server on the same port
    remove_admin_key(path, "first-key-0123456789")
    assert read_admin_key(path) == "second-key-0123456789"
    remove_admin_key(path, "second-key-0123456789")
    assert not path.exists() and read_admin_key(path) is None


def test_a_read_only_cache_falls_back_to_a_private_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container with a read-only root (only /tmp writable): the key goes to a per-user temp folder, still found."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("LANGADAPT_CACHE", str(blocker / "cache"))  # nothing can be created under a file
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    port = free_port()
    keys, path, key = provide_admin_key(ApiKeys(), "127.0.0.1", port)
    assert path is not None and key is not None
    assert path == tmp_path / "tmp" / f"langadapt-{os.getuid()}" / "serve" / f"admin-{port}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and keys.role_of(key.encode()) == "admin"
    assert local_key_for(f"http://127.0.0.1:{port}") == key
    monkeypatch.setattr("tempfile.tempdir", str(blocker))  # and when neither can be written: a clear error
    with pytest.raises(LangadaptError, match="cannot write the generated admin key"):
        provide_admin_key(ApiKeys(), "127.0.0.1", free_port())
