"""`python -m langadapt.serve`: the `langadapt serve` command on its own."""

from __future__ import annotations

import typer

from langadapt.console import friendly_errors
from langadapt.serve.cli_serve import serve

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(friendly_errors(serve))

if __name__ == "__main__":
    app()
