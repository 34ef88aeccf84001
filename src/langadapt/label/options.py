"""What a labelling job is asked to do: the input, the output, the tasks, and the engine that labels them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from langadapt.inference.settings import InferenceSettings
from langadapt.label.formats import INPUT_FORMATS, OUTPUT_FORMATS

__all__ = ["LabelSettings"]


class LabelSettings(InferenceSettings):
    """Everything a labelling job needs: the engine's settings plus input, output and how to run; the CLI's flags."""

    input: Path = Field(description="Corpus file to label.")
    output: Path = Field(description="Where the labelled rows go.")
    tasks: tuple[str, ...] = Field(description="ner, sentiment, topic, or several: ner,sentiment.")
    lang: str | None = Field(
        default=None, description="Language of every text (yo, yor, yor_Latn...), or auto: identify each text's."
    )
    backend: str = Field(
        default="torch",
        description="Inference backend: torch (the default for a job: a resumed job writes the same bytes as an "
        "uninterrupted one), auto, onnx-fused or onnx-swappable.",
    )
    auto_build: bool = Field(
        default=False, description="Backend auto: build missing ONNX graphs in the background (off for a job)."
    )
    lang_column: str | None = Field(default=None, description="Column holding each row's language code.")
    text_column: str = Field(default="text", description="Column holding the text.")
    input_format: str = Field(
        default="auto", description=f"Input format: auto (by suffix), {', '.join(INPUT_FORMATS)}."
    )
    output_format: str = Field(
        default="auto", description=f"Output format: auto (by suffix, else the input's), {', '.join(OUTPUT_FORMATS)}."
    )
    chunk_rows: int = Field(default=1000, ge=1, description="Rows per committed chunk (the unit of resuming).")
    errors: Path | None = Field(default=None, description="Errors file (JSONL; default: OUTPUT.errors.jsonl).")
    restart: bool = Field(default=False, description="Discard a partial or finished output of OUTPUT and start over.")
    progress: bool | None = Field(default=None, description="Progress bar (default: on a terminal).")
    ray: bool = Field(default=False, description="Run on Ray Data (an actor pool, one engine per actor).")
    ray_address: str | None = Field(
        default=None, description="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)."
    )
    ray_actors: int = Field(default=2, ge=1, description="Labelling actors on Ray.")

    @property
    def errors_path(self) -> Path:
        """Where unlabellable rows are listed."""
        return self.errors or self.output.with_name(self.output.name + ".errors.jsonl")

    @property
    def summary_path(self) -> Path:
        """Where the run's summary is kept."""
        return self.output.with_name(self.output.name + ".summary.json")
