"""`embedlab compress`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from embedlab.commands.evaluate import require_beir_folder
from embedlab.experiments.compress import DEFAULT_METHODS, CompressConfig
from embedlab.errors import reported, usage


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
    ] = ",".join(m.value for m in DEFAULT_METHODS),
    eval_data: Annotated[Optional[Path], typer.Option(
        "--eval", help="BEIR folder to score each tier on (nDCG@10, Recall@100). "
                       "Without it, only top-10 overlap with exact search is measured.")] = None,
    split: Annotated[str, typer.Option(help="Qrels split.")] = CompressConfig.split,
    k: Annotated[int, typer.Option("--k", min=1, help="Documents retrieved per query.")] = CompressConfig.k,
    rescore_multiplier: Annotated[int, typer.Option(
        min=1, help="binary+rescore: rescore the top k x this many Hamming candidates.")
    ] = CompressConfig.rescore_multiplier,
    rescore_with: Annotated[str, typer.Option(help="Rescoring vectors: float32 or int8.")
                            ] = CompressConfig.rescore_with.value,
    int8_percentile: Annotated[float, typer.Option(
        min=50, max=100,
        help="int8 ranges: per-dimension [100-p, p] percentiles of a corpus sample; 100 = min/max.")
    ] = CompressConfig.int8_percentile,
    pq_m: Annotated[Optional[int], typer.Option(min=1, help="PQ sub-quantizers (bytes). Default: dim / 8.")
                    ] = CompressConfig.pq_m,
    pq_nprobe: Annotated[int, typer.Option(min=1, help="IVF-PQ lists visited per query.")
                         ] = CompressConfig.pq_nprobe,
    threads: Annotated[int, typer.Option(min=1, help="FAISS threads for building and searching.")
                       ] = CompressConfig.threads,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per search call when timing.")
                          ] = CompressConfig.batch_size,
    repeats: Annotated[int, typer.Option(min=1, help="Timed passes over the queries (median reported).")
                       ] = CompressConfig.repeats,
    subset: Annotated[bool, typer.Option(
        "--subset", help="Score only qrels whose document is in the store (a store of part of a corpus).")
    ] = CompressConfig.subset,
    query_prefix: Annotated[Optional[str], typer.Option(
        help="Text put before each query. Default: the model's own query prompt.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Cheaper vectors: Matryoshka truncation, float16, int8, binary and PQ tiers, quality against cost.

    Builds every tier from the store's vectors (no re-encoding), scores it as `embedlab eval`
    does, and writes OUT/_compress/compress.csv (bytes searched and bytes stored per vector),
    compress.png (nDCG@10 against stored bytes per vector, Pareto frontier marked), config.json
    and each tier's index.
    """
    from embedlab.experiments.compress import compress as run
    from embedlab.store import Store

    with reported():
        Store(out).require_verified()
    if eval_data is not None:
        with usage():
            require_beir_folder(eval_data, "--eval")
    with reported():
        result = run(out, dims=_ints(dims), methods=[m.strip() for m in methods.split(",") if m.strip()],
                     eval_data=eval_data, split=split, k=k, rescore_multiplier=rescore_multiplier,
                     rescore_with=rescore_with, int8_percentile=int8_percentile, pq_m=pq_m,
                     pq_nprobe=pq_nprobe, threads=threads, batch_size=batch_size, repeats=repeats,
                     subset=subset, query_prefix=query_prefix)
    if as_json:
        typer.echo(json.dumps({"rows": result.rows, "machine": result.machine, "csv": result.csv_path,
                               "plot": result.plot_path}, indent=2))
        return
    m = result.machine
    typer.echo(f"{m['cpu']}, {m['cores']} cores, faiss threads {m['faiss_threads']}, "
               f"batch {result.config['batch_size']} queries")
    typer.echo(result.table())
    typer.echo(f"table: {result.csv_path}\nplot:  {result.plot_path}")

