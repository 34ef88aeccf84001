"""API keys: where they come from, how a request presents one, and the constant-time check.

Keys come from `LANGADAPT_API_KEYS` / `LANGADAPT_ADMIN_KEYS` (comma-separated) and from a JSON file
`{"api": [...], "admin": [...]}` (`--api-keys-file`). A request presents its key as `Authorization: Bearer <key>`
or `X-API-Key: <key>`. Admin keys are accepted wherever an API key is. Keys are compared with
`hmac.compare_digest` against every configured key (no early exit), and never logged or echoed. There is always
an admin key: `langadapt serve` generates one when none is configured (`langadapt.serve.admin_key`).

`AllowedHosts` is the other half of keeping a local server local: a request whose `Host` header names a host the
server does not answer to is refused, so a web page that rebinds its own DNS name to 127.0.0.1 cannot reach it.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from langadapt.errors import LangadaptError

API_KEYS_ENV = "LANGADAPT_API_KEYS"
ADMIN_KEYS_ENV = "LANGADAPT_ADMIN_KEYS"
KEYS_FILE_ENV = "LANGADAPT_API_KEYS_FILE"
Role = Literal["api", "admin"]
LOOPBACK_HOST_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"


@dataclass(frozen=True)
class ApiKeys:
    """The configured inference and admin keys (as bytes); admin routes need an admin key, always."""

    api: tuple[bytes, ...] = ()
    admin: tuple[bytes, ...] = ()

    def __repr__(self) -> str:  # never show the keys themselves
        return f"ApiKeys(api={len(self.api)} keys, admin={len(self.admin)} keys)"

    def with_admin(self, key: str) -> ApiKeys:
        """These keys plus one admin key (the one `langadapt serve` generates when none is configured)."""
        return replace(self, admin=(*self.admin, *(k.encode("utf-8") for k in _checked([key], "the admin key"))))

    @property
    def inference_requires_key(self) -> bool:
        """Inference routes need a key once any API key is configured."""
        return bool(self.api)

    def role_of(self, presented: bytes | None) -> Role | None:
        """`admin`, `api` or None for a presented key; every configured key is compared, in constant time each."""
        if not presented:
            return None
        is_admin = _matches_any(presented, self.admin)
        is_api = _matches_any(presented, self.api)
        if is_admin:
            return "admin"
        return "api" if is_api else None

    @classmethod
    def load(cls, *, environ: Mapping[str, str] | None = None, keys_file: Path | str | None = None) -> ApiKeys:
        """Keys from the environment and a keys file (`keys_file`, else `$LANGADAPT_API_KEYS_FILE`)."""
        env = os.environ if environ is None else environ
        api = _split(env.get(API_KEYS_ENV, ""))
        admin = _split(env.get(ADMIN_KEYS_ENV, ""))
        file = keys_file or env.get(KEYS_FILE_ENV) or None
        if file:
            file_api, file_admin = read_keys_file(Path(file))
            api += file_api
            admin += file_admin
        return cls(
            api=tuple(k.encode("utf-8") for k in dict.fromkeys(api)),
            admin=tuple(k.encode("utf-8") for k in dict.fromkeys(admin)),
        )


@dataclass(frozen=True)
class AllowedHosts:
    """The `Host` header values a server answers to: names (any port), `.example.com` for its subdomains, `*` any."""

    names: tuple[str, ...] = (ANY_HOST,)

    @classmethod
    def for_bind(cls, host: str, configured: Sequence[str] | None = None) -> AllowedHosts:
        """The configured names, else the loopback names for a loopback server and any host beyond it."""
        names = tuple(n.strip().lower().rstrip(".") for n in configured or () if n.strip())
        for name in names:
            if name != ANY_HOST and (not name.isascii() or any(c in name for c in "/ @?#") or name.count("*")):
                raise LangadaptError(
                    f"{name!r} is not a host name for --allowed-hosts",
                    "give names or addresses without scheme or port, e.g. --allowed-hosts api.example.com,10.0.0.5",
                )
        if names:
            return cls(tuple(n.strip("[]") for n in names))
        return cls(LOOPBACK_HOST_NAMES) if host == "127.0.0.1" else cls()

    @property
    def any(self) -> bool:
        """Whether every host is allowed."""
        return ANY_HOST in self.names

    def allows(self, header: bytes | str | None) -> bool:
        """Whether a request with this `Host` header (None: it sent none) is one to answer."""
        if self.any:
            return True
        name = host_name(header)
        if not name:
            return False
        return any(name == n or (n.startswith(".") and (name.endswith(n) or name == n[1:])) for n in self.names)


def host_name(header: bytes | str | None) -> str:
    """The host name of a `Host` header, lower-cased, without port, brackets or trailing dot ('' when unusable)."""
    if header is None:
        return ""
    raw = header.decode("latin-1") if isinstance(header, bytes) else header
    raw = raw.strip().lower()
    if raw.startswith("["):  # an IPv6 literal: [::1]:8000
        end = raw.find("]")
        return raw[1:end] if end > 0 else ""
    name, _, port = raw.partition(":")
    if port and not port.isdigit():
        return ""
    return name.rstrip(".")


def read_keys_file(path: Path) -> tuple[list[str], list[str]]:
    """(api keys, admin keys) from a JSON file `{"api": [...], "admin": [...]}`."""
    hint = 'write a JSON object like {"api": ["<key>"], "admin": ["<key>"]}'
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LangadaptError(f"API keys file {path} does not exist", hint) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise LangadaptError(f"API keys file {path} is not readable JSON ({type(err).__name__})", hint) from None
    if not isinstance(data, dict) or set(data) - {"api", "admin"}:
        raise LangadaptError(f"API keys file {path} must hold an object with only `api` and `admin` lists", hint)
    found: dict[str, list[str]] = {}
    for role in ("api", "admin"):
        keys = data.get(role, [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise LangadaptError(f"`{role}` in API keys file {path} must be a list of strings", hint)
        found[role] = _checked([k.strip() for k in keys if k.strip()], f"{path} `{role}`")
    return found["api"], found["admin"]


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request presents: `Authorization: Bearer <key>`, else `X-API-Key`; None when neither."""
    api_key = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif lowered == b"x-api-key" and value.strip():
            api_key = value.strip()
    return api_key


def _split(raw: str) -> list[str]:
    return _checked([k.strip() for k in raw.split(",") if k.strip()], "the environment")


def _checked(keys: list[str], where: str) -> list[str]:
    """Refuse keys that could not travel in an HTTP header or are too short to be secret."""
    for key in keys:
        if len(key) < 8 or not key.isascii() or not key.isprintable() or " " in key:
            raise LangadaptError(
                f"an API key in {where} is shorter than 8 characters or holds spaces or non-ASCII characters",
                "use long random printable ASCII keys, e.g. python -c 'import secrets; print(secrets.token_urlsafe())'",
            )
    return keys


def _matches_any(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    """Whether `presented` equals one of `keys`, comparing against all of them."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented, key)
    return found
