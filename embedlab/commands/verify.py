"""`embedlab verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from embedlab.errors import EXIT_FAILED


def verify(
    out: Annotated[Path, typer.Argument(help="Store folder written by `embedlab embed`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the problems as JSON.")] = False,
) -> None:
    """Check a store: manifest, file checksums, Parquet/FAISS consistency, stray files."""
    from embedlab.store import Store

    problems = Store(out).verify(deep=True)
    if as_json:
        typer.echo(json.dumps({"store": str(out), "ok": not problems, "problems": problems}, indent=2))
    else:
        for p in problems:
            typer.echo(p)
        typer.echo(f"{out}: " + ("OK" if not problems else f"{len(problems)} problem(s); "
                                 "re-run the same `embedlab embed` command to repair"))
    if problems:
        raise typer.Exit(EXIT_FAILED)
