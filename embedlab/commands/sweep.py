"""`embedlab sweep`: chunks/s, tokens/s and peak memory per batch size and precision, and the knee."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from embedlab.config import DEFAULT_MODEL

EXIT_FAILED, EXIT_USAGE = 1, 2
CPU_BATCHES, GPU_BATCHES = "1,2,4,...,128", "1,2,4,...,2048"


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"embedlab: error: {message}", err=True)
    return typer.Exit(code)


def sweep(
    batch_sizes: Annotated[Optional[str], typer.Option(
        help="Batch sizes, comma-separated; 1,2,4,...,2048 doubles up to 2048. "
             f"Default: {GPU_BATCHES} on a GPU, {CPU_BATCHES} on CPU.")] = None,
    dtypes: Annotated[str, typer.Option(
        help="Precisions to sweep; one the device cannot run is skipped and the reason recorded.")]
    = "fp32,fp16,bf16,int8",
    data: Annotated[Optional[Path], typer.Option(
        help="Corpus to chunk. Default: ../shared/data/scifact/corpus.jsonl.gz when present, "
             "else the small bundled corpus.")] = None,
    docs: Annotated[int, typer.Option(help="Documents read and chunked.")] = 200,
    chunks: Annotated[int, typer.Option(help="Chunks sampled from them (seeded): one pass encodes them all.")]
    = 256,
    chunk_tokens: Annotated[Optional[int], typer.Option(
        help="Tokens per chunk, special tokens included. Default: the model's max sequence length.")] = None,
    overlap: Annotated[int, typer.Option(help="Tokens shared by consecutive chunks of a document.")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed passes per point; the median is reported.")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed passes before each point's timed passes.")] = 1,
    model: Annotated[str, typer.Option(
        help="Local model folder or hub name (from the local hub cache when offline).")] = DEFAULT_MODEL,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda[:N].")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="Torch threads on CPU. Default: torch's.")] = None,
    compile: Annotated[Optional[bool], typer.Option(
        "--compile/--no-compile", help="torch.compile the encoder. Default: off.")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed of the chunk sample and pass order.")] = 0,
    out: Annotated[Path, typer.Option(
        help="Folder for sweep.csv (tidy rows), sweep.json (fits, read by `plan --from-sweep`), sweep.png.")]
    = Path("runs/sweep"),
) -> None:
    """Measure encoder throughput per batch size and precision on real chunks, fit
    r(b) = r_max b / (b + b_half) per precision, and report the knee (90% of r_max)."""
    from embedlab.cli import default_corpus
    from embedlab.config import EncodeConfig
    from embedlab.corpus import CorpusError
    from embedlab.encoder import ModelNotFoundError, pick_device
    from embedlab.experiments.sweeps import SweepConfig, describe_machine, run_sweep
    from embedlab.planner import parse_ints

    try:
        encode = EncodeConfig(model=model, device=device, torch_threads=threads, compile=compile)
        default = GPU_BATCHES if pick_device(device).startswith("cuda") else CPU_BATCHES
        cfg = SweepConfig(corpus=data or default_corpus(), docs=docs, chunks=chunks,
                          chunk_tokens=chunk_tokens, overlap=overlap,
                          batch_sizes=tuple(parse_ints(batch_sizes or default)),
                          dtypes=tuple(d.strip() for d in dtypes.split(",") if d.strip()),
                          warmup=warmup, repeats=repeats, seed=seed, encode=encode)
    except ValueError as e:
        raise _fail(str(e), EXIT_USAGE) from None
    try:
        result = run_sweep(cfg, progress=_progress)
    except (CorpusError, ModelNotFoundError, ValueError) as e:
        raise _fail(str(e), EXIT_FAILED) from None
    paths = result.save(out)
    typer.echo(describe_machine(result.machine))
    typer.echo(result.table())
    if result.fits:
        typer.echo("\n" + result.fits_table())
    typer.echo("\nwrote " + ", ".join(str(p) for p in paths))


def _progress(row: dict) -> None:
    if row["status"] == "ok":
        typer.echo(f"{row['dtype']} b={row['batch']}: {row['chunks_per_s']:,.1f} chunks/s, "
                   f"{row['tokens_per_s']:,.0f} tokens/s, peak {row['peak_mem_mb']:,.0f} MB", err=True)
    else:
        batch = f" b={row['batch']}" if row["batch"] else ""
        typer.echo(f"{row['dtype']}{batch}: {row['status']}: {row['note']}", err=True)


def register(app: typer.Typer) -> None:
    app.command()(sweep)
