"""One call per job, for notebooks and scripts: keyword options in, a result object out."""

from __future__ import annotations

from pathlib import Path

from embedlab.config import (DEFAULT_MODEL, ChunkConfig, ClusterConfig, CorpusConfig, EmbedConfig,
                             EncodeConfig)
from embedlab.pipeline import EmbedResult
from embedlab.pipeline import embed as run_embed


def embed(
    corpus: str | Path,
    out: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    dtype: str = "auto",
    batch_size: int = 128,
    max_batch_tokens: int | None = None,
    device: str = "auto",
    workers: int | None = None,
    threads: int | None = None,
    scheduler: str | None = None,
    limit: int | None = None,
    chunk_tokens: int | None = None,
    overlap: int = 32,
    truncate: bool = False,
    corpus_format: str = "auto",
    id_field: str = "_id",
    text_field: str = "text",
    title_field: str | None = "title",
    partition_tokens: int = 65536,
    trust_remote_code: bool = False,
    compile: bool | None = None,
    progress: bool = True,
) -> EmbedResult:
    """Embed a corpus into a store folder; see ``embedlab embed --help`` for every option.

    Example:
        >>> r = embed("corpus.jsonl.gz", "out", limit=100)
        >>> r.chunks, r.ok
        (163, True)
    """
    cfg = EmbedConfig(
        corpus=CorpusConfig(path=Path(corpus), format=corpus_format, id_field=id_field,
                            text_field=text_field, title_field=title_field, limit=limit),
        out=Path(out),
        chunk=ChunkConfig(chunk_tokens=chunk_tokens, overlap=overlap, truncate=truncate),
        encode=EncodeConfig(model=model, dtype=dtype, batch_size=batch_size,
                            max_batch_tokens=max_batch_tokens, device=device, compile=compile,
                            trust_remote_code=trust_remote_code),
        cluster=ClusterConfig(scheduler=scheduler, workers=workers, threads=threads),
        partition_tokens=partition_tokens,
        progress=progress,
    )
    return run_embed(cfg)
