"""What a labelling job is asked to do: the input, the output, the tasks, and the engine that labels them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from langadapt.inference.engine import EngineSettings
from langadapt.models.kinds import TORCH_BACKEND
from langadapt.models.store_view import PACKAGED

__all__ = ["LabelOptions"]


@dataclass(frozen=True)
class LabelOptions:
    """Everything a labelling job needs; the CLI fills it from its flags."""

    input: Path
    output: Path
    tasks: tuple[str, ...]
    lang: str | None = None
    lang_column: str | None = None
    text_column: str = "text"
    input_format: str = "auto"
    output_format: str = "auto"
    base: str = "embedded"
    store: str | None = None
    defaults: str | None = PACKAGED
    backend: str = TORCH_BACKEND
    device: str = "auto"
    threads: int | None = None
    chunk_rows: int = 1000
    errors: Path | None = None
    restart: bool = False
    progress: bool | None = None  # None: when stderr is a terminal
    ray: bool = False
    ray_address: str | None = None  # None: start a local Ray (or join $RAY_ADDRESS)
    ray_actors: int = 2

    @property
    def errors_path(self) -> Path:
        return self.errors or self.output.with_name(self.output.name + ".errors.jsonl")

    @property
    def summary_path(self) -> Path:
        return self.output.with_name(self.output.name + ".summary.json")

    def settings(self) -> EngineSettings:
        return EngineSettings(
            base=self.base,
            store=self.store,
            defaults=self.defaults,
            backend=self.backend,
            device=self.device,
            threads=self.threads,
            tasks=self.tasks,
        )
