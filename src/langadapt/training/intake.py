"""What reading and encoding did to each split: examples used, rows skipped, tags repaired, texts cut or windowed.

Nothing is dropped or changed silently: every training and evaluation run prints this at its end and records it
(as `split_intake(...)` gives it) in `run.json` and the manifest, and warns when many texts were cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CUT_WARNING_SHARE", "cut_warnings", "intake_lines", "split_intake"]

CUT_WARNING_SHARE = 0.10  # warn when more than this share of a split's texts were cut at --max-length
SHOWN = 3  # rows of each kind printed per split
RECORDED = 100  # rows of each kind kept in run.json and the manifest


def _rows(path: str, rows: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    """The first RECORDED rows as {file, line, reason}."""
    return [{"file": path, "line": line, "reason": reason} for line, reason in rows[:RECORDED]]


def split_intake(
    dataset: Any,
    used: int,
    max_length: int,
    *,
    task: str,
    encoded: Any = None,
    cut: int | None = None,
    windowed: int | None = None,
    held_out_of: str | None = None,
) -> dict[str, Any]:
    """One split's record: file, format, examples read and used, skipped and repaired rows, texts cut or windowed.

    `dataset` is what the reader returned (for a split held out of train, the training file's, and `held_out_of`
    names that file). Cut texts (classification) and windowed sentences (NER) come from `encoded` or are given.
    """
    path = str(dataset.paths[0]) if dataset.paths else ""
    if encoded is not None and cut is None and windowed is None:
        if task == "ner":
            windowed = sum(len(encoding.windows) > 1 for encoding in encoded.encodings)
        else:
            cut = encoded.truncated
    record: dict[str, Any] = {
        "file": held_out_of or path,
        "format": dataset.layout,
        "quoting": dataset.quoting,
        "examples_read": len(dataset),
        "examples_used": used,
        "max_length": max_length,
    }
    if held_out_of:
        record["held_out"] = "a seeded 10% of the training file (its rows are counted under train)"
    else:
        record["skipped"] = {"count": len(dataset.skipped), "rows": _rows(path, dataset.skipped)}
        record["dropped"] = dict(dataset.dropped)
        if task == "ner":
            record["repaired"] = {"count": len(dataset.repaired), "rows": _rows(path, dataset.repaired)}
    if task == "ner":
        record["windowed"] = windowed or 0
    else:
        record["cut"] = cut or 0
    return record


def cut_warnings(intake: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A warning per split where more than CUT_WARNING_SHARE of the texts were cut at `max_length`."""
    warnings = []
    for split, record in intake.items():
        cut, used = record.get("cut", 0), record["examples_used"]
        if used and cut / used > CUT_WARNING_SHARE:
            warnings.append(
                f"{cut} of {used} {split} texts ({cut / used:.0%}) are longer than {record['max_length']} tokens and "
                "were cut; raise --max-length to keep more of each text"
            )
    return warnings


def intake_lines(intake: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The record as console lines: one per split, then the first skipped and repaired rows, then warnings."""
    lines: list[str] = []
    for split, record in intake.items():
        how = ", ".join(filter(None, [record.get("format"), record.get("quoting") and f"{record['quoting']} quoting"]))
        parts = [f"{record['examples_used']} of {record['examples_read']} examples used"]
        if "held_out" in record:
            parts[0] = f"{record['examples_used']} examples held out of train"
        if "skipped" in record:
            parts.append(f"{record['skipped']['count']} rows skipped")
        parts += [f"{n} {reason}s dropped" for reason, n in record.get("dropped", {}).items()]
        if "repaired" in record:
            parts.append(f"{record['repaired']['count']} IOB tags repaired")
        if "cut" in record:
            parts.append(f"{record['cut']} texts cut at {record['max_length']} tokens")
        if "windowed" in record:
            parts.append(f"{record['windowed']} sentences read in windows of {record['max_length']} tokens")
        lines.append(f"{split:<6} {record['file']} ({how or '?'}): {'; '.join(parts)}")
        for kind in ("skipped", "repaired"):
            if kind not in record:
                continue
            rows, count = record[kind]["rows"], record[kind]["count"]
            lines += [f"  {kind} {r['file']}:{r['line']}: {r['reason']}" for r in rows[:SHOWN]]
            if count > SHOWN:
                lines.append(f"  … and {count - SHOWN} more {kind} (run.json lists the first {RECORDED})")
    lines += [f"warning: {w}" for w in cut_warnings(intake)]
    return lines
