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

import contextlib
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
from embedlab.codes import CALIBRATION_ROWS, CodeSpec, calibrate
from embedlab.config import CorpusConfig, CorpusFormat, EncodeConfig, is_url
from embedlab.corpus import (UTF8_BOM, CorpusError, Document, Record, Reject, read_jsonl, read_jsonl_line,
                             read_parquet, read_txt_files, short)
from embedlab.backends import worker_encoder
from embedlab.encoder import fast_tokenizer
from embedlab.files import EnvironmentFault, atomic_write_bytes
from embedlab.openmp import idle_threads_sleep
from embedlab.partition import Partition
from embedlab.chunk_stream import ChunkStream
from embedlab.pipeline import encode_partition, write_partition
from embedlab.remote_read import UrlSplit
from embedlab.splits import Split, read_split
from embedlab.store import PartitionEntry, Store

SPLIT_STRIDE = 100_000  # partition indices reserved per split: index = split number x stride + ordinal
PREFETCH_PARTITIONS = 2  # partitions read and chunked ahead of the encoder
WRITE_BEHIND = 2  # encoded partitions that may wait for the writer
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
    prior_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)  # their files' committed sizes
    verify_deep: bool = False  # hash the prior entries' files instead of trusting their sizes
    topic: str = ""  # Dask event topic for partitions as they are written ("": none)
    codes: CodeSpec | None = None  # codes written beside the vectors (``embed --codes``)

    @property
    def base(self) -> int:
        return self.number * SPLIT_STRIDE

    def cut(self) -> tuple[Any, Any, Iterator[Partition]]:
        """The split's reader, chunk stream and partitions (a prechunked split reads its own)."""
        return cut_split(self)

    def place(self, part: Partition, placed: dict[str, tuple[int, int, int]]) -> None:
        """Record where each id unit (a document) of ``part`` starts: id -> (partition, row, chunks)."""
        _placements(part, placed)


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
    writer_wait_seconds: float  # the encoder waited for the writer (a full queue, the last writes)
    task_seconds: float
    counts: dict[str, int] = field(default_factory=dict)  # a reader's own counts (prechunked: long chunks)


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
        if is_url(split.url):  # object storage: embedlab.remote_read
            url_split = UrlSplit(split, cfg)
            yield from url_split
            self.lines = url_split.lines
        elif split.kind == "txt":
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
        how = "shrank" if st.st_size < split.size else "grew"
        raise EnvironmentFault(path, f"the corpus file {how} from {split.size:,} to {st.st_size:,} bytes "
                               "while it was read", True)
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
    """``parts`` made on a background thread, at most ``depth`` ahead: (partition, seconds waited).

    ``depth`` 0 makes them here, between forward passes; the seconds are then those spent making.
    """
    if depth == 0:
        while True:
            t0 = time.perf_counter()
            part = next(parts, None)
            if part is None:
                return
            yield part, time.perf_counter() - t0
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


def current_worker() -> Any:
    """The Dask worker running this task, or None in-process. Call it on the task's own thread:
    Dask finds the worker through thread-local state, so the writer thread asks through this."""
    try:
        from distributed import get_worker

        return get_worker()
    except ValueError:
        return None


def cut_split(work: SplitWork) -> tuple[SplitReader, ChunkStream, Iterator[Partition]]:
    """The split's reader, its chunk stream, and its partitions (made as they are taken)."""
    chunker = worker_chunker(work.tokenizer, work.trust_remote_code, work.chunk_tokens, work.overlap,
                             work.truncate)
    reader = SplitReader(work)
    stream = ChunkStream(reader, chunker, work.corpus.block_docs)
    return reader, stream, stream.partitions(work.partition_tokens, first_index=work.base)


class WriteBehind:
    """Writes partitions (Parquet, FAISS shard, their sha256s) on a thread while the next encodes.

    At most ``depth`` partitions wait to be written; ``waited`` is how long the encoder was held
    up by a full queue and by the last writes. Each entry is announced once its files are in place.
    """

    def __init__(self, out: str, split: str, topic: str, depth: int):
        self.out, self.split, self.topic = out, split, topic
        self.worker = current_worker() if topic else None
        self.entries: list[PartitionEntry] = []
        self.waited = 0.0
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="embedlab-writer", daemon=True)
        self._inline = depth == 0  # write here, in order; the time is the encoder's wait
        if not self._inline:
            self._thread.start()

    def put(self, ordinal: int, entry: PartitionEntry | None, part: Partition | None = None,
            vectors: np.ndarray | None = None, reencoded: list[str] | None = None,
            codes: dict[str, np.ndarray] | None = None) -> None:
        """Queue a partition to write (``entry`` None), or a reused one's entry, in order."""
        t0 = time.perf_counter()
        if self._inline:
            self._write((ordinal, entry, part, vectors, reencoded, codes))
            self.waited += time.perf_counter() - t0
            self._raise()
            return
        while self._error is None:
            try:
                self._q.put((ordinal, entry, part, vectors, reencoded, codes), timeout=0.1)
                break
            except queue.Full:
                continue
        self.waited += time.perf_counter() - t0
        self._raise()

    def close(self) -> list[PartitionEntry]:
        if self._inline:
            self._raise()
            return self.entries
        t0 = time.perf_counter()
        if self._error is None:
            self._q.put(None)
        self._thread.join()
        self.waited += time.perf_counter() - t0
        self._raise()
        return self.entries

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _write(self, item: tuple) -> None:
        ordinal, entry, part, vectors, reencoded, codes = item
        fresh = entry is None
        if fresh:
            entry = write_partition(part, self.out, vectors, reencoded, codes)
        entry = replace(entry, split=self.split, ordinal=ordinal, tombstones=[])
        if self.worker is not None:
            self.worker.log_event(self.topic, {"entry": entry.to_json(), "encoded": fresh})
        self.entries.append(entry)

    def _run(self) -> None:
        try:
            while (item := self._q.get()) is not None:
                self._write(item)
        except BaseException as e:  # noqa: BLE001 - raised again on the encoder's thread
            self._error = e


