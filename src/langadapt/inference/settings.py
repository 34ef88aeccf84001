"""The one declarative model of what an inference engine loads and how it batches: `InferenceSettings`.

Every front end takes its values and defaults from it or from a subclass: the engine itself, `langadapt serve`
(its flags, `langadapt.serve.settings.ServerSettings`, pickled into the LitServe workers), the Ray Serve app
(`langadapt.serve.ray_app.RaySettings`) and `langadapt label` (`langadapt.label.job.LabelSettings`). A field's
`description` is the help of its command-line flag. Values arrive as a command line or a config file gives them
(`tasks="ner,topic"`, `defaults=false`, `fallback="kin=swh; ibo=yor"`) and are kept in one form; a value that
cannot be used raises `SettingsError` (a ValueError) saying how to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from langadapt.errors import SettingsError
from langadapt.inference.backends import DEVICES
from langadapt.inference.routing import parse_fallbacks
from langadapt.models.kinds import AUTO_BACKEND, BACKENDS, SERVED_TASKS
from langadapt.models.store_view import PACKAGED, defaults_root

if TYPE_CHECKING:
    from langadapt.inference.auto_backend import AutoPolicy

MIB = 1024 * 1024
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def split_list(value: Any, separators: str = ",") -> Any:
    """A string of items split at any of `separators` (items stripped, empty ones dropped); others unchanged."""
    if not isinstance(value, str):
        return value
    for separator in separators[1:]:
        value = value.replace(separator, separators[0])
    return tuple(item.strip() for item in value.split(separators[0]) if item.strip())


class InferenceSettings(BaseModel):
    """What the engine loads (base model, store, adapters) and how it runs (backend, device, threads, passes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: str = Field(default="embedded", description='Base model: "embedded", a directory or a hub id.')
    store: Path | None = Field(
        default=None, description="Writable adapter store (default: $LANGADAPT_STORE or <cache>/store)."
    )
    # The read-only layer under the store: "packaged", a directory, or None (flags and config files say true/false).
    defaults: str | None = Field(default=PACKAGED, description="Use the packaged default adapters under the store.")
    backend: str = Field(
        default=AUTO_BACKEND,
        description=f"Inference backend: {', '.join(BACKENDS)} (auto: torch, with ONNX graphs where they measure "
        "faster on this machine).",
    )
    device: str = Field(default="auto", description=f"Device: {', '.join(DEVICES)} or cuda:N (auto: CUDA if any).")
    threads: int | None = Field(default=None, ge=1, description="Torch threads (default: torch's own).")
    tasks: tuple[str, ...] = Field(default=SERVED_TASKS, description="Comma-separated tasks to serve.")
    fallback: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="LANG=RELATED[,RELATED]: serve LANG with a related language's adapter.",
    )
    cache_mb: float = Field(default=512.0, ge=1.0, description="Adapter cache budget per engine, in MiB.")
    max_rows: int = Field(default=32, ge=1, description="Windows per forward pass.")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Padded tokens per forward pass (default: 512 on a CPU, 16384 on CUDA)."
    )
    auto_promote_after: int = Field(
        default=32, ge=1, description="Backend auto: passes of one stack before it gets a fused ONNX graph."
    )
    auto_fused_mb: float = Field(
        default=1024.0, ge=0.0, description="Backend auto: memory for open fused graphs per worker, in MiB."
    )
    auto_idle_s: float = Field(
        default=600.0, gt=0.0, description="Backend auto: seconds unused after which a fused graph is closed."
    )
    auto_build: bool = Field(
        default=True,
        description="Backend auto: build missing ONNX graphs in the background (needs a writable store).",
    )
    lid_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description='With lang "auto": the confidence below which a text is not labelled but answered with an '
        "error asking for its language (default: the language-ID head's own, chosen on dev for 0.99 precision).",
    )

    @field_validator("defaults", mode="before")
    @classmethod
    def _defaults_switch(cls, value: Any) -> Any:
        """True or "true" means the packaged defaults, False or "false" none."""
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            value = value.strip().lower() in _TRUE
        if isinstance(value, bool):
            return PACKAGED if value else None
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise SettingsError(f"unknown backend {value!r}", f"choose one of {', '.join(BACKENDS)}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in DEVICES and not value.startswith("cuda:"):
            raise SettingsError(f"unknown device {value!r}", f"choose one of {', '.join(DEVICES)} or cuda:N")
        return value

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_list(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise SettingsError("no task given", f"name one or more of {', '.join(SERVED_TASKS)}")
        if any(task not in SERVED_TASKS for task in value) or len(set(value)) != len(value):
            raise SettingsError(f"bad task list {','.join(value)!r}", f"tasks are {', '.join(SERVED_TASKS)}, each once")
        return value

    @field_validator("fallback", mode="before")
    @classmethod
    def _fallback_table(cls, value: Any) -> Any:
        """`LANG=RELATED[,RELATED]` entries (a string: separated by `;` or spaces) to a canonical table."""
        if value is None:
            return {}
        if isinstance(value, dict):  # a table already (e.g. a dumped model): canonical again
            value = [f"{lang}={','.join(related)}" for lang, related in value.items()]
        return parse_fallbacks(split_list(value, "; \t\n"))

    def auto_policy(self) -> AutoPolicy:
        """The `auto` backend's promotion policy from these settings."""
        from langadapt.inference.auto_backend import AutoPolicy

        return AutoPolicy(
            promote_after=self.auto_promote_after,
            idle_s=self.auto_idle_s,
            fused_bytes=int(self.auto_fused_mb * MIB),
            build=self.auto_build,
        )

    def defaults_dir(self) -> Path | None:
        """The read-only default store's directory, if any."""
        return defaults_root(self.defaults)
