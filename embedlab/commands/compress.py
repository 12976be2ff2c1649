"""`embedlab compress`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def compress(
    out: Annotated[Path, typer.Argument(help="Store folder written by `embedlab embed`.")],
    dims: Annotated[str, typer.Option(
        help="Comma-separated truncation dimensions (first d components, renormalised). "
             "Default: the store's dimension.")] = "",
    methods: Annotated[str, typer.Option(
        help="Comma-separated tiers: float32, float16, int8, int8-sym, binary, binary+rescore, pq.")
    ] = "float32,float16,int8,binary,binary+rescore,pq",
    eval_data: Annotated[Optional[Path], typer.Option(
        "--eval", help="BEIR folder to score each tier on (nDCG@10, Recall@100). "
                       "Without it, only top-10 overlap with exact search is measured.")] = None,
    split: Annotated[str, typer.Option(help="Qrels split.")] = "test",
    k: Annotated[int, typer.Option("--k", help="Documents retrieved per query.")] = 100,
    rescore_multiplier: Annotated[int, typer.Option(
        help="binary+rescore: rescore the top k x this many Hamming candidates.")] = 4,
    rescore_with: Annotated[str, typer.Option(help="Rescoring vectors: float32 or int8.")] = "float32",
    int8_percentile: Annotated[float, typer.Option(
        help="int8 ranges: per-dimension [100-p, p] percentiles of a corpus sample; 100 = min/max.")] = 99.9,
    pq_m: Annotated[Optional[int], typer.Option(help="PQ sub-quantizers (bytes). Default: dim / 8.")] = None,
    pq_nprobe: Annotated[int, typer.Option(help="IVF-PQ lists visited per query.")] = 16,
    threads: Annotated[int, typer.Option(help="FAISS threads for building and searching.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Queries per search call when timing.")] = 64,
    repeats: Annotated[int, typer.Option(help="Timed passes over the queries (median reported).")] = 5,
    subset: Annotated[bool, typer.Option(
        "--subset", help="Score only qrels whose document is in the store (a store of part of a corpus).")
    ] = False,
    query_prefix: Annotated[Optional[str], typer.Option(
        help="Text put before each query. Default: the model's own query prompt.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Cheaper vectors: Matryoshka truncation, float16, int8, binary and PQ tiers, quality against cost.

    Builds every tier from the store's vectors (no re-encoding), scores it as `embedlab eval`
    does, and writes OUT/_compress/compress.csv, compress.png (nDCG@10 against bytes per
    vector, Pareto frontier marked), config.json and each tier's index.
    """
    from embedlab.beir import BeirError
    from embedlab.cli import fail
    from embedlab.experiments.compress import compress as run
    from embedlab.store import StoreError

    try:
        result = run(out, dims=_ints(dims), methods=[m.strip() for m in methods.split(",") if m.strip()],
                     eval_data=eval_data, split=split, k=k, rescore_multiplier=rescore_multiplier,
                     rescore_with=rescore_with, int8_percentile=int8_percentile, pq_m=pq_m,
                     pq_nprobe=pq_nprobe, threads=threads, batch_size=batch_size, repeats=repeats,
                     subset=subset, query_prefix=query_prefix)
    except (StoreError, BeirError, FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps({"rows": result.rows, "machine": result.machine, "csv": result.csv_path,
                               "plot": result.plot_path}, indent=2))
        return
    m = result.machine
    typer.echo(f"{m['cpu']}, {m['cores']} cores, faiss threads {m['faiss_threads']}, "
               f"batch {result.config['batch_size']} queries")
    typer.echo(result.table())
    typer.echo(f"table: {result.csv_path}\nplot:  {result.plot_path}")


def register(app: typer.Typer) -> None:
    app.command()(compress)
