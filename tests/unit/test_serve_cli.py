"""The `serve` command: flags, worker counts and refusals before anything starts."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from langadapt.serve.cli_serve import register
from langadapt.serve.metrics import MULTIPROC_ENV

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
    for flag in ("--allowed-hosts", "--drain-timeout"):
        assert flag in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "tensorrt"], "unknown backend"),
        (["--device", "tpu"], "unknown device"),
        (["--host", "10.0.0.1"], "cannot listen"),
        (["--allowed-hosts", "http://example.com"], "not a host name"),
    ],
)
def test_bad_choices_are_refused_before_starting(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    result = CliRunner().invoke(app(), ["serve", *args])
    assert result.exit_code == 2
    assert message in result.output and "hint:" in result.output
    assert MULTIPROC_ENV not in os.environ, "refused before metrics were set up (nothing started)"


def test_a_port_in_use_is_refused_before_an_admin_key_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGADAPT_CACHE", str(tmp_path))
    monkeypatch.delenv("LANGADAPT_ADMIN_KEYS", raising=False)
    monkeypatch.delenv("LANGADAPT_API_KEYS_FILE", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app(), ["serve", "--port", str(port)])
    assert result.exit_code == 2 and "already in use" in result.output, result.output
    assert not (tmp_path / "serve").exists()


def test_worker_count_is_one_number_for_every_task() -> None:
    """One pool serves every task: `--workers` is a count, the old per-task form is refused with exit 2."""
    for bad in ("0", "many", "ner=2"):
        result = CliRunner().invoke(app(), ["serve", "--workers", bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "--workers" in result.output


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
