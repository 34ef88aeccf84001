"""Batch labelling of corpora: `langadapt label`, resumable exactly once, locally or on Ray Data.

Module map: `formats` (formats, rows, positions, added columns) · `readers` (streaming readers that resume at
a byte offset) · `writers` (chunk files and their assembly) · `labeller` (a chunk through `Engine.run`) ·
`checkpoint` (atomic chunks and the checkpoint) · `job` (the job: resume, commit, finish) · `ray_data` (the same
job on Ray Data) · `cli_label` (the command).
"""

from __future__ import annotations

from typing import Any

__all__ = ["LabelJob", "LabelSettings"]


def __getattr__(name: str) -> Any:  # the job imports the engine (torch): only when asked for
    if name in __all__:
        from langadapt.label import job

        return getattr(job, name)
    raise AttributeError(name)
