"""One corpus split on a worker: read, parse, tokenize and chunk it, and encode its partitions.

The driver plans splits from file metadata (:mod:`embedlab.splits`) and never reads the text;
a split task does the rest where the encoder is. It parses records with :mod:`embedlab.corpus`
(so every bad record is rejected exactly as before), chunks them with the model's tokenizer and
cuts the chunk stream into partitions by the token budget, closing at a document boundary, as
:class:`embedlab.pipeline.ChunkStream` does. A partition's index is ``split number x
SPLIT_STRIDE + ordinal``: it depends only on the corpus files and the settings.

Inside the task two stages overlap: a background thread reads, tokenizes (the Rust tokenizer
drops the GIL) and packs the next partitions into a bounded queue while the encoder runs on the
current one. The task reports how long the encoder waited for input. Each partition is written
as soon as it is encoded and announced to the driver (a Dask event), which commits it at once,
so a killed job keeps every partition that was written.

Line numbers: a JSONL byte-range split counts the lines it owns and numbers its rejects from 1;
the driver adds the lines of the file's earlier splits, so nothing is read twice. Documents the
split holds twice are rejected here (the first wins); ids held by two splits are found by the
driver from each split's sorted run of id hashes (:func:`id_run`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.chunking import Chunker
from embedlab.config import CorpusConfig, CorpusFormat, EncodeConfig
from embedlab.corpus import (UTF8_BOM, CorpusError, Document, Record, Reject, read_jsonl, read_jsonl_line,
                             read_parquet, read_txt_files, short)
from embedlab.encoder import fast_tokenizer
from embedlab.files import EnvironmentFault, atomic_write_bytes
from embedlab.partition import Partition
from embedlab.pipeline import ChunkStream, embed_partition
from embedlab.splits import Split, read_split
from embedlab.store import PartitionEntry, Store

SPLIT_STRIDE = 100_000  # partition indices reserved per split: index = split number x stride + ordinal
PREFETCH_PARTITIONS = 2  # partitions read and chunked ahead of the encoder
ID_RUN_DTYPE = np.dtype([("h1", "<u8"), ("h2", "<u8"), ("line", "<i8"), ("index", "<i8"),
                         ("row", "<i8"), ("n", "<i8")])


@dataclass(frozen=True, kw_only=True)
class SplitWork:
    """One split task's input: the split, how to read and cut it, and what the store holds of it."""

    split: Split
    number: int  # the split's place in the plan
    fmt: CorpusFormat  # beir, jsonl, parquet or txt
    corpus: CorpusConfig  # the reader's fields (BEIR's filled in)
    tokenizer: str  # the folder holding the model's tokenizer
    trust_remote_code: bool = False
    chunk_tokens: int
    overlap: int | None
    truncate: bool
    partition_tokens: int
    prior: dict[int, PartitionEntry] = field(default_factory=dict)  # committed entries in its range
    topic: str = ""  # Dask event topic for partitions as they are written ("": none)

    @property
    def base(self) -> int:
        return self.number * SPLIT_STRIDE


@dataclass(frozen=True)
class SplitOutcome:
    """What a split gave: its partitions' entries and the counts the summary adds up."""

    entries: list[PartitionEntry]
    encoded: list[int]  # indices encoded by this task (the others were in the store already)
    documents: int
    repaired: int
    truncated_documents: int
    truncated_tokens: int
    lines: int | None  # lines the split owns when its rejects are numbered from 1 (JSONL range)
    rejects: list[dict[str, Any]]  # Reject.to_json() (+ "first": line of the first of a duplicate)
    forward_seconds: float
    tokens: int
    padded_tokens: int
    input_wait_seconds: float  # the encoder waited for the reader and tokenizer
    task_seconds: float


@functools.lru_cache(maxsize=4)
def worker_chunker(tokenizer: str, trust_remote_code: bool, chunk_tokens: int, overlap: int | None,
                   truncate: bool) -> Chunker:
    """The worker's chunker for these settings (its tokenizer loaded once per process)."""
    return Chunker(fast_tokenizer(tokenizer, trust_remote_code=trust_remote_code), chunk_tokens, overlap,
                   truncate)


