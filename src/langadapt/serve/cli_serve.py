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
from typing import Annotated, Any

import typer

from langadapt.inference.backends import BACKENDS, DEVICES
from langadapt.inference.routing import TASKS
from langadapt.serve.limits import Limits

__all__ = ["register", "serve"]

log = logging.getLogger(__name__)
_DEFAULT_LIMITS = Limits()
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # noqa: S104 - listening beyond loopback is the user's explicit choice


def serve(
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Writable adapter store (default: $LANGADAPT_STORE or <cache>/store)."),
    ] = None,
    defaults: Annotated[
        bool,
        typer.Option("--defaults/--no-defaults", help="Serve the packaged default adapters under the store."),
    ] = True,
    base: Annotated[str, typer.Option("--base", help='Base model: "embedded", a directory or a hub id.')] = (
        "embedded"
    ),
    backend: Annotated[str, typer.Option("--backend", help=f"Inference backend: {', '.join(BACKENDS)}.")] = "torch",
    device: Annotated[str, typer.Option("--device", help=f"Device: {', '.join(DEVICES)} (auto: CUDA if any).")] = (
        "auto"
    ),
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated tasks to serve.")] = ",".join(TASKS),
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="Inference worker processes per device, each serving every task and language."
        ),
    ] = 1,
    api_servers: Annotated[int, typer.Option("--api-servers", min=1, help="HTTP server processes.")] = 1,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Torch threads per worker (default: cores / workers).")
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, help="Requests gathered into one batch.")
    ] = 16,
    batch_timeout: Annotated[
        float,
        typer.Option(
            "--batch-timeout",
            min=0.0,
            help="Seconds a batch waits for more requests after its first (0: take what is queued; "
            "a few ms fills GPU batches).",
        ),
    ] = 0.0,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds a request may wait in the queue.")] = (
        30.0
    ),
    max_texts: Annotated[int, typer.Option("--max-texts", min=1, help="Texts per request (413 beyond).")] = (
        _DEFAULT_LIMITS.texts
    ),
    max_chars: Annotated[int, typer.Option("--max-chars", min=1, help="Characters per text (413 beyond).")] = (
        _DEFAULT_LIMITS.chars
    ),
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Request body bytes (413 beyond).")
    ] = _DEFAULT_LIMITS.body_bytes,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=1, help="Waiting inference requests, all routes together (429 beyond).")
    ] = _DEFAULT_LIMITS.queue,
    cache_mb: Annotated[
        float, typer.Option("--cache-mb", min=1.0, help="Adapter cache budget per worker, in MiB.")
    ] = 512.0,
    preload: Annotated[int, typer.Option("--preload", min=0, help="Adapter stacks each worker loads at start.")] = 32,
    fallback: Annotated[
        list[str] | None,
        typer.Option("--fallback", help="LANG=RELATED[,RELATED]: serve LANG with a related language's adapter."),
    ] = None,
    lid_threshold: Annotated[
        float | None,
        typer.Option(
            "--lid-threshold",
            min=0.0,
            max=1.0,
            help='Confidence below which lang "auto" answers a 422 asking for lang (default: the head\'s own, '
            "chosen on dev for 0.99 precision).",
        ),
    ] = None,
    api_keys_file: Annotated[
        Path | None, typer.Option("--api-keys-file", help='JSON {"api": [...], "admin": [...]} of API keys.')
    ] = None,
    host: Annotated[str, typer.Option("--host", help=f"Interface to listen on: {', '.join(HOSTS)}.")] = ("127.0.0.1"),
    port: Annotated[int, typer.Option("--port", min=1024, max=65535, help="Port to listen on.")] = 8000,
    runtime_dir: Annotated[
        Path | None, typer.Option("--runtime-dir", help="Directory for metrics and admin state (default: temp).")
    ] = None,
    watch_interval: Annotated[
        float, typer.Option("--watch-interval", min=0.005, help="Seconds between store checks (hot loading).")
    ] = 0.02,
    fast_queue: Annotated[
        bool, typer.Option("--fast-queue/--no-fast-queue", help="ZeroMQ for responses instead of manager queues.")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Serve NER, sentiment and topic labelling by language code over HTTP, with hot-loaded adapters."""
    from langadapt.errors import LangadaptError
    from langadapt.serve.metrics import configure_multiprocess

    task_list = tuple(t.strip() for t in tasks.split(",") if t.strip())
    if backend not in BACKENDS:
        raise LangadaptError(f"unknown backend {backend!r}", f"choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES and not device.startswith("cuda:"):
        raise LangadaptError(f"unknown device {device!r}", f"choose one of {', '.join(DEVICES)}")
    if host not in HOSTS:
        raise LangadaptError(f"cannot listen on {host!r}", f"choose one of {', '.join(HOSTS)}")

    created = runtime_dir is None
    runtime = Path(tempfile.mkdtemp(prefix="langadapt-serve-")) if runtime_dir is None else runtime_dir
    runtime.mkdir(parents=True, exist_ok=True)
    configure_multiprocess(runtime / "metrics")  # before any metric exists and before workers start
    limits = Limits(texts=max_texts, chars=max_chars, body_bytes=max_body_bytes, queue=max_queue)
    os.environ.update(limits.to_env())  # the HTTP processes' schemas and the workers read them
    try:
        server, config = _build(
            store=store,
            defaults=defaults,
            base=base,
            backend=backend,
            device=device,
            tasks=task_list,
            workers=workers,
            threads=threads,
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            timeout=timeout,
            limits=limits,
            cache_mb=cache_mb,
            preload=preload,
            fallback=fallback or [],
            lid_threshold=lid_threshold,
            api_keys_file=api_keys_file,
            host=host,
            runtime=runtime,
            watch_interval=watch_interval,
            fast_queue=fast_queue,
        )
        signal.signal(signal.SIGTERM, _interrupt)  # LitServe shuts its workers down on KeyboardInterrupt
        typer.echo(
            f"serving {', '.join(config.tasks)} on http://{host}:{port} (base {base}, backend {backend}, "
            f"workers {workers}; docs at /docs, metrics at /metrics)",
            err=True,
        )
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


def _build(**options: Any) -> tuple[Any, Any]:
    """The LitServer and its config from the command's options."""
    from langadapt.inference.engine import EngineSettings
    from langadapt.inference.routing import parse_fallbacks
    from langadapt.models.language import canonical_language
    from langadapt.models.store_view import PACKAGED
    from langadapt.serve.app import ServerConfig, build_server
    from langadapt.serve.auth import ApiKeys

    tasks = options["tasks"]
    workers = options["workers"]
    threads = options["threads"] or max(1, (os.cpu_count() or 1) // workers)
    fallbacks = parse_fallbacks(options["fallback"])
    engine = EngineSettings(
        base=options["base"],
        store=str(options["store"]) if options["store"] else None,
        defaults=PACKAGED if options["defaults"] else None,
        backend=options["backend"],
        device=options["device"],
        threads=threads,
        tasks=tasks,
        fallbacks=tuple((canonical_language(k), v) for k, v in fallbacks.items()),
        cache_bytes=int(options["cache_mb"] * 1024 * 1024),
        lid_threshold=options["lid_threshold"],
    )
    device = options["device"]
    accelerator = "auto" if device == "auto" else ("cpu" if device == "cpu" else "cuda")
    config = ServerConfig(
        engine=engine,
        runtime_dir=options["runtime"],
        tasks=tasks,
        workers=workers,
        max_batch_size=options["max_batch_size"],
        batch_timeout=options["batch_timeout"],
        timeout=options["timeout"],
        limits=options["limits"],
        keys=ApiKeys.load(keys_file=options["api_keys_file"], host=options["host"]),
        preload=options["preload"],
        watch_interval=options["watch_interval"],
        accelerator=accelerator,
        fast_queue=options["fast_queue"],
    )
    return build_server(config), config


def register(app: typer.Typer) -> None:
    """Add `serve` to the main CLI, with its error handling."""
    from langadapt.console import friendly_errors

    app.command("serve")(friendly_errors(serve))
