"""The record every training or evaluation run leaves behind (`run.json`), which reports are built from."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

RUN_FILE = "run.json"


class RunRecord(BaseModel):
    """One run: what was trained or evaluated, on what, and the figures it produced."""

    model_config = ConfigDict(extra="forbid")

    kind_of_run: str = Field(description="train-lang, train-task, eval-task or eval-pppl")
    language: str | None = Field(default=None, description="canonical xxx_Scrp code")
    task: str = Field(description="mlm, topic, sentiment or ner")
    variant: str = Field(description="what is compared in reports, e.g. task-only, lang+task:seq_bn, full-ft")
    adapter_kind: str | None = None
    base_model: str = "embedded"
    adapter_id: str | None = None
    adapter_version: int | None = None
    language_adapter_id: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="test-split figures")
    majority: dict[str, float] = Field(default_factory=dict, description="majority-class baseline on the same split")
    validation: dict[str, float] = Field(default_factory=dict, description="best validation figures")
    data: list[str] = Field(default_factory=list)
    licence: str | None = None
    steps: int | None = None
    duration_s: float | None = None
    throughput: dict[str, float] = Field(
        default_factory=dict,
        description="training steps: mean_step_s, mean_step_cpu_s, tokens_per_s, padded_per_real_tokens",
    )
    settings: dict[str, Any] = Field(default_factory=dict)
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def write(self, out_dir: Path) -> Path:
        """Write `run.json` into `out_dir` atomically and return its path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / RUN_FILE
        tmp = out_dir / f".{RUN_FILE}.tmp"
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False), encoding="utf-8")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(target)
        return target

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """Read a `run.json` file, or the one inside a run directory."""
        file = path / RUN_FILE if path.is_dir() else path
        return cls.model_validate_json(file.read_text(encoding="utf-8"))
