"""`embedlab update`, `embedlab compact` and `embedlab stream`: keep a store current."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from embedlab.errors import EXIT_REJECTS, print_result, reported, usage
from embedlab.store import Store
from embedlab.streaming import StreamConfig


def update(
    source: Annotated[Path, typer.Argument(
        help="The corpus as it is now (any format `embed` reads), or with --feed a JSONL change feed.")],
    out: Annotated[Path, typer.Option(help="Store folder written by `embedlab embed`.")],
    feed: Annotated[bool, typer.Option(
        "--feed", help="SOURCE is a change feed: JSONL records with op upsert (the document) or "
                       "delete (its id); the last op per id wins, documents not named are kept.")] = False,
    compact: Annotated[bool, typer.Option(
        "--compact",
        help="Also rewrite partitions without their tombstoned rows, in the same commit.")] = False,
    copy_on_write: Annotated[bool, typer.Option(
        "--copy-on-write/--tombstones",
        help="--copy-on-write (the default): rewrite each partition this update removes rows from "
             "without them, in the same commit, so readers of the raw Parquet files never see removed "
             "rows. --tombstones: only mark them (cheaper; raw readers see them until `compact`).")] = True,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Chunks per forward pass. Default: the store's.")] = None,
    device: Annotated[Optional[str], typer.Option(
        help="auto, cpu or cuda[:N]. Default: the store's.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Workers of the in-process cluster.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Torch threads per CPU worker.")] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        metavar="ADDR", help="Address of a running Dask scheduler (tcp://HOST:PORT).")] = None,
    corpus_format: Annotated[Optional[str], typer.Option(
        "--format", help="auto, beir, jsonl, parquet or txt. Default: as the store's embed read.")] = None,
    id_field: Annotated[Optional[str], typer.Option(help="Field holding the document id.")] = None,
    text_field: Annotated[Optional[str], typer.Option(help="Field holding the text.")] = None,
    title_field: Annotated[Optional[str], typer.Option(
        help="Field joined before the text; '' for none.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    take_over: Annotated[bool, typer.Option(
        "--take-over", help="Take over the writer claim of a writer on another host that has been silent "
        "for 60 s (a crashed one). A writer on this host whose process is gone is taken over anyway.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Embed only what changed; drop the old chunks of modified and deleted documents (one commit).

    Each document's sha256 is compared with the one the store recorded: new and modified documents
    are chunked and encoded on the same Dask cluster choices as `embed`, and a crash leaves the store
    as it was (run the same command again to finish; staged partitions are reused).
    """
    from embedlab.config import ClusterConfig
    from embedlab.incremental import UpdateConfig
    from embedlab.incremental import update as run

    with usage():
        cfg = UpdateConfig(source=source, out=out, feed=feed, compact=compact, copy_on_write=copy_on_write,
                           corpus_format=corpus_format,
                           id_field=id_field, text_field=text_field, title_field=title_field,
                           batch_size=batch_size, device=device, progress=progress, take_over=take_over,
                           cluster=ClusterConfig(scheduler=scheduler, workers=workers, threads=threads))
    with reported(f"interrupted; {out} is as it was before this update. "
                  "Run the same command again to finish it."):
        result = run(cfg)
    print_result(result, as_json, Store(out).rejects_path)


def compact(
    out: Annotated[Path, typer.Argument(help="Store folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Rewrite every partition that holds tombstoned rows without them (one atomic commit)."""
    from embedlab.incremental import compact as run

    with reported():
        result = run(out)
    typer.echo(json.dumps(result.to_json(), indent=2) if as_json else result.summary())


def stream(
    watch: Annotated[Path, typer.Option(
        help="A folder whose *.jsonl files are embedded as they appear and grow, or one JSONL "
             "change feed read as it grows (records may carry op upsert / delete).")],
    out: Annotated[Path, typer.Option(help="Store folder (created when missing).")],
    max_batch: Annotated[int, typer.Option(min=1, help="Most records in one micro-batch.")
                         ] = StreamConfig.max_batch,
    max_delay_ms: Annotated[float, typer.Option(
        min=0, help="Longest a record waits for its micro-batch to fill, in ms.")] = StreamConfig.max_delay_ms,
    max_docs: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many records.")] = None,
    read_ahead: Annotated[int, typer.Option(
        min=1, help="Most records read ahead of the batch being committed.")] = StreamConfig.read_ahead,
    idle_exit_s: Annotated[Optional[float], typer.Option(
        min=0, help="Stop after this many seconds with nothing new.")] = None,
    model: Annotated[Optional[str], typer.Option(
        help="Model of a new store. Default: the store's own, or all-MiniLM-L6-v2.")] = None,
    chunk_tokens: Annotated[Optional[int], typer.Option(min=8, help="Tokens per chunk of a new store.")] = None,
    overlap: Annotated[Optional[int], typer.Option(
        min=0, help="Chunk overlap of a new store. Default: an eighth of the chunk.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="fp32, fp16 or bf16 for a new store.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda[:N].")] = None,
    id_field: Annotated[str, typer.Option(help="Field holding the document id.")] = StreamConfig.id_field,
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = StreamConfig.text_field,
    title_field: Annotated[str, typer.Option(help="Field joined before the text; '' for none.")
                           ] = StreamConfig.title_field,
    copy_on_write: Annotated[bool, typer.Option(
        "--copy-on-write/--tombstones",
        help="--copy-on-write (the default): rewrite each partition a batch removes rows from without "
             "them, in the batch's commit, so readers of the raw Parquet files never see removed rows. "
             "--tombstones: only mark them (no rewrite per batch; raw readers see them until `compact`).")
    ] = StreamConfig.copy_on_write,
    take_over: Annotated[bool, typer.Option(
        "--take-over", help="Take over the writer claim of a writer on another host that has been silent "
        "for 60 s (a crashed one). A writer on this host whose process is gone is taken over anyway.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Embed arriving documents in micro-batches; report arrival-to-searchable latency and throughput.

    Stops after --max-docs records or --idle-exit-s of silence (or Ctrl-C); each batch is committed
    as it lands, with the feed's read position in the same record, so an interrupted stream keeps
    every batch it finished and a restart reads only the records after the last committed one.
    """
    from embedlab.config import ChunkConfig
    from embedlab.streaming import stream as run

    with usage():
        chunk = (ChunkConfig(chunk_tokens=chunk_tokens, overlap=overlap)
                 if chunk_tokens is not None or overlap is not None else None)
        cfg = StreamConfig(watch=watch, out=out, max_batch=max_batch, max_delay_ms=max_delay_ms,
                           max_docs=max_docs, idle_exit_s=idle_exit_s, model=model, chunk=chunk,
                           dtype=dtype, device=device, id_field=id_field, text_field=text_field,
                           title_field=title_field or None, take_over=take_over, read_ahead=read_ahead,
                           copy_on_write=copy_on_write)
    with reported(f"interrupted; every committed batch is in {out}."):
        result = run(cfg)
    typer.echo(json.dumps(result.to_json(), indent=2) if as_json else result.summary())
    if result.rejected:
        typer.echo(f"embedlab: {result.rejected} record(s) rejected; see {Store(out).rejects_path}", err=True)
        raise typer.Exit(EXIT_REJECTS)

