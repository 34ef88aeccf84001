"""`langadapt serve`: start the HTTP server (LitServe) on a base model, the adapter store and the defaults.

Mount it with `register(app)`, which adds the `serve` command wrapped in the main CLI's `friendly_errors`;
`python -m langadapt.serve` runs the same command on its own.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from langadapt.console import flag, settings_from
from langadapt.serve.settings import ServerSettings

if TYPE_CHECKING:
    from langadapt.serve.auth import ApiKeys

__all__ = ["register", "serve"]

log = logging.getLogger(__name__)


def _worker_text(settings: ServerSettings) -> str:
    """How many workers serve, and their torch threads on a CPU."""
    if settings.on_gpu:
        return f"{settings.workers} worker(s) per GPU"
    return f"{settings.workers} worker(s) x {settings.for_worker('cpu').threads} torch thread(s), one shared base"


def serve(
    store: Path | None = flag(ServerSettings, "store"),
    defaults: bool = flag(ServerSettings, "defaults", "--defaults/--no-defaults"),
    base: str = flag(ServerSettings, "base"),
    backend: str = flag(ServerSettings, "backend"),
    device: str = flag(ServerSettings, "device"),
    tasks: str = flag(ServerSettings, "tasks"),
    workers: int | None = flag(ServerSettings, "workers"),
    api_servers: int = flag(ServerSettings, "api_servers"),
    threads: int | None = flag(ServerSettings, "threads"),
    max_batch_size: int = flag(ServerSettings, "max_batch_size"),
    batch_timeout: float = flag(ServerSettings, "batch_timeout"),
    timeout: float = flag(ServerSettings, "timeout"),
    max_texts: int = flag(ServerSettings, "max_texts"),
    max_chars: int = flag(ServerSettings, "max_chars"),
    max_body_bytes: int = flag(ServerSettings, "max_body_bytes"),
    max_queue: int = flag(ServerSettings, "max_queue"),
    cache_mb: float = flag(ServerSettings, "cache_mb"),
    preload: int = flag(ServerSettings, "preload"),
    auto_promote_after: int = flag(ServerSettings, "auto_promote_after"),
    auto_fused_mb: float = flag(ServerSettings, "auto_fused_mb"),
    auto_idle_s: float = flag(ServerSettings, "auto_idle_s"),
    auto_build: bool = flag(ServerSettings, "auto_build", "--auto-build/--no-auto-build"),
    fallback: list[str] | None = flag(ServerSettings, "fallback"),
    lid_threshold: float | None = flag(ServerSettings, "lid_threshold"),
    api_keys_file: Path | None = flag(ServerSettings, "api_keys_file"),
    host: str = flag(ServerSettings, "host"),
    allowed_hosts: str | None = flag(ServerSettings, "allowed_hosts"),
    drain_timeout: float = flag(ServerSettings, "drain_timeout"),
    port: int = flag(ServerSettings, "port"),
    runtime_dir: Path | None = flag(ServerSettings, "runtime_dir"),
    watch_interval: float = flag(ServerSettings, "watch_interval"),
    fast_queue: bool = flag(ServerSettings, "fast_queue", "--fast-queue/--no-fast-queue"),
    log_level: str = flag(ServerSettings, "log_level"),
) -> None:
    """Serve NER, sentiment and topic labelling by language code over HTTP, with hot-loaded adapters."""
    settings = settings_from(ServerSettings, locals())  # every parameter is a field of the model
    from langadapt.serve.admin_key import provide_admin_key, remove_admin_key
    from langadapt.serve.auth import ApiKeys
    from langadapt.serve.metrics import configure_multiprocess

    keys, key_file, generated = provide_admin_key(ApiKeys.load(keys_file=settings.api_keys_file), host, port)

    created = settings.runtime_dir is None
    runtime = settings.runtime_dir or Path(tempfile.mkdtemp(prefix="langadapt-serve-"))
    runtime.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"runtime_dir": runtime})
    configure_multiprocess(runtime / "metrics")  # before any metric exists and before workers start
    os.environ.update(settings.limits.to_env())  # the HTTP processes' schemas and the workers read them
    try:
        server = _build(settings, keys)
        signal.signal(signal.SIGTERM, _interrupt)  # LitServe shuts its workers down on KeyboardInterrupt
        typer.echo(
            f"serving {', '.join(settings.tasks)} on http://{host}:{port} (base {base}, backend {backend}, "
            f"{_worker_text(settings)}; docs at /docs, metrics at /metrics)",
            err=True,
        )
        if key_file is not None:
            typer.echo(f"admin key (generated, as none is configured): {key_file}", err=True)
        try:
            server.run(
                host=host,
                port=port,
                num_api_servers=api_servers,
                generate_client_file=False,
                log_level=log_level,
            )
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C: LitServe has stopped its workers; no traceback
            typer.echo("langadapt serve: stopped", err=True)
    finally:
        if key_file is not None and generated is not None:
            remove_admin_key(key_file, generated)
        if created:
            shutil.rmtree(runtime, ignore_errors=True)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM in the main process stops LitServe as Ctrl-C does; forked workers inherit it but end quietly."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


def _build(settings: ServerSettings, keys: ApiKeys) -> Any:
    """The LitServer (imported here: LitServe and the app load only when the server starts)."""
    from langadapt.serve.app import build_server

    return build_server(settings, keys)


def register(app: typer.Typer) -> None:
    """Add `serve` to the main CLI, with its error handling."""
    from langadapt.console import friendly_errors

    app.command("serve")(friendly_errors(serve))
