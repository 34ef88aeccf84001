"""The `serve` command: flags, worker counts and refusals before anything starts."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from langadapt.errors import LangadaptError
from langadapt.serve.cli_serve import parse_workers, register

TASKS = ("ner", "sentiment", "topic")


def app() -> typer.Typer:
    cli = typer.Typer()

    @cli.callback()
    def main() -> None:
        """A stand-in for the main CLI."""

    register(cli)
    return cli


def test_help_lists_the_flags() -> None:
    result = CliRunner().invoke(app(), ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in ("--store", "--base", "--backend", "--device", "--workers", "--max-batch-size", "--batch-timeout"):
        assert flag in result.output
    for flag in ("--max-texts", "--max-chars", "--max-body-bytes", "--max-queue", "--api-keys-file", "--fallback"):
        assert flag in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "tensorrt"], "unknown backend"),
        (["--device", "tpu"], "unknown device"),
        (["--host", "10.0.0.1"], "cannot listen"),
    ],
)
def test_bad_choices_are_refused_before_starting(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app(), ["serve", *args])
    assert result.exit_code == 2
    assert message in result.output and "hint:" in result.output


def test_worker_counts() -> None:
    assert parse_workers("2", TASKS) == 2
    assert parse_workers("ner=2", TASKS) == {"ner": 2, "sentiment": 1, "topic": 1}
    assert parse_workers("ner=2,topic=3", TASKS) == {"ner": 2, "sentiment": 1, "topic": 3}
    for bad in ("0", "many", "pos=2", "ner=0", "ner=x"):
        with pytest.raises(LangadaptError):
            parse_workers(bad, TASKS)


def test_sigterm_stops_the_main_process_like_ctrl_c_and_ends_forked_workers_quietly() -> None:
    """The main process gets KeyboardInterrupt (LitServe's shutdown path); a worker dies of the signal, no traceback."""
    import multiprocessing
    import signal

    from langadapt.serve.cli_serve import _interrupt

    with pytest.raises(KeyboardInterrupt):
        _interrupt(signal.SIGTERM, None)
    worker = multiprocessing.get_context("fork").Process(target=_interrupt, args=(signal.SIGTERM, None))
    worker.start()
    worker.join(timeout=30)
    assert worker.exitcode == -signal.SIGTERM  # killed by the signal; an exception would exit with 1
