"""Chunks that arrive made: a chunk folder (``embedlab chunk``), a Parquet dataset of chunks, or a
Dask DataFrame / Bag of chunks from the stage before.

* **Chunk folder** (format ``chunks``, recognized by its metadata): splits are runs of row groups
  of its files, and a worker reads integers only (:func:`embedlab.chunkfile.read_partitions`):
  no tokenizer runs. Its chunks, ids, spans and token ids are those the raw corpus gives, and so
  are the partitions when ``partition_tokens`` is the one the folder was cut with. A model whose
  tokenizer differs (the sha256 of its normalized ``tokenizer.json``), or whose window is shorter
  than the folder's chunks, is refused before any cluster starts.
* **Prechunked rows** (format ``prechunked``; ``--prechunked`` names the id and text columns):
  each row is one chunk whose id is kept as the chunk id. Each Parquet row-group run or Dask
  partition is a split. A worker tokenizes the rows (they hold text, not ids); a row longer than
  the window (``chunk_tokens``, by default the model's max length) is cut into windows
  ``ID#0``, ``ID#1``, ... or rejected, as ``long_chunks`` says, and counted either way; nothing
  is truncated. A row's document is the ``doc_field`` column when given, else the chunk itself.
  Duplicate chunk ids are rejected as duplicate documents are (the first wins).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.backends import describe
from embedlab.chunk_stream import ChunkStream
from embedlab.chunkfile import (ChunkFileError, chunk_folder, file_meta, read_folder_record, read_partitions,
                                tokenizer_sha256)
from embedlab.chunking import Chunk
from embedlab.config import CorpusConfig, CorpusFormat, EmbedConfig, LongChunks
from embedlab.corpus import CorpusError, Document, Reject, normalize_doc_id, record_from_json, short
from embedlab.encoder import fast_tokenizer
from embedlab.files import EnvironmentFault
from embedlab.partition import Partition
from embedlab.split_task import SplitWork, worker_chunker
from embedlab.splits import Split, SplitError, plan_splits, settings_digest

MADE = (CorpusFormat.CHUNKS, CorpusFormat.PRECHUNKED)


def resolve(cfg: EmbedConfig, source: Any = None) -> EmbedConfig:
    """``cfg`` with a chunk folder recognized (format ``chunks``, its chunking settings adopted),
    or unchanged; settings that made chunks cannot honour are refused.

    Raises:
        CorpusError: a chunk folder that is incomplete, or chunked for a longer window than the
            model's, or options that contradict the folder's; ``limit`` or ``truncate`` with
            chunks made elsewhere.
    """
    if source is not None:
        cfg = replace(cfg, corpus=replace(cfg.corpus, format=CorpusFormat.PRECHUNKED))
    fmt = cfg.corpus.format
    if source is None and fmt in (CorpusFormat.AUTO, CorpusFormat.CHUNKS):
        folder = chunk_folder(cfg.corpus.path)
        if folder is None and fmt is CorpusFormat.CHUNKS:
            raise CorpusError(f"{cfg.corpus.path} is not a chunk folder (one `embedlab chunk` writes)")
        if folder is not None:
            cfg = adopt_folder(cfg, folder)
    fmt = cfg.corpus.format
    if fmt in MADE and cfg.corpus.limit is not None:
        raise CorpusError(f"limit: the corpus is already chunked ({fmt.value}); embed it whole")
    if fmt is CorpusFormat.PRECHUNKED and cfg.chunk.truncate:
        raise CorpusError("truncate would cut prechunked rows silently; use long_chunks split or refuse")
    return cfg


def adopt_folder(cfg: EmbedConfig, folder: Path) -> EmbedConfig:
    """``cfg`` reading the chunk folder with the chunking it was made with."""
    try:
        s = read_folder_record(folder)["settings"]
    except ChunkFileError as e:
        raise CorpusError(str(e)) from None
    c = cfg.chunk
    asked = {"chunk_tokens": c.chunk_tokens, "overlap": c.overlap, "truncate": c.truncate or None}
    clash = [f"{k}={v} (the folder has {s[k]})" for k, v in asked.items() if v is not None and v != s[k]]
    if clash:
        raise CorpusError(f"{folder} was chunked with other settings: {', '.join(clash)}; leave them out to use "
                          "the folder's, or chunk the corpus again")
    info = describe(cfg.encode.model, cfg.encode.revision)
    if s["chunk_tokens"] > info.max_seq_length:
        raise CorpusError(f"{folder} holds chunks of up to {s['chunk_tokens']} tokens; {info.name} reads at most "
                          f"{info.max_seq_length}: chunk the corpus again for it (embedlab chunk --model ...)")
    return replace(cfg, corpus=replace(cfg.corpus, format=CorpusFormat.CHUNKS),
                   chunk=replace(c, chunk_tokens=s["chunk_tokens"], overlap=s["overlap"], truncate=s["truncate"]))


@dataclass(frozen=True, kw_only=True)
class PrechunkedWork(SplitWork):
    """A split of chunks made elsewhere; it reads its own (:meth:`cut`)."""

    token_dtype: str = "<u2"  # chunk folder: the width of its token ids
    carried: dict[str, Any] = field(default_factory=dict)  # chunk folder: its file's counts and rejects
    long_chunks: LongChunks = LongChunks.SPLIT
    doc_field: str | None = None
    partition: Any = None  # a Dask partition (delayed), computed where the task runs
    unit: str = "chunk"  # what an id names: "document" (a chunk folder cut from documents) or "chunk"

    def cut(self) -> tuple[Any, Any, Iterator[Partition]]:
        if self.fmt is CorpusFormat.CHUNKS:
            reader = ChunkFileReader(self)
            return reader, reader, reader.partitions()
        reader = RowReader(self)
        chunker = UnitChunker(self, reader)
        stream = ChunkStream(reader, chunker, self.corpus.block_docs)  # type: ignore[arg-type]
        stream.counts = chunker.counts  # what the summary reports of long chunks, filled as it chunks
        return reader, stream, chunker.named(stream.partitions(self.partition_tokens, first_index=self.base))

    def place(self, part: Partition, placed: dict[str, tuple[int, int, int]]) -> None:
        """Where each id unit starts: a document, or a chunk (an upstream one's windows, if cut)."""
        if self.fmt is CorpusFormat.CHUNKS and self.unit == "chunk":
            units, rows = part.chunk_ids, np.arange(part.n_chunks)
        else:
            units, rows = getattr(part, "unit_ids", None) or part.doc_ids, np.flatnonzero(part.chunk_index == 0)
        ends = np.append(rows[1:], part.n_chunks)
        for r, e in zip(rows.tolist(), ends.tolist()):
            placed[units[r]] = (part.index, r, e - r)


# -- the chunk folder -----------------------------------------------------------------------------
class ChunkFileReader:
    """One chunk-folder split: its partitions read from integers, and what its file reported."""

    def __init__(self, work: PrechunkedWork):
        self.work = work
        c = work.carried
        self.first_line: dict[str, int] = {}
        self.duplicates: list[dict[str, Any]] = []
        self.lines = None
        self.rejects = [Reject(**r) for r in c.get("rejects", [])]
        self.documents, self.repaired = c.get("documents", 0), c.get("repaired", 0)
        self.truncated_documents, self.truncated_tokens = c.get("truncated_documents", 0), c.get("truncated_tokens", 0)
        self.counts = dict(c.get("counts", {}))

    def partitions(self) -> Iterator[Partition]:
        split = self.work.split
        path = Path(split.url)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise EnvironmentFault(path, "the chunk file vanished after the job planned it", True) from None
        if size != split.size:
            raise EnvironmentFault(path, f"the chunk file changed size ({split.size:,} -> {size:,} bytes) after "
                                   "the job planned it", True)
        row = split.first_row
        for part in read_partitions(path, range(split.start, split.end), self.work.partition_tokens,
                                    self.work.base, np.dtype(self.work.token_dtype)):
            if self.work.unit == "chunk":
                self.first_line.update(zip(part.chunk_ids, range(row + 1, row + 1 + part.n_chunks)))
            else:  # documents, each at the file row of its first chunk
                starts = np.flatnonzero(part.chunk_index == 0)
                self.first_line.update((part.doc_ids[r], row + 1 + r) for r in starts.tolist())
            row += part.n_chunks
            yield part


# -- rows that are chunks -------------------------------------------------------------------------
class RowReader:
    """A split's rows as documents (one per chunk), a bad or repeated one rejected (the first wins)."""

    def __init__(self, work: PrechunkedWork):
        self.work = work
        self.cfg = CorpusConfig(path=Path(work.corpus.path), id_field=work.corpus.id_field,
                                text_field=work.corpus.text_field, title_field=None)
        self.lines: int | None = None
        self.first_line: dict[str, int] = {}
        self.duplicates: list[dict[str, Any]] = []
        self.doc_of: dict[str, str] = {}  # chunk id -> its document (doc_field)

    def __iter__(self) -> Iterator[Document | Reject]:
        doc_field = self.work.doc_field
        for source, row, obj in self._rows():
            if isinstance(obj, Exception):
                yield Reject(source, row, None, str(obj))
                continue
            rec = record_from_json(obj, self.cfg, source, row)
            if isinstance(rec, Document):
                first = self.first_line.get(rec.doc_id)
                if first is not None:
                    self.duplicates.append({**Reject(source, row, rec.doc_id,
                                                     f"duplicate chunk id {short(rec.doc_id)}").to_json(),
                                            "first": first})
                    continue
                if doc_field:
                    doc = normalize_doc_id(obj.get(doc_field))
                    if doc is None:
                        yield Reject(source, row, rec.doc_id, f"document field {doc_field!r} must be a non-empty "
                                     f"string or an integer, got {short(obj.get(doc_field))}")
                        continue
                    self.doc_of[rec.doc_id] = doc
                self.first_line[rec.doc_id] = row
            yield rec

    def _rows(self) -> Iterator[tuple[str, int, Any]]:
        split, work = self.work.split, self.work
        if work.partition is not None:
            yield from dask_rows(work.partition, split.url)
            return
        import pyarrow.parquet as pq

        columns = [c for c in (work.corpus.id_field, work.corpus.text_field, work.doc_field) if c]
        row = split.first_row
        with pq.ParquetFile(split.url) as pf:
            for g in range(split.start, split.end):
                end = row + pf.metadata.row_group(g).num_rows
                try:
                    for batch in pf.iter_batches(batch_size=work.corpus.block_docs, row_groups=[g], columns=columns):
                        for obj in batch.to_pylist():
                            row += 1
                            yield split.url, row, obj
                except Exception as e:  # noqa: BLE001 - a damaged row group costs its rows only
                    if row < end:
                        yield split.url, row + 1, RuntimeError(f"rows {row + 1}-{end} (row group {g + 1}) cannot "
                                                              f"be read: {short(str(e), 200)}")
                row = end


def dask_rows(partition: Any, source: str) -> Iterator[tuple[str, int, Any]]:
    """The rows of one Dask partition (a DataFrame's pandas frame, or a Bag's list of dicts)."""
    import dask

    (data,) = dask.compute(partition, scheduler="sync")
    if hasattr(data, "columns"):  # pandas: through Arrow, so ids are Python ints and strings
        import pyarrow as pa

        data = pa.Table.from_pandas(data, preserve_index=False).to_pylist()
    for i, obj in enumerate(data, 1):
        yield source, i, obj


class UnitChunker:
    """Each row is a chunk: tokenized as one, kept whole when it fits the window, else cut in
    windows ``ID#k`` or rejected (``long_chunks``). Counts what it cut or refused."""

    def __init__(self, work: PrechunkedWork, reader: RowReader):
        self.work, self.reader = work, reader
        self.chunker = worker_chunker(work.tokenizer, work.trust_remote_code, work.chunk_tokens, work.overlap,
                                      False)
        self.counts = {"long_chunks_split": 0, "long_chunk_windows": 0, "long_chunks_refused": 0}

    @property
    def chunk_tokens(self) -> int:
        return self.chunker.chunk_tokens

    def chunk(self, docs: list[Document]) -> tuple[list[Chunk], list[Reject]]:
        chunks, rejects = self.chunker.chunk(docs)
        out: list[Chunk] = []
        by_doc: dict[str, list[Chunk]] = {}
        for c in chunks:
            by_doc.setdefault(c.doc_id, []).append(c)
        lines = {d.doc_id: (d.source, d.line) for d in docs}
        for doc_id, cs in by_doc.items():
            if len(cs) == 1:
                out.append(replace(cs[0], chunk_id=doc_id))
            elif self.work.long_chunks is LongChunks.REFUSE:
                self.counts["long_chunks_refused"] += 1
                source, line = lines[doc_id]
                rejects.append(Reject(source, line, doc_id, f"chunk longer than the window of {self.chunk_tokens} "
                                      f"tokens (it would take {len(cs)} windows); --long-chunks split cuts it"))
            else:
                self.counts["long_chunks_split"] += 1
                self.counts["long_chunk_windows"] += len(cs)
                out.extend(cs)
        return out, rejects

    def named(self, parts: Iterator[Partition]) -> Iterator[Partition]:
        """``parts`` with their documents named by ``doc_field`` (ids of units kept for placement)."""
        for part in parts:
            if self.reader.doc_of:
                docs = [self.reader.doc_of.get(u, u) for u in part.doc_ids]
                part = UnitPartition(**{**{f.name: getattr(part, f.name) for f in dataclasses.fields(Partition)},
                                        "doc_ids": docs, "unit_ids": part.doc_ids})
            yield part


@dataclass(frozen=True)
class UnitPartition(Partition):
    """A partition whose rows' documents are not their id units (upstream chunks with a doc field)."""

    unit_ids: list[str] = field(default_factory=list)


# -- planning -------------------------------------------------------------------------------------
def plan_prechunked(cfg: EmbedConfig, chunk_tokens: int, source: Any = None
                    ) -> tuple[list[SplitWork], CorpusFormat, Path]:
    """The splits of chunks made elsewhere, from metadata alone (a Dask collection: its partitions).

    Raises:
        CorpusError: a missing column, a damaged chunk folder, or a model with another tokenizer.
    """
    info = describe(cfg.encode.model, cfg.encode.revision)
    base = dict(fmt=cfg.corpus.format, corpus=cfg.corpus, tokenizer=info.path, chunk_tokens=chunk_tokens,
                trust_remote_code=cfg.encode.trust_remote_code, overlap=cfg.chunk.overlap, truncate=False,
                partition_tokens=cfg.partition_tokens, long_chunks=cfg.chunk.long_chunks,
                doc_field=cfg.corpus.doc_field)
    settings = {"format": cfg.corpus.format.value, "id": cfg.corpus.id_field, "text": cfg.corpus.text_field,
                "doc": cfg.corpus.doc_field, "tokenizer": info.sha256, "chunk_tokens": chunk_tokens,
                "overlap": cfg.chunk.overlap, "long_chunks": cfg.chunk.long_chunks.value,
                "partition_tokens": cfg.partition_tokens}
    if cfg.corpus.format is CorpusFormat.CHUNKS:
        return folder_works(cfg, info, base), CorpusFormat.CHUNKS, cfg.corpus.path
    if source is not None:
        name, parts = dask_partitions(source)
        digest = settings_digest(settings)
        works = [PrechunkedWork(split=Split(kind="dask", url=f"dask://{name}/{i}", size=0, version=name, start=i,
                                            end=i + 1, settings=digest), number=i, partition=p, **base)
                 for i, p in enumerate(parts)]
        return works, CorpusFormat.PRECHUNKED, Path(f"dask-{name}")
    path = cfg.corpus.path
    try:
        splits = plan_splits(str(path), split_bytes=cfg.corpus.split_bytes, settings=settings)
    except SplitError as e:
        raise CorpusError(str(e)) from None
    if any(s.kind != "parquet" for s in splits):
        raise CorpusError(f"{path}: prechunked input is read from Parquet files")
    for url in dict.fromkeys(s.url for s in splits):
        need_columns(url, [c for c in (cfg.corpus.id_field, cfg.corpus.text_field, cfg.corpus.doc_field) if c])
    return [PrechunkedWork(split=s, number=i, **base) for i, s in enumerate(splits)], CorpusFormat.PRECHUNKED, path


def need_columns(url: str, columns: list[str]) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(url).names
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError for a broken footer
        raise CorpusError(f"{url}: not a readable Parquet file: {e}") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise CorpusError(f"{url}: no column {missing[0]!r}; columns are {sorted(names)} "
                          "(name the chunk id and text columns with --id-column and --text-column)")


def folder_works(cfg: EmbedConfig, info: Any, base: dict[str, Any]) -> list[SplitWork]:
    """A chunk folder's splits: runs of row groups of each file, the file's counts on its first."""
    path = cfg.corpus.path
    folder = path if path.is_dir() else path.parent
    record = read_folder_record(folder)
    s = record["settings"]
    tok = tokenizer_sha256(fast_tokenizer(info.path, trust_remote_code=cfg.encode.trust_remote_code))
    if tok != s["tokenizer_sha256"]:
        raise CorpusError(f"{folder} was tokenized by {s['tokenizer']} (tokenizer sha256 {s['tokenizer_sha256'][:12]}); "
                          f"{info.name} has another tokenizer ({tok[:12]}), whose token ids mean other text. Embed "
                          f"the corpus itself, or chunk it for this model: embedlab chunk CORPUS --model {info.name}")
    settings = {"format": "chunks", "tokenizer": tok, "partition_tokens": cfg.partition_tokens}
    works: list[SplitWork] = []
    for f in record["files"]:
        file = folder / f["file"]
        if path.is_file() and file != path:
            continue
        size = file.stat().st_size if file.is_file() else None
        meta = file_meta(file) if size == f["size"] else None
        if meta is None or meta.get("tokenizer_sha256") != tok:
            raise CorpusError(f"{file}: {'missing' if size is None else 'not the chunk file the folder lists'} "
                              f"({folder / '_chunks.json'}); chunk the corpus again")
        carried = {k: f[k] for k in ("documents", "repaired", "truncated_documents", "truncated_tokens", "rejects")}
        carried["counts"] = f.get("counts", {})
        unit = "chunk" if s.get("corpus_format") == CorpusFormat.PRECHUNKED.value else "document"
        for j, split in enumerate(plan_splits(str(file), split_bytes=cfg.corpus.split_bytes, settings=settings)):
            works.append(PrechunkedWork(split=split, number=len(works), token_dtype=s["token_dtype"],
                                        carried=carried if j == 0 else {}, unit=unit, **base))
    return works


def dask_partitions(source: Any) -> tuple[str, list[Any]]:
    """A Dask DataFrame's or Bag's name and its partitions as delayed objects."""
    if not hasattr(source, "to_delayed") or not hasattr(source, "npartitions"):
        raise CorpusError(f"expected a corpus path, a Dask DataFrame or a Dask Bag; got {type(source).__name__}")
    from dask.base import tokenize

    return f"{type(source).__name__.lower()}-{tokenize(source)[:16]}", list(source.to_delayed())

