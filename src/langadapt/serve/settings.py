"""Serving settings: what every HTTP front adds to the engine's (`ServingSettings`), and the LitServe server's own.

`ServerSettings` is `langadapt serve`: its flags take their defaults and help from these fields, `build_server`
takes its values from it, and it is pickled into every LitServe worker. The Ray Serve app's `RaySettings`
(`langadapt.serve.ray_app`) extends `ServingSettings` with replicas and placement.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator

from langadapt.errors import SettingsError
from langadapt.inference.settings import InferenceSettings, split_list
from langadapt.serve.auth import AllowedHosts
from langadapt.serve.limits import Limits

MAX_AUTO_WORKERS = 4  # the default worker count on a CPU: one per core, up to this many
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # noqa: S104 - listening beyond loopback is the user's explicit choice
_LIMITS = Limits()  # the request limits' defaults are `Limits`' own

# Defaults differ between the LitServe server and the Ray Serve app (see `RaySettings`); the rest is shared.
WatchInterval = Annotated[float, Field(ge=0.005, description="Seconds between store checks (hot loading).")]


class ServingSettings(InferenceSettings):
    """The engine's settings plus what every HTTP front adds: dynamic batching, hot loading, request limits."""

    max_batch_size: int = Field(default=16, ge=1, description="Requests gathered into one batch.")
    batch_timeout: float = Field(
        default=0.0,
        ge=0.0,
        description="Seconds a batch waits for more requests after its first (0: take what is queued; "
        "a few ms fills GPU batches).",
    )
    watch_interval: WatchInterval = 0.02
    timeout: float = Field(default=30.0, ge=0.1, description="Seconds a request may wait for its answer (504 beyond).")
    max_texts: int = Field(default=_LIMITS.texts, ge=1, description="Texts per request (413 beyond).")
    max_chars: int = Field(default=_LIMITS.chars, ge=1, description="Characters per text (413 beyond).")
    max_body_bytes: int = Field(default=_LIMITS.body_bytes, ge=1, description="Request body bytes (413 beyond).")
    max_queue: int = Field(
        default=_LIMITS.queue, ge=1, description="Waiting inference requests, all routes together (429 beyond)."
    )

    @property
    def limits(self) -> Limits:
        """The request limits, as the gateway and the request schemas read them."""
        return Limits(texts=self.max_texts, chars=self.max_chars, body_bytes=self.max_body_bytes, queue=self.max_queue)


class ServerSettings(ServingSettings):
    """`langadapt serve`: the LitServe server, its HTTP processes and its inference workers."""

    # On a CPU the server runs a worker per core (up to MAX_AUTO_WORKERS), each with one torch thread, all sharing
    # one copy of the base (forked from a fork server that loaded it). Small requests' passes are too small for
    # intra-op threads to pay: on 2 cores, 2 one-thread workers served 1.00x the old three-process layout's mixed
    # load (0.97x on a busy machine), one worker with 2 threads 0.90x (0.14x busy) (bench/results/pool.json).
    threads: int | None = Field(
        default=None, ge=1, description="Torch threads per worker (default: cores / workers, at least 1)."
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description=f"Inference worker processes per device, each serving every task and language (default: one "
        f"per core up to {MAX_AUTO_WORKERS} on a CPU, sharing one copy of the base; one per GPU).",
        validate_default=True,
    )
    api_servers: int = Field(default=1, ge=1, description="HTTP server processes.")
    preload: int = Field(default=32, ge=0, description="Adapter stacks each worker loads at start.")
    api_keys_file: Path | None = Field(default=None, description='JSON {"api": [...], "admin": [...]} of API keys.')
    host: str = Field(default=HOSTS[0], description=f"Interface to listen on: {', '.join(HOSTS)}.")
    allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Comma-separated Host header names to answer (.example.com: its subdomains; *: any); others get "
        "400. Default: localhost, 127.0.0.1, ::1 on 127.0.0.1; any host on 0.0.0.0 or ::.",
    )
    drain_timeout: float = Field(
        default=30.0, ge=0.0, description="Seconds SIGTERM waits for requests in flight to finish."
    )
    port: int = Field(default=8000, ge=1024, le=65535, description="Port to listen on.")
    runtime_dir: Path | None = Field(default=None, description="Directory for metrics and admin state (default: temp).")
    fast_queue: bool = Field(default=False, description="ZeroMQ for responses instead of manager queues.")
    log_level: str = Field(default="info", description="critical, error, warning, info or debug.")

    @field_validator("workers")
    @classmethod
    def _default_workers(cls, value: int | None, info: ValidationInfo) -> int:
        """Workers unset: one per GPU, or on a CPU one per core (at most MAX_AUTO_WORKERS)."""
        if value is not None:
            return value
        return 1 if _on_gpu(str(info.data.get("device", "auto"))) else min(MAX_AUTO_WORKERS, available_cores())

    @property
    def on_gpu(self) -> bool:
        """Whether the workers run on CUDA devices (`auto`: when torch sees one)."""
        return _on_gpu(self.device)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        """Comma-separated names, each a host name or address (checked here, before anything starts)."""
        names = () if value is None else split_list(value)
        AllowedHosts.for_bind(HOSTS[0], names)
        return names

    @field_validator("host")
    @classmethod
    def _known_host(cls, value: str) -> str:
        if value not in HOSTS:
            raise SettingsError(f"cannot listen on {value!r}", f"choose one of {', '.join(HOSTS)}")
        return value

    @property
    def accelerator(self) -> str:
        """LitServe's accelerator for the device setting."""
        return self.device if self.device in ("auto", "cpu") else "cuda"

    def runtime(self) -> Path:
        """The runtime directory (metrics, admin log, worker reports); `langadapt serve` makes a temporary one."""
        if self.runtime_dir is None:
            raise SettingsError("the server has no runtime directory", "set runtime_dir to a writable directory")
        return self.runtime_dir

    def for_worker(self, device: str) -> ServerSettings:
        """One worker's settings: the device LitServe gave it (when `auto`), and its share of the cores."""
        threads = self.threads or max(1, available_cores() // (self.workers or 1))
        return self.model_copy(update={"device": device if self.device == "auto" else self.device, "threads": threads})


def _on_gpu(device: str) -> bool:
    """Whether a device setting means CUDA devices (`auto`: when torch sees one)."""
    if device == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return device.startswith("cuda")


def available_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by a container's CPU quota (cgroup v2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
    except (OSError, ValueError):
        return max(1, cores)
    if quota == "max":
        return max(1, cores)
    return max(1, min(cores, int(int(quota) / int(period))))
