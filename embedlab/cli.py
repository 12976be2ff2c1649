"""The ``embedlab`` command: each subcommand builds a config and calls the library.

Exit status: 0 success; 1 the job failed (the message says why); 2 bad usage;
3 the job finished but rejected some input records (listed in OUT/_rejects.jsonl);
130 interrupted (re-run the same command to resume).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from embedlab.config import DEFAULT_MODEL

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Embed text corpora in bulk on Dask; measure what the vectors cost and retrieve.")

EXIT_FAILED, EXIT_REJECTS, EXIT_INTERRUPTED = 1, 3, 130
SAMPLE_CORPUS = Path(__file__).parent / "data" / "sample_corpus.jsonl"


def default_corpus() -> Path:
    """SciFact from the shared data folder when it is there, else the corpus shipped with embedlab."""
    repo = Path(__file__).resolve().parents[1]
    for root in (Path.cwd().parent / "shared" / "data", repo.parent / "shared" / "data"):
        path = root / "scifact" / "corpus.jsonl.gz"
        if path.is_file():
            return path
    return SAMPLE_CORPUS


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    typer.echo(f"embedlab: error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def embed(
    corpus: Annotated[Optional[Path], typer.Argument(
        help="BEIR corpus.jsonl[.gz], JSONL, Parquet, a folder of .txt files, or a BEIR folder. "
             "Default: ../shared/data/scifact/corpus.jsonl.gz when present, else a small bundled corpus.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Store folder to write (created; re-running resumes). Default: runs/<corpus name>.")] = None,
    model: Annotated[str, typer.Option(
        help="Local model folder or hub name (from the local hub cache when offline).")] = DEFAULT_MODEL,
    batch_size: Annotated[int, typer.Option(help="Most chunks per forward pass (batches are length-sorted).")] = 128,
    max_batch_tokens: Annotated[Optional[int], typer.Option(
        help="Padded-token budget per batch: short chunks come in larger batches (up to --batch-size), "
             "long ones in smaller. Default: 2048 on CPU (measured fastest), none on CUDA; "
             "0: none, every batch has --batch-size chunks.")] = None,
    dtype: Annotated[str, typer.Option(
        help="Encoder precision: auto (bf16 on CPUs with native bf16, else fp32; fp16 on CUDA; an existing "
             "store's own), fp32 (sentence-transformers' vectors), fp16, bf16, or int8 (CPU only: see README).")] = "auto",
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda[:N].")] = "auto",
    workers: Annotated[Optional[int], typer.Option(
        help="Workers of the in-process cluster. Default: one per GPU, else 1 on CPU.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        help="Torch threads per CPU worker. Default: cores / workers.")] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        help="Address of a running Dask scheduler (tcp://HOST:PORT) to use instead of an in-process cluster.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Embed only the first N good documents.")] = None,
    chunk_tokens: Annotated[Optional[int], typer.Option(
        help="Tokens per chunk, special tokens included. Default: the model's max sequence length.")] = None,
    overlap: Annotated[int, typer.Option(help="Tokens shared by consecutive chunks of a document.")] = 32,
    truncate: Annotated[bool, typer.Option(
        "--truncate", help="One chunk per document, cut at the max length (as MTEB and BEIR evaluate).")] = False,
    corpus_format: Annotated[str, typer.Option(
        "--format", help="auto, beir, jsonl, parquet or txt.")] = "auto",
    id_field: Annotated[str, typer.Option(help="JSONL/Parquet field holding the document id.")] = "_id",
    text_field: Annotated[str, typer.Option(help="JSONL/Parquet field holding the text.")] = "text",
    title_field: Annotated[str, typer.Option(
        help="Field joined before the text when present; '' for none.")] = "title",
    partition_tokens: Annotated[int, typer.Option(
        help="Token budget of one partition (one task, one Parquet file, one FAISS shard).")] = 65536,
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", help="Allow a model repository to run its own code (off by default).")] = False,
    compile_model: Annotated[Optional[bool], typer.Option(
        "--compile/--no-compile", help="torch.compile the encoder (about 1.05x on CPU for a one-off "
        "compile of 8-25 s, cached on disk): worth it for long jobs. Default: off.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Embed a corpus: chunk it, encode every chunk on a Dask cluster, write Parquet and FAISS shards."""
    from embedlab.api import embed as run
    from embedlab.corpus import CorpusError
    from embedlab.encoder import ModelNotFoundError
    from embedlab.store import StoreError

    corpus = corpus or default_corpus()
    if out is None:
        stem = corpus.name.split(".")[0] if corpus.is_file() else corpus.name
        out = Path("runs") / (corpus.parent.name if stem == "corpus" else stem)
    try:
        result = run(corpus, out, model=model, dtype=dtype, batch_size=batch_size,
                     max_batch_tokens=max_batch_tokens, device=device,
                     workers=workers, threads=threads, scheduler=scheduler, limit=limit,
                     chunk_tokens=chunk_tokens, overlap=overlap, truncate=truncate,
                     corpus_format=corpus_format, id_field=id_field, text_field=text_field,
                     title_field=title_field or None, partition_tokens=partition_tokens,
                     trust_remote_code=trust_remote_code, compile=compile_model,
                     progress=progress)
    except KeyboardInterrupt:
        raise fail(f"interrupted; finished partitions are kept in {out}. "
                    "Run the same command again to resume.", EXIT_INTERRUPTED) from None
    except (CorpusError, StoreError, ModelNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(result.summary())
    if not result.ok:
        typer.echo(f"embedlab: {result.rejected} input record(s) rejected; see {result.rejects_path}",
                   err=True)
        raise typer.Exit(EXIT_REJECTS)


@app.command()
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


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"embedlab.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"embedlab.commands.{name}":
                raise
            continue
        module.register(app)


COMMAND_MODULES = ("search", "evaluate", "compress", "sweep", "plan", "update")
_register_commands()


def main() -> None:  # pragma: no cover - console script entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    main()
