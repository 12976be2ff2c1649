"""`embedlab verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from embedlab.errors import EXIT_FAILED


def verify(
    out: Annotated[Path, typer.Argument(help="Store folder written by `embedlab embed`.")],
    deep: Annotated[bool, typer.Option(
        "--deep/--quick", help="--deep (the default): every file's sha256, Parquet/FAISS rows and ids, no "
        "chunk live twice. --quick: what opening the store checks (the commit log, each file's size).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the problems as JSON.")] = False,
) -> None:
    """Check a store: commit log, file sizes and checksums, Parquet/FAISS consistency, stray files."""
    from embedlab.store import Store

    store = Store(out)
    problems = store.verify(deep=True) if deep else store.quick_problems()
    if as_json:
        typer.echo(json.dumps({"store": str(out), "ok": not problems, "problems": problems}, indent=2))
    else:
        for p in problems:
            typer.echo(p)
        typer.echo(f"{out}: " + ("OK" if not problems else f"{len(problems)} problem(s); "
                                 "re-run the same `embedlab embed` command to repair"))
    if problems:
        raise typer.Exit(EXIT_FAILED)