class SplitReader:
    """The split's records in order, a document the split holds twice rejected (the first wins).

    After iteration: ``lines`` (lines owned, for a JSONL byte range; else None: lines are the
    file's own), ``first_line`` (doc id -> line of each document kept) and ``duplicates``.
    """

    def __init__(self, work: SplitWork):
        self.work = work
        self.lines: int | None = None
        self.first_line: dict[str, int] = {}
        self.duplicates: list[dict[str, Any]] = []

    def __iter__(self) -> Iterator[Record]:
        for rec in self._records():
            if isinstance(rec, Document):
                first = self.first_line.get(rec.doc_id)
                if first is not None:
                    self.duplicates.append({**Reject(rec.source, rec.line, rec.doc_id,
                                                     f"duplicate document id {short(rec.doc_id)}").to_json(),
                                            "first": first})
                    continue
                self.first_line[rec.doc_id] = rec.line
            yield rec

    def _records(self) -> Iterator[Record]:
        split, cfg = self.work.split, self.work.corpus
        if split.kind == "txt":
            root = Path(split.url)
            yield from read_txt_files([Path(u) for u, _, _ in split.files], root)
        elif split.kind == "parquet":
            yield from read_parquet(Path(split.url), cfg, range(split.start, split.end), split.first_row)
        elif split.kind == "jsonl.gz":
            yield from read_jsonl(Path(split.url), cfg)
        else:
            yield from self._jsonl_range(split, cfg)

    def _jsonl_range(self, split: Split, cfg: CorpusConfig) -> Iterator[Record]:
        path = Path(split.url)
        before = _stat(path, split)
        line = 0
        try:
            for raw in read_split(split):
                line += 1
                # only the file's first line may begin with a byte-order mark
                at = line if split.start == 0 or line > 1 or not raw.data.startswith(UTF8_BOM) else 2
                rec = read_jsonl_line(raw.data, cfg, raw.source, at)
                if rec is not None:
                    yield rec if at == line else replace(rec, line=line)
        except OSError as e:
            raise EnvironmentFault(path, f"cannot read the corpus file: {e}", True) from e
        if _stat(path, split) != before:
            raise EnvironmentFault(path, "the corpus file changed while it was read", True)
        self.lines = line


def _stat(path: Path, split: Split) -> tuple[int, int, int]:
    """The file's identity; raise if it is not the size the job planned it at."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise EnvironmentFault(path, "the corpus file vanished (deleted or moved) after the job planned it",
                               True) from None
    if st.st_size != split.size:
        raise EnvironmentFault(path, f"the corpus file changed size from {split.size:,} to {st.st_size:,} "
                               "bytes after the job planned it", True)
    return st.st_ino, st.st_size, st.st_mtime_ns


def id_hashes(doc_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Two uint64 halves of blake2b-16 of each id (equal ids, equal hashes; others collide with
    probability 2**-128)."""
    raw = b"".join(hashlib.blake2b(d.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                   for d in doc_ids)
    both = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)
    return both[:, 0].copy(), both[:, 1].copy()


def id_run(first_line: dict[str, int], placed: dict[str, tuple[int, int, int]]) -> np.ndarray:
    """Every document the split kept, sorted by id hash: (hash, line, partition, row, chunks).

    ``placed`` maps a doc id to (partition index, first row, chunks); a document that gave no
    chunk (rejected by the chunker) is in the run with partition -1, as it still claims its id.
    """
    ids = list(first_line)
    run = np.zeros(len(ids), dtype=ID_RUN_DTYPE)
    run["h1"], run["h2"] = id_hashes(ids)
    run["line"] = np.fromiter(first_line.values(), dtype=np.int64, count=len(ids))
    spots = np.array([placed.get(d, (-1, 0, 0)) for d in ids], dtype=np.int64).reshape(-1, 3)
    run["index"], run["row"], run["n"] = spots[:, 0], spots[:, 1], spots[:, 2]
    return np.sort(run, order=["h1", "h2", "line"])


