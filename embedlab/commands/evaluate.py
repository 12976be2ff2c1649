"""`embedlab eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def eval_(
    out: Annotated[Path, typer.Argument(help="Store folder written by `embedlab embed`.")],
    data: Annotated[Path, typer.Option(help="BEIR folder: corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv.")],
    split: Annotated[str, typer.Option(help="Qrels split; its queries are those the qrels name.")] = "test",
    k: Annotated[int, typer.Option("--k", help="Documents retrieved per query.")] = 100,
    query_prefix: Annotated[Optional[str], typer.Option(
        help="Text put before each query. Default: the model's own query prompt ('' for all-MiniLM-L6-v2).")] = None,
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
    from embedlab.beir import BeirError
    from embedlab.cli import fail
    from embedlab.evaluate import evaluate
    from embedlab.store import StoreError

    try:
        result = evaluate(out, data, split=split, k=k, query_prefix=query_prefix,
                          ignore_identical_ids=not keep_identical_ids)
    except (StoreError, BeirError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(result.table())


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)
