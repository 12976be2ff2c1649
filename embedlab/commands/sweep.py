"""`embedlab sweep`: chunks/s, tokens/s and peak memory per batch size and precision, and the knee."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from embedlab.config import EncodeConfig, default_corpus
from embedlab.errors import reported, usage
from embedlab.experiments.sweeps import SweepConfig

CPU_BATCHES, GPU_BATCHES = "1,2,4,...,128", "1,2,4,...,2048"


def sweep(
    batch_sizes: Annotated[Optional[str], typer.Option(
        help="Batch sizes, comma-separated; 1,2,4,...,2048 doubles up to 2048. "
             f"Default: {GPU_BATCHES} on a GPU, {CPU_BATCHES} on CPU.")] = None,
    dtypes: Annotated[str, typer.Option(
        help="Precisions to sweep; one the device cannot run is skipped and the reason recorded.")]
    = "fp32,fp16,bf16,int8",
    data: Annotated[Optional[Path], typer.Option(
        help="Corpus to chunk, or a chunk folder (`embedlab chunk`: its token ids are sampled). "
             "Default: ../shared/data/scifact/corpus.jsonl.gz when present, "
             "else the small bundled corpus.")] = None,
    docs: Annotated[int, typer.Option(min=1, help="Documents read and chunked.")] = SweepConfig.docs,
    chunks: Annotated[int, typer.Option(
        min=1, help="Chunks sampled from them (seeded): one pass encodes them all.")] = SweepConfig.chunks,
    chunk_tokens: Annotated[Optional[int], typer.Option(
        min=8, help="Tokens per chunk, special tokens included. Default: the model's max sequence length.")
    ] = SweepConfig.chunk_tokens,
    overlap: Annotated[Optional[int], typer.Option(
        min=0, help="Tokens shared by consecutive chunks of a document. Default: an eighth of the chunk.")
    ] = SweepConfig.overlap,
    repeats: Annotated[int, typer.Option(
        min=1, help="Timed passes per point; the median is reported.")] = SweepConfig.repeats,
    warmup: Annotated[int, typer.Option(
        min=0, help="Untimed passes before each point's timed passes.")] = SweepConfig.warmup,
    model: Annotated[str, typer.Option(
        metavar="NAME_OR_PATH",
        help="Local model folder or hub name (from the local hub cache when offline).")] = EncodeConfig.model,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda[:N].")] = EncodeConfig.device,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Torch threads on CPU. Default: torch's.")] = None,
    compile: Annotated[Optional[bool], typer.Option(
        "--compile/--no-compile", help="torch.compile the encoder. Default: off.")] = EncodeConfig.compile,
    seed: Annotated[int, typer.Option(help="Seed of the chunk sample and pass order.")] = SweepConfig.seed,
    out: Annotated[Path, typer.Option(
        help="Folder for sweep.csv (tidy rows), sweep.json (fits, read by `plan --from-sweep`), sweep.png.")]
    = Path("runs/sweep"),
) -> None:
    """Measure encoder throughput per batch size and precision on real chunks.

    Fits r(b) = r_max b / (b + b_half) per precision and reports the knee (90% of r_max).
    """
    from embedlab.encoder import pick_device
    from embedlab.experiments.sweeps import describe_machine, run_sweep
    from embedlab.planner import parse_ints

    with usage():
        encode = EncodeConfig(model=model, device=device, torch_threads=threads, compile=compile)
        default = GPU_BATCHES if pick_device(device).startswith("cuda") else CPU_BATCHES
        cfg = SweepConfig(corpus=data or default_corpus(), docs=docs, chunks=chunks,
                          chunk_tokens=chunk_tokens, overlap=overlap,
                          batch_sizes=tuple(parse_ints(batch_sizes or default)),
                          dtypes=tuple(d.strip() for d in dtypes.split(",") if d.strip()),
                          warmup=warmup, repeats=repeats, seed=seed, encode=encode)
    with reported():
        result = run_sweep(cfg, progress=_progress)
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

