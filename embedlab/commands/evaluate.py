"""`embedlab eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from embedlab.errors import reported, usage


def require_beir_folder(data: Path, option: str = "--data") -> None:
    """Raise ``ValueError`` unless ``data`` is a folder (BEIR: corpus, queries.jsonl, qrels/)."""
    if data.is_dir():
        return
    hint = f"; did you mean {data.parent}?" if data.is_file() and (data.parent / "qrels").is_dir() else ""
    what = "is a file" if data.is_file() else "does not exist"
    raise ValueError(f"{option} must be a BEIR folder (corpus.jsonl[.gz], queries.jsonl, "
                     f"qrels/<split>.tsv); {data} {what}{hint}")


def eval_(
    out: Annotated[Path, typer.Argument(help="Store folder written by `embedlab embed`.")],
    data: Annotated[Path, typer.Option(
        metavar="DIR", help="BEIR folder: corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv.")],
    split: Annotated[str, typer.Option(help="Qrels split; its queries are those the qrels name.")] = "test",
    k: Annotated[int, typer.Option("--k", min=1, help="Documents retrieved per query.")] = 100,
    query_prefix: Annotated[Optional[str], typer.Option(
        help="Text put before each query. Default: the model's own query prompt ('' for all-MiniLM-L6-v2).")
    ] = None,
    keep_identical_ids: Annotated[bool, typer.Option(
        "--keep-identical-ids", help="Keep a retrieved document whose id equals the query id "
                                     "(BEIR drops it by default).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result JSON to stdout.")] = False,
) -> None:
    """Score a store on a BEIR split: nDCG@10, Recall@10/@100, MRR@10, MAP@100 (pytrec_eval).

    Qrels lines naming documents absent from the corpus are kept, as BEIR keeps them; a metric cut deeper
    than --k is measured and named at --k. Writes OUT/_eval/<dataset>-<split>-k<K>[...].json (one per
    setting: metrics, config, model, store checksum) and a TREC run file beside it.
    """
    from embedlab.evaluate import evaluate
    from embedlab.store import Store

    with reported():
        Store(out).require_verified()  # a missing or damaged store is named first, whatever --data is
    with usage():
        require_beir_folder(data)
    with reported():
        result = evaluate(out, data, split=split, k=k, query_prefix=query_prefix,
                          ignore_identical_ids=not keep_identical_ids)
    typer.echo(json.dumps(result.to_json(), indent=2) if as_json else result.table())