def _placements(part: Partition, placed: dict[str, tuple[int, int, int]]) -> None:
    rows = np.flatnonzero(part.chunk_index == 0)
    ends = np.append(rows[1:], part.n_chunks)
    for r, e in zip(rows.tolist(), ends.tolist()):
        placed[part.doc_ids[r]] = (part.index, r, e - r)


def _prefetch(parts: Iterator[Partition], depth: int) -> Iterator[tuple[Partition | None, float]]:
    """``parts`` made on a background thread, at most ``depth`` ahead: (partition, seconds waited)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for p in parts:
                while not stop.is_set():
                    try:
                        q.put(p, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - raised again on the consuming thread
            q.put(e)

    thread = threading.Thread(target=produce, name="embedlab-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            t0 = time.perf_counter()
            item = q.get()
            waited = time.perf_counter() - t0
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item, waited
    finally:
        stop.set()
        thread.join()


def _announce(topic: str, entry: PartitionEntry, encoded: bool) -> None:
    if not topic:
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:  # run in-process, not on a Dask worker
        return
    worker.log_event(topic, {"entry": entry.to_json(), "encoded": encoded})


def embed_split(work: SplitWork, out: str, encode: EncodeConfig) -> SplitOutcome:
    """Read, chunk, encode and write one split; announce each partition as it is written."""
    t0 = time.perf_counter()
    chunker = worker_chunker(work.tokenizer, work.trust_remote_code, work.chunk_tokens, work.overlap,
                             work.truncate)
    reader = SplitReader(work)
    stream = ChunkStream(reader, chunker, work.corpus.block_docs)
    store = Store(out)
    entries: list[PartitionEntry] = []
    encoded: list[int] = []
    placed: dict[str, tuple[int, int, int]] = {}
    waited = forward = 0.0
    tokens = padded = 0
    for part, wait in _prefetch(stream.partitions(work.partition_tokens, first_index=work.base),
                                PREFETCH_PARTITIONS):
        waited += wait
        ordinal = part.index - work.base
        if ordinal >= SPLIT_STRIDE:
            raise CorpusError(f"{work.split.url}: a split gives more than {SPLIT_STRIDE:,} partitions; "
                              "use a larger partition budget or a smaller split size")
        _placements(part, placed)
        prior = work.prior.get(part.index)
        if store.entry_is_current(prior, part.digest):
            entry, fresh = prior, False
        else:
            outcome = embed_partition(part, out, encode)
            entry, fresh = outcome.entry, True
            forward += outcome.forward_seconds
            tokens += outcome.tokens
            padded += outcome.padded_tokens
            encoded.append(part.index)
        entry = replace(entry, split=work.split.key, ordinal=ordinal, tombstones=[])
        _announce(work.topic, entry, fresh)
        entries.append(entry)
    entries = [replace(e, split_parts=len(entries)) for e in entries]
    run = id_run(reader.first_line, placed)
    atomic_write_bytes(store.split_ids_path(work.split.key), _npy_bytes(run))
    rejects = sorted([r.to_json() for r in stream.rejects] + reader.duplicates, key=lambda r: r["line"])
    return SplitOutcome(entries, encoded, stream.documents, stream.repaired, stream.truncated_documents,
                        stream.truncated_tokens, reader.lines, rejects, forward, tokens, padded, waited,
                        time.perf_counter() - t0)


def _npy_bytes(run: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, run, allow_pickle=False)
    return buf.getvalue()


def embed_split_task(work: SplitWork, out: str, encode: EncodeConfig) -> SplitOutcome | EnvironmentFault:
    """:func:`embed_split` as a Dask task; a full disk or a read-only store comes back as its value."""
    try:
        return embed_split(work, out, encode)
    except EnvironmentFault as e:
        return e
