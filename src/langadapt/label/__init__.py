"""Batch labelling of corpora: `langadapt label`, resumable exactly once, locally or on Ray Data.

Module map: `formats` (formats, rows, positions, added columns) · `readers` (streaming readers that resume at
a byte offset) · `writers` (chunk files and their assembly) · `labeller` (a chunk through `Engine.run`) ·
`checkpoint` (atomic chunks and the checkpoint) · `options` (what a job is asked to do) · `runners` (where
chunks are labelled: the interface and the local runner) · `ray_data` (the Ray Data runner) · `job` (the job:
resume, commit, finish) · `cli_label` (the command).
"""

from __future__ import annotations

from typing import Any

__all__ = ["LabelJob", "LabelSettings"]


def __getattr__(name: str) -> Any:  # both import the engine (torch): only when asked for
    if name == "LabelJob":
        from langadapt.label.job import LabelJob

        return LabelJob
    if name == "LabelSettings":
        from langadapt.label.options import LabelSettings

        return LabelSettings
    raise AttributeError(name)
