"""`embedlab migrate`: turn a format-1 store (one `_manifest.json`) into format 2 (a commit log)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedlab.errors import reported


def migrate(
    out: Annotated[Path, typer.Argument(help="A format-1 store folder (it holds _manifest.json).")],
) -> None:
    """Convert a format-1 store in place: its manifest becomes the commit log's first checkpoint.

    Nothing is re-embedded and no partition file is renamed; a crash midway leaves a format-1 store
    that migrates again. Writers (embed, update, compact, stream) refuse a format-1 store and name
    this command; readers read either format.
    """
    from embedlab.store import Store

    with reported():
        n = Store(out).migrate()
    typer.echo(f"{out}: migrated to format 2 ({n:,} partitions; nothing re-embedded)")
