"""`embedlab embed`: the options build the frozen configs of embedlab.config, whose defaults they show."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Optional
from urllib.parse import urlsplit

import typer

from embedlab.config import (ChunkConfig, ClusterConfig, CorpusConfig, EmbedConfig, EncodeConfig,
                             corpus_location, default_corpus)
from embedlab.errors import print_result, reported, usage


def default_out(corpus: Path | str) -> Path:
    """``runs/<corpus name>``: ``runs/scifact`` for ``.../scifact/corpus.jsonl.gz`` (or a URL's)."""
    if isinstance(corpus, str):
        parts = urlsplit(corpus)
        path = PurePosixPath("/" + parts.netloc + parts.path.rstrip("/"))
        stem = path.name.split(".")[0]
    else:
        path = corpus
        stem = corpus.name.split(".")[0] if corpus.is_file() else corpus.name
    return Path("runs") / (path.parent.name if stem == "corpus" else stem)


def embed(
    corpus: Annotated[Optional[str], typer.Argument(
        metavar="CORPUS",
        help="BEIR corpus.jsonl[.gz], JSONL, Parquet, a folder of .txt files, a BEIR folder, or a chunk "
             "folder (`embedlab chunk`): a local path or an fsspec URL (s3://bucket/prefix/, gs://..., "
             "az://..., https://..., file://...). "
             "Default: ../shared/data/scifact/corpus.jsonl.gz when present, else a small bundled "
             "corpus (the summary names the one it read).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        metavar="DIR", help="Store folder to write (created; re-running resumes). "
                            "Default: runs/<corpus name>.")] = None,
    model: Annotated[str, typer.Option(
        metavar="NAME_OR_PATH",
        help="Local model folder or hub name (from the local hub cache when offline).")] = EncodeConfig.model,
    batch_size: Annotated[int, typer.Option(
        min=1, help="Most chunks per forward pass (batches are length-sorted).")] = EncodeConfig.batch_size,
    max_batch_tokens: Annotated[Optional[int], typer.Option(
        min=0, help="Padded-token budget per batch: short chunks come in larger batches (up to "
                    "--batch-size), long ones in smaller. Default: 2048 on CPU (measured fastest), "
                    "none on CUDA; 0: none, every batch has --batch-size chunks.")] = None,
    dtype: Annotated[str, typer.Option("--dtype",
        metavar="DTYPE", help="Encoder precision: auto (bf16 on CPUs with native bf16, else fp32; fp16 on "
        "CUDA; an existing store's own), fp32 (sentence-transformers' vectors), fp16, bf16, or int8 (CPU "
        "only: see README).")
    ] = EncodeConfig.dtype.value,
    device: Annotated[str, typer.Option("--device",
        metavar="DEVICE", help="auto (CUDA when present), cpu or cuda[:N].")] = EncodeConfig.device,
    workers: Annotated[Optional[int], typer.Option(
        min=1, help="Workers of the in-process cluster. Default: --workers-per-gpu x GPUs, else 1 on CPU.")] = None,
    workers_per_gpu: Annotated[Optional[int], typer.Option(
        "--workers-per-gpu", min=1, help="Workers sharing each GPU of the in-process cluster. Default: 4 for "
        "a model up to 384 wide (MiniLM: 2.3x one worker on an H100, reading and tokenizing in parallel), "
        "else 1.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="Torch threads per CPU worker. Default: cores / workers.")] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        metavar="ADDR", help="Address of a running Dask scheduler (tcp://HOST:PORT) to use instead "
                             "of an in-process cluster.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Embed only the first N good documents.")] = None,
    chunk_tokens: Annotated[Optional[int], typer.Option(
        min=8, help="Tokens per chunk, special tokens included. "
                    "Default: the model's max sequence length.")] = None,
    overlap: Annotated[Optional[int], typer.Option(
        min=0, help="Tokens shared by consecutive chunks of a document; less than half of "
                    "--chunk-tokens. Default: an eighth of the chunk (32 of 256).")] = None,
    truncate: Annotated[bool, typer.Option(
        "--truncate", help="One chunk per document, cut at the max length (as MTEB and BEIR evaluate).")
    ] = ChunkConfig.truncate,
    corpus_format: Annotated[str, typer.Option(
        "--format", metavar="FORMAT", help="auto, beir, jsonl, parquet, txt, chunks (a folder `embedlab chunk` "
        "wrote; auto recognizes it) or prechunked.")] = CorpusConfig.format.value,
    prechunked: Annotated[bool, typer.Option(
        "--prechunked", help="CORPUS is Parquet whose rows are chunks made upstream: --id-column names the "
                             "chunk id (kept as the chunk id), --text-column the text.")] = False,
    id_field: Annotated[str, typer.Option(
        "--id-field", "--id-column", help="JSONL/Parquet field holding the document id (with --prechunked: "
                                          "the chunk id).")] = CorpusConfig.id_field,
    text_field: Annotated[str, typer.Option(
        "--text-field", "--text-column", help="JSONL/Parquet field holding the text.")] = CorpusConfig.text_field,
    doc_field: Annotated[Optional[str], typer.Option(
        "--doc-field", "--doc-column", help="With --prechunked: the column holding each chunk's document id. "
                                            "Default: each chunk is its own document.")] = None,
    long_chunks: Annotated[str, typer.Option(
        metavar="split|refuse", help="With --prechunked: a chunk longer than the window (--chunk-tokens, by "
        "default the model's max length) is cut into windows ID#0, ID#1, ... (split) or rejected (refuse); "
        "the summary counts either, nothing is truncated.")] = ChunkConfig.long_chunks.value,
    title_field: Annotated[str, typer.Option(
        help="Field joined before the text when present; '' for none.")] = CorpusConfig.title_field,
    split_bytes: Annotated[int, typer.Option(
        min=1, help="Corpus bytes per split, the unit one worker reads, tokenizes and encodes on its "
                    "own (a JSONL byte range, Parquet row groups, .txt files; a .gz file is always one "
                    "split).")] = CorpusConfig.split_bytes,
    partition_tokens: Annotated[int, typer.Option(
        min=1, help="Token budget of one partition (one task, one Parquet file, one FAISS shard).")
    ] = EmbedConfig.partition_tokens,
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", help="Allow a model repository to run its own code (off by default).")
    ] = EncodeConfig.trust_remote_code,
    compile_model: Annotated[Optional[bool], typer.Option(
        "--compile/--no-compile", help="torch.compile the encoder (about 1.05x on CPU for a one-off "
        "compile of 8-25 s, cached on disk): worth it for long jobs. Default: off.")] = EncodeConfig.compile,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = EmbedConfig.progress,
    take_over: Annotated[bool, typer.Option(
        "--take-over", help="Take over the writer claim of a writer on another host that has been silent "
        "for 60 s (a crashed one). A writer on this host whose process is gone is taken over anyway.")
    ] = EmbedConfig.take_over,
    verify_deep: Annotated[bool, typer.Option(
        "--verify-deep", help="On resume, re-hash every committed file instead of trusting files of the "
        "recorded size.")] = EmbedConfig.verify_deep,
    codes: Annotated[str, typer.Option(
        "--codes", help="Also write codes beside the vectors, made where the vectors are (on the GPU "
        "before the copy back): 'binary' (sign bits, dim/8 bytes), 'int8' (ranges calibrated once per "
        "store), or 'binary,int8'. Columns code_binary / code_int8 of each Parquet file.")] = "",
    storage_option: Annotated[Optional[list[str]], typer.Option(
        "--storage-option", metavar="KEY=VALUE",
        help="An fsspec option of a URL corpus (repeatable): endpoint_url=http://HOST:PORT, key=..., "
             "secret=..., anon=true, client_kwargs.region_name=...; the storage's own environment "
             "variables (AWS_ENDPOINT_URL, AWS_PROFILE, ...) work too.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Embed a corpus: chunk it, encode every chunk on a Dask cluster, write Parquet and FAISS shards."""
    from embedlab.codes import parse_codes
    from embedlab.remote import parse_storage_options
    from embedlab.split_embed import embed as run

    where = corpus_location(corpus) if corpus else default_corpus()
    out = out or default_out(where)
    with usage():
        cfg = EmbedConfig(
            corpus=CorpusConfig(path=where, format="prechunked" if prechunked else corpus_format,
                                id_field=id_field, text_field=text_field, title_field=title_field or None,
                                doc_field=doc_field, limit=limit, split_bytes=split_bytes,
                                storage_options=parse_storage_options(storage_option or [])),
            out=out,
            chunk=ChunkConfig(chunk_tokens=chunk_tokens, overlap=overlap, truncate=truncate, long_chunks=long_chunks),
            encode=EncodeConfig(model=model, dtype=dtype, batch_size=batch_size,
                                max_batch_tokens=max_batch_tokens, device=device, compile=compile_model,
                                trust_remote_code=trust_remote_code),
            cluster=ClusterConfig(scheduler=scheduler, workers=workers, threads=threads,
                                  workers_per_gpu=workers_per_gpu),
            partition_tokens=partition_tokens, progress=progress, take_over=take_over,
            verify_deep=verify_deep, codes=parse_codes(codes))
    with reported(f"interrupted; finished partitions are kept in {out}. "
                  "Run the same command again to resume."):
        result = run(cfg)
    print_result(result, as_json, result.rejects_path)
