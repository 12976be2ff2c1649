"""`embedlab search` and `embedlab merge`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from embedlab.errors import UsageError, reported


def search(
    out: Annotated[Path, typer.Argument(help="Store folder written by `embedlab embed`.")],
    query: Annotated[str, typer.Argument(help="The question to search for (not empty).")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Results to return.")] = 10,
    documents: Annotated[bool, typer.Option(
        "--documents", help="Rank documents (a document scores its best chunk) instead of chunks.")] = False,
    query_prefix: Annotated[Optional[str], typer.Option(
        help="Text put before the query (e.g. bge's instruction). Default: the model's own query prompt.")
    ] = None,
    merged: Annotated[bool, typer.Option("--merged", help="Search the merged index, not the shards.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON: rank, score, chunk_id, doc_id and text of each result.")] = False,
) -> None:
    """Search a store: top chunks (or documents) with their document ids, scores and text."""
    from embedlab.search import Searcher

    with reported():
        if not query.strip():
            raise UsageError("the query is empty; give the text to search for, e.g. "
                             f"embedlab search {out} \"what causes X?\"")
        searcher = Searcher(out, query_prefix=query_prefix, merged=merged)
        find = searcher.search_documents if documents else searcher.search
        hits = find([query], k, text=True)[0]
    if as_json:
        typer.echo(json.dumps({"query": query, "level": "document" if documents else "chunk",
                               "results": [h.to_json() for h in hits]}, indent=2))
        return
    if documents:
        typer.echo("documents ranked by their best chunk's score (max over chunks)")
    for h in hits:
        text = " ".join((h.text or "").split())
        typer.echo(f"{h.rank:>3}  {h.score:.4f}  {h.doc_id}  [{h.chunk_id}]\n     {text[:300]}")


def merge(out: Annotated[Path, typer.Argument(help="Store folder written by `embedlab embed`.")]) -> None:
    """Join every FAISS shard of a store into one index (OUT/_merged/index.faiss)."""
    from embedlab.search import build_merged_index

    with reported():
        typer.echo(str(build_merged_index(out)))