def embed_split(work: SplitWork, out: str, encode: EncodeConfig) -> SplitOutcome:
    """Read, chunk, encode and write one split; announce each partition as it is written.

    Three stages overlap: read + tokenize + chunk (a thread, :data:`PREFETCH_PARTITIONS` ahead),
    encode (this thread), write (a thread, :data:`WRITE_BEHIND` behind).
    """
    t0 = time.perf_counter()
    reader, stream, parts = work.cut()
    store = Store(out, verify_deep=work.verify_deep)
    # A device (CUDA, simulated) leaves the cores free for reading, tokenizing and writing. A CPU
    # encoder shares them: beside spinning OpenMP threads those stages made both crawl (90 s for
    # an 11 s job), so they overlap the forward passes only where idle threads sleep (embedlab's
    # default, embedlab/openmp.py), and otherwise run between them.
    overlap = worker_encoder(encode).device != "cpu" or idle_threads_sleep()
    writer = WriteBehind(out, work.split.key, work.topic, WRITE_BEHIND if overlap else 0)
    encoded: list[int] = []
    placed: dict[str, tuple[int, int, int]] = {}
    waited = forward = 0.0
    tokens = padded = 0
    try:
        for part, wait in _prefetch(parts, PREFETCH_PARTITIONS if overlap else 0):
            waited += wait
            ordinal = part.index - work.base
            if ordinal >= SPLIT_STRIDE:
                raise CorpusError(f"{work.split.url}: a split gives more than {SPLIT_STRIDE:,} partitions; "
                                  "use a larger partition budget or a smaller split size")
            work.place(part, placed)
            prior = work.prior.get(part.index)
            if store.entry_is_current(prior, part.digest, work.prior_sizes.get(part.index)):
                writer.put(ordinal, prior)
                continue
            vectors, codes, reencoded, (f, t, p) = encode_partition(part, encode, work.codes)
            forward, tokens, padded = forward + f, tokens + t, padded + p
            encoded.append(part.index)
            writer.put(ordinal, None, part, vectors, reencoded, codes)
        entries = writer.close()
    except EnvironmentFault as e:  # a full disk, a read-only store: what was written is kept
        with contextlib.suppress(BaseException):
            writer.close()
        e.written = [x.to_json() for x in writer.entries]
        raise
    except BaseException:
        with contextlib.suppress(BaseException):
            writer.close()
        raise
    entries = [replace(e, split_parts=len(entries)) for e in entries]
    run = id_run(reader.first_line, placed)
    atomic_write_bytes(store.split_ids_path(work.split.key), npy_bytes(run))
    rejects = sorted([r.to_json() for r in stream.rejects] + reader.duplicates, key=lambda r: r["line"])
    return SplitOutcome(entries, encoded, stream.documents, stream.repaired, stream.truncated_documents,
                        stream.truncated_tokens, reader.lines, rejects, forward, tokens, padded, waited,
                        writer.waited, time.perf_counter() - t0, dict(getattr(stream, "counts", {})))


def calibrate_split_task(work: SplitWork, encode: EncodeConfig) -> np.ndarray | None:
    """int8 ranges from the vectors of the split's first partition (its first chunks); None when
    the split gives no partition."""
    part = next(work.cut()[2], None)
    if part is None:
        return None
    return calibrate(worker_encoder(encode).encode_ids(part.input_ids()[:CALIBRATION_ROWS]))


def npy_bytes(run: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, run, allow_pickle=False)
    return buf.getvalue()


def embed_split_task(work: SplitWork, out: str, encode: EncodeConfig) -> SplitOutcome | EnvironmentFault:
    """:func:`embed_split` as a Dask task; a full disk or a read-only store comes back as its value,
    with the entries of the partitions written before it (``written``)."""
    try:
        return embed_split(work, out, encode)
    except EnvironmentFault as e:
        return e
