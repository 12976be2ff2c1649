"""`embedlab chunk`: tokenize and chunk a corpus once, into a folder that `embed` reads as integers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from embedlab.config import ChunkConfig, ClusterConfig, CorpusConfig, EmbedConfig, EncodeConfig
from embedlab.errors import print_result, reported, usage


def chunk(
    corpus: Annotated[Path, typer.Argument(
        help="BEIR corpus.jsonl[.gz], JSONL, Parquet, a folder of .txt files, or a BEIR folder (any corpus "
             "`embed` reads), or with --prechunked a Parquet dataset of chunks.", show_default=False)],
    out: Annotated[Path, typer.Option(
        metavar="DIR", help="Chunk folder to write (created; re-running resumes and skips finished splits).")],
    model: Annotated[str, typer.Option(
        metavar="NAME_OR_PATH", help="The model whose tokenizer cuts the chunks; any model with the same "
                                     "tokenizer can embed the folder.")] = EncodeConfig.model,
    chunk_tokens: Annotated[Optional[int], typer.Option(
        min=8, help="Tokens per chunk, special tokens included. Default: the model's max sequence length.")] = None,
    overlap: Annotated[Optional[int], typer.Option(
        min=0, help="Tokens shared by consecutive chunks of a document. Default: an eighth of the chunk.")] = None,
    truncate: Annotated[bool, typer.Option(
        "--truncate", help="One chunk per document, cut at the max length.")] = ChunkConfig.truncate,
    corpus_format: Annotated[str, typer.Option(
        "--format", metavar="FORMAT", help="auto, beir, jsonl, parquet, txt or prechunked.")
    ] = CorpusConfig.format.value,
    prechunked: Annotated[bool, typer.Option(
        "--prechunked", help="CORPUS is Parquet whose rows are chunks (--id-column, --text-column).")] = False,
    id_field: Annotated[str, typer.Option(
        "--id-field", "--id-column", help="Field holding the document id (with --prechunked: the chunk id).")
    ] = CorpusConfig.id_field,
    text_field: Annotated[str, typer.Option(
        "--text-field", "--text-column", help="Field holding the text.")] = CorpusConfig.text_field,
    title_field: Annotated[str, typer.Option(
        help="Field joined before the text when present; '' for none.")] = CorpusConfig.title_field,
    doc_field: Annotated[Optional[str], typer.Option(
        "--doc-field", "--doc-column", help="With --prechunked: the column holding each chunk's document id. "
                                            "Default: each chunk is its own document.")] = None,
    long_chunks: Annotated[str, typer.Option(
        metavar="split|refuse", help="With --prechunked: a chunk longer than --chunk-tokens is cut into windows "
                                     "ID#0, ID#1, ... (split) or rejected (refuse); counted either way.")
    ] = ChunkConfig.long_chunks.value,
    split_bytes: Annotated[int, typer.Option(
        min=1, help="Corpus bytes per split: one worker, one chunk file.")] = CorpusConfig.split_bytes,
    partition_tokens: Annotated[int, typer.Option(
        min=1, help="Token budget of a row group; `embed` with the same --partition-tokens cuts the same "
                    "partitions as from the corpus.")] = EmbedConfig.partition_tokens,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Workers of the in-process cluster.")] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        metavar="ADDR", help="Address of a running Dask scheduler (tcp://HOST:PORT).")] = None,
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", help="Allow a model repository to run its own code (off by default).")
    ] = EncodeConfig.trust_remote_code,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = EmbedConfig.progress,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Tokenize and chunk a corpus once: Parquet files of chunks with their token ids.

    `embedlab embed CHUNKS --out STORE` then reads integers only (no tokenizer) with any model that
    shares the tokenizer, and writes the same store as from the corpus itself.
    """
    from embedlab.chunk_job import chunk_corpus

    with usage():
        cfg = EmbedConfig(
            corpus=CorpusConfig(path=corpus, format="prechunked" if prechunked else corpus_format,
                                id_field=id_field, text_field=text_field, title_field=title_field or None,
                                doc_field=doc_field, split_bytes=split_bytes),
            out=out, chunk=ChunkConfig(chunk_tokens=chunk_tokens, overlap=overlap, truncate=truncate,
                                       long_chunks=long_chunks),
            encode=EncodeConfig(model=model, trust_remote_code=trust_remote_code),
            cluster=ClusterConfig(scheduler=scheduler, workers=workers),
            partition_tokens=partition_tokens, progress=progress)
    with reported(f"interrupted; finished splits are kept in {out}. Run the same command again to resume."):
        result = chunk_corpus(cfg)
    print_result(result, as_json, result.rejects_path)
