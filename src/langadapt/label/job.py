"""One labelling job: read the input in chunks, label each chunk, commit it, resume where a killed run stopped.

    job = LabelJob(LabelSettings(input="dev.txt", output="dev.labelled.jsonl", tasks=("ner", "sentiment"), lang="yo"))
    summary = job.run()

The job refuses to resume into a partial output written by another job: the options that shape the output
(tasks, language or language column, text column, formats, base model, stores, errors path), the input's
fingerprint (size, modification time, first and last MiB) and the adapter versions it already used must all
be the same. Where they are not, it says what changed and how to start again (`--restart` or another path).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import IO, Any

from langadapt.errors import LangadaptError
from langadapt.inference.errors import ServeError
from langadapt.inference.language_id import AUTO, is_auto
from langadapt.label.checkpoint import Checkpoint, Partial, input_fingerprint, write_json
from langadapt.label.formats import Labels, Position, Row, input_format, output_format
from langadapt.label.options import LabelSettings
from langadapt.label.ray_data import RayRunner
from langadapt.label.readers import Reader, reader_for
from langadapt.label.runners import ChunkResult, LocalRunner, Runner
from langadapt.label.writers import Writer
from langadapt.paths import atomic_write

__all__ = ["PAUSE_ENV", "RESTART_HINT", "LabelJob"]

PAUSE_ENV = "LANGADAPT_LABEL_PAUSE"  # test hook: seconds to sleep at each commit step (makes kill timing easy)
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})  # a disk that is full or cannot be written
RESTART_HINT = "rerun with --restart to discard it and label from the start, or write to another -o path"


def _pause() -> None:
    seconds = float(os.environ.get(PAUSE_ENV, "0") or 0)
    if seconds > 0:
        time.sleep(seconds)


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


class LabelJob:
    """Runs one labelling job to completion, resuming a partial one; returns the summary."""

    def __init__(self, options: LabelSettings, notify: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.notify = notify or (lambda message: print(message, file=sys.stderr))

    # ----------------------------------------------------------------------------------------- checks

    def _validate(self) -> tuple[str, str]:
        o = self.options
        if (o.lang is None) == (o.lang_column is None):
            raise LangadaptError(
                "say which language the texts are in", "give --lang CODE (one language) or --lang-column COLUMN"
            )
        if not o.input.is_file():
            raise LangadaptError(f"no input file {o.input}", "check the path")
        if o.output.resolve() == o.input.resolve() or o.errors_path.resolve() == o.input.resolve():
            raise LangadaptError("the output would overwrite the input", "choose another -o path")
        source = input_format(o.input, o.input_format)
        return source, output_format(o.output, o.output_format, source, o.tasks)

    def _job_key(self, runner: Runner, source: str, target: str, lang: str | None) -> dict[str, Any]:
        o = self.options
        defaults = o.defaults_dir()
        return {
            "input": str(o.input.resolve()),
            "tasks": list(o.tasks),
            "lang": lang,
            "lid_threshold": o.lid_threshold,
            "lang_column": o.lang_column,
            "text_column": o.text_column,
            "input_format": source,
            "output_format": target,
            "base": o.base,
            "base_fingerprint": runner.fingerprint,
            "store": str(runner.store_root.resolve()),
            "defaults": str(defaults.resolve()) if defaults is not None else None,
            "errors": str(o.errors_path.resolve()),
        }

    def _checkpoint(
        self, partial: Partial, job: dict[str, Any], fingerprint: dict[str, Any], runner: Runner, first: Position
    ) -> Checkpoint | dict[str, Any]:
        """The checkpoint to continue from (new or resumed), or the summary of this job finished earlier."""
        o = self.options
        if o.restart:
            partial.clear()
            o.summary_path.unlink(missing_ok=True)
        checkpoint = partial.load()
        if checkpoint is not None:
            changed = _changes(checkpoint.job, job)
            if changed:
                raise LangadaptError(
                    f"{partial.dir} holds partial output of a job with other options ({'; '.join(changed)})",
                    RESTART_HINT,
                )
            changed = _changes(checkpoint.input, fingerprint)
            if changed:
                raise LangadaptError(
                    f"{o.input} changed since {partial.dir} was written ({'; '.join(changed)}): "
                    "its labelled rows would not match the input any more",
                    RESTART_HINT,
                )
            for task, languages in checkpoint.adapters.items():
                for language, record in languages.items():
                    try:
                        now = str(runner.resolve(task, language).key)
                    except ServeError as err:
                        now = f"none ({err.detail})"
                    if now != record["stack"]:
                        raise LangadaptError(
                            f"the adapters changed since {partial.dir} was written: {task} in {language} was "
                            f"labelled by {record['stack']}, now it would be {now}",
                            RESTART_HINT,
                        )
            return checkpoint
        summary = self._finished_summary(job, fingerprint)
        if summary is not None:
            partial.remove()
            return summary
        if o.output.exists() and not o.restart:
            partial.remove()  # nothing of this job is in it
            if o.summary_path.is_file():
                raise LangadaptError(
                    f"{o.output} already exists, labelled by a job with other options or from another input",
                    "--restart overwrites it; or choose another -o path",
                )
            raise LangadaptError(f"{o.output} already exists", "--restart overwrites it; or choose another -o path")
        partial.clear()
        counts: dict[str, Any] = {"rows": 0, "labelled": 0, "errors": 0, "blank_lines": 0, "fields_not_written": 0}
        checkpoint = Checkpoint(job=job, input=fingerprint, position=first, counts={**counts, "errors_by_kind": {}})
        partial.save(checkpoint)
        return checkpoint

    def _finished_summary(self, job: dict[str, Any], fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        o = self.options
        try:
            stored = json.loads(o.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        record = stored.get("_job", {})
        if (
            record.get("job") == job
            and record.get("input") == fingerprint
            and o.output.is_file()
            and o.output.stat().st_size == record.get("output_bytes")
        ):
            return {k: v for k, v in stored.items() if not k.startswith("_")} | {"already_complete": True}
        return None

    # ------------------------------------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        """Label the input into the output (resuming if a partial output of this job exists); the summary."""
        started = time.perf_counter()
        o = self.options
        source, target = self._validate()
        reader = reader_for(source, o.input, o.text_column, o.lang_column)
        first = reader.open()
        writer = Writer(
            target,
            reader.columns,
            o.tasks,
            source=source,
            text_column=o.text_column,
            layout=reader.layout,
            detect=is_auto(o.lang),
        )
        if writer.replaced:
            self.notify(f"note: the input's columns {', '.join(writer.replaced)} are replaced by the new labels")
        lang = None
        if is_auto(o.lang):
            lang = AUTO
        elif o.lang is not None:
            from langadapt.models.language import canonical_language

            lang = canonical_language(o.lang)
        runner = self._runner()
        try:
            if lang is not None and lang != AUTO:
                for task in o.tasks:
                    try:
                        runner.resolve(task, lang)
                    except ServeError as err:
                        raise LangadaptError(err.detail, err.hint) from None
            job = self._job_key(runner, source, target, lang)
            fingerprint = input_fingerprint(o.input)
            o.output.parent.mkdir(parents=True, exist_ok=True)
            partial = Partial(o.output, writer.suffix)
            with _writing(partial):
                partial.lock()
                try:
                    state = self._checkpoint(partial, job, fingerprint, runner, first)
                    if isinstance(state, dict):
                        return state
                    partial.drop_uncommitted(state.chunks)
                    resumed_from = state.position.row
                    label_started = time.perf_counter()
                    if not state.done:
                        self._label(runner, reader, writer, partial, state, lang)
                    summary = self._finish(
                        partial, writer, state, job, fingerprint, resumed_from, started, label_started
                    )
                    return {**summary, **runner.stats}
                finally:
                    partial.unlock()
        finally:
            runner.close()

    def _runner(self) -> Runner:
        o = self.options
        if o.ray:
            return RayRunner(o, address=o.ray_address, actors=o.ray_actors)
        return LocalRunner(o)

    def _label(
        self, runner: Runner, reader: Reader, writer: Writer, partial: Partial, state: Checkpoint, lang: str | None
    ) -> None:
        from tqdm.auto import tqdm

        o = self.options
        size = o.input.stat().st_size
        exact = reader.exact_total()
        bar = tqdm(
            total=exact,
            initial=state.position.row,
            unit="row",
            desc=f"labelling {o.input.name}",
            disable=None if o.progress is None else not o.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        first_offset, first_row = state.position.offset, state.position.row
        try:
            for chunk in runner.chunks(reader, state.position, o, lang):
                self._commit(partial, writer, state, chunk)
                bar.update(len(chunk.rows))
                read = state.position.offset - first_offset
                if exact is None and read > 0:  # estimate the total from the rows per byte read so far
                    per_byte = (state.position.row - first_row) / read
                    bar.total = state.position.row + round(per_byte * max(0, size - state.position.offset))
                    bar.refresh()
        finally:
            bar.close()
        state.done = True
        partial.save(state)

    def _commit(self, partial: Partial, writer: Writer, state: Checkpoint, chunk: ChunkResult) -> None:
        """Commit one chunk: its rows file, its errors file, then the checkpoint that counts them."""
        counts = state.counts
        for (task, language), record in chunk.adapters.items():
            known = state.adapters.setdefault(task, {}).get(language)
            if known is not None and known["stack"] != record["stack"]:
                raise LangadaptError(
                    f"the adapters changed during the job: {task} in {language} was labelled by {known['stack']}, "
                    f"then by {record['stack']}",
                    RESTART_HINT,
                )
            state.adapters[task][language] = record
        if chunk.rows:
            index = state.chunks
            dropped = atomic_write(partial.chunk(index), lambda f: writer.write_chunk(chunk.rows, chunk.labels, f))
            _pause()
            errors = [_error_line(row, labels) for row, labels in zip(chunk.rows, chunk.labels, strict=True)]
            lines = [e for e in errors if e is not None]
            if lines:
                atomic_write(partial.errors(index), lambda f: f.write("".join(lines).encode("utf-8")))
            _pause()
            kinds = Counter(labels.kind for labels in chunk.labels if labels.error is not None)
            counts["rows"] += len(chunk.rows)
            counts["errors"] += len(lines)
            counts["labelled"] += len(chunk.rows) - len(lines)
            counts["fields_not_written"] += dropped
            by_kind = counts.setdefault("errors_by_kind", {})
            for kind, n in kinds.items():
                by_kind[str(kind)] = by_kind.get(str(kind), 0) + n
            state.chunks += 1
        counts["blank_lines"] += chunk.blank_lines
        state.position = chunk.position
        partial.save(state)
        _pause()

    def _finish(
        self,
        partial: Partial,
        writer: Writer,
        state: Checkpoint,
        job: dict[str, Any],
        fingerprint: dict[str, Any],
        resumed_from: int,
        started: float,
        label_started: float,
    ) -> dict[str, Any]:
        """Assemble the output and the errors file, write the summary, remove the partial directory."""
        o = self.options
        committed = list(partial.committed(state.chunks))

        def errors(out: IO[bytes]) -> None:
            for _, path in committed:
                if path.is_file():
                    out.write(path.read_bytes())

        atomic_write(o.errors_path, errors)
        atomic_write(o.output, lambda out: writer.assemble([chunk for chunk, _ in committed], out))
        labelled_now = state.counts["rows"] - resumed_from
        label_seconds = time.perf_counter() - label_started  # reading, labelling, writing: all but loading
        summary: dict[str, Any] = {
            "input": str(o.input),
            "output": str(o.output),
            "errors_file": str(o.errors_path),
            "input_format": job["input_format"],
            "output_format": job["output_format"],
            "tasks": list(o.tasks),
            "lang": job["lang"],
            "lang_column": o.lang_column,
            **{k: v for k, v in state.counts.items()},
            "resumed_from_row": resumed_from,
            "seconds": round(time.perf_counter() - started, 3),
            "label_seconds": round(label_seconds, 3),
            "rows_per_s": round(labelled_now / label_seconds, 2) if label_seconds > 0 and labelled_now else None,
            "chunks": state.chunks,
            "adapters": state.adapters,
            "runner": "ray" if o.ray else "local",
        }
        if writer.replaced:
            summary["replaced_columns"] = writer.replaced
        stored = {**summary, "_job": {"job": job, "input": fingerprint, "output_bytes": o.output.stat().st_size}}
        write_json(o.summary_path, stored)
        _pause()
        partial.remove()
        return summary


@contextlib.contextmanager
def _writing(partial: Partial) -> Iterator[None]:
    """Turn a full or unwritable disk into an error that says what is kept and that the same command resumes.

    Every file is written through a temporary renamed into place (removed when the write fails), so what is
    committed stays whole and the next run starts after the last committed chunk.
    """
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        where = err.filename if isinstance(err.filename, str) else str(partial.dir)
        why = "no space left on the device" if err.errno in (errno.ENOSPC, errno.EDQUOT) else err.strerror
        committed = partial.load()  # what the next run continues from (a failed save left the previous one)
        if committed is not None and committed.done:
            kept = f"every row is labelled and kept in {partial.dir}; only the output is missing"
        else:
            rows = committed.position.row if committed is not None else 0
            kept = f"the first {rows} input rows are labelled and kept in {partial.dir}"
        raise LangadaptError(
            f"cannot write {where} ({why}): {kept}; nothing half-written was left",
            "free space (or make it writable) and run the same command again: it continues from there",
        ) from None


def _error_line(row: Row, labels: Labels) -> str | None:
    """The errors-file line of a row that was not (fully) labelled."""
    if labels.error is None:
        return None
    entry: dict[str, Any] = {"row": row.number}
    if row.line is not None:
        entry["line"] = row.line
    entry["kind"] = labels.kind
    entry["reason"] = labels.error
    if row.lang is not None:
        entry["lang"] = row.lang
    if row.raw is not None:
        entry["raw"] = row.raw
    return json.dumps(entry, ensure_ascii=False) + "\n"
