"""Streaming mode: embed documents as they arrive, in small batches, and commit each batch.

A reader thread tails the source (every ``*.jsonl`` file in a watched folder, or one JSONL
change feed read as it grows), takes complete lines only, and stamps each record with the time
it first saw it. The main loop takes a micro-batch when ``max_batch`` records are waiting or
the oldest has waited ``max_delay_ms``, classifies them against the store like an update
(new, modified, unchanged, deleted), encodes the changed documents in-process with the cached
encoder (no Dask: the batch is small and latency is the point), rewrites each partition the
batch removes rows from without them (copy-on-write, as ``embedlab update`` does; with
``copy_on_write=False`` they stay tombstones until ``compact``), and commits the new partition and
the rewrites with the same roll-forward commit as ``embedlab update``
(:mod:`embedlab.rollforward`), so raw Parquet readers never see a row the stream removed once
its batch has landed. A document is searchable once that commit lands; its latency is arrival
to commit. The loop is
:func:`embedlab.jobs.run_in_process`: a Ctrl-C stops the stream between two batches.

The same commit record holds the feed's read position after the batch
(:class:`embedlab.feed.FeedPosition`), so a restart, even after a SIGKILL, reads only the
records after the last committed one; a batch that did not commit is read again.
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.chunking import Chunker
from embedlab.config import DEFAULT_MODEL, ChunkConfig, CorpusConfig, EmbedConfig, EncodeConfig, to_jsonable
from embedlab.corpus import Reject
from embedlab.device import torch_threads
from embedlab.feed import Arrival, FeedPosition, Tail, append_rejects, kept_rejects
from embedlab.encoder import cached_encoder, resolve_dtype
from embedlab.incremental import Delta, FeedOp, feed_changes, last_ops, stored_config
from embedlab.partition import Partition
from embedlab.chunk_stream import ChunkStream, make_chunker
from embedlab.pipeline import embed_partition, store_identity, write_rejects
from embedlab.jobs import run_in_process
from embedlab.store import Manifest, PartitionEntry, Store, atomic_write_json
from embedlab.transaction import (LiveDoc, commit, compact_entries, index_rows, live_documents,
                                  next_manifest, recover)


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    watch: Path  # a folder whose *.jsonl files are read as they appear and grow, or one JSONL file
    out: Path  # the store; created when missing (with model / chunk / dtype below)
    max_batch: int = 32  # most records in one micro-batch
    max_delay_ms: float = 200.0  # longest the oldest waiting record waits for its batch to fill
    max_docs: int | None = None  # stop after this many records; None (and no idle_exit_s): run
    idle_exit_s: float | None = None  # until interrupted. Stop after this long with nothing new
    poll_ms: float = 5.0  # how often the reader looks for new lines
    id_field: str = "_id"  # record fields, as for a JSONL corpus; "op" may be upsert or delete
    text_field: str = "text"
    title_field: str | None = "title"
    model: str | None = None  # a new store's settings; None: the existing store's (or defaults)
    chunk: ChunkConfig | None = None
    dtype: str | None = None
    device: str | None = None  # encoder settings that do not change vectors; None: the store's
    batch_size: int | None = None
    take_over: bool = False  # take over a stale writer claim from another host (see Store.claimed)
    read_ahead: int = 10_000  # most records read but not yet in a batch (at least 2 batches)
    copy_on_write: bool = True  # rewrite the partitions a batch removes rows from, in its commit,
    # so raw Parquet readers never see removed rows; False: tombstones (until `compact`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "watch", Path(self.watch))
        object.__setattr__(self, "out", Path(self.out))
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {self.max_batch}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0; got {self.max_delay_ms}")
        if self.read_ahead < 1:
            raise ValueError(f"read_ahead must be >= 1; got {self.read_ahead}")


@dataclass
class StreamResult:
    """What a stream run did; latencies are from arrival to searchable (the batch's commit)."""

    out: Path
    records: int = 0  # records in the batches this run took
    records_read: int = 0  # records the feed reader read this run (after the committed position)
    resumed_after: int = 0  # records of this feed that earlier runs committed (not read again)
    rewound: list[str] = field(default_factory=list)  # files changed under their committed
    # position, read again from their start
    new: int = 0
    modified: int = 0
    deleted: int = 0
    unchanged: int = 0
    rejected: int = 0
    repaired: int = 0  # documents embedded with lone surrogates replaced by U+FFFD
    chunks: int = 0
    batches: int = 0  # micro-batches taken
    commits: int = 0  # of which changed the store
    rewritten: int = 0  # partitions rewritten without the rows a batch removed (copy-on-write)
    max_batch: int = 0
    max_delay_ms: float = 0.0
    wall_seconds: float = 0.0  # first arrival to last commit
    encode_seconds: float = 0.0  # in encode + write of the partitions
    encoder: dict[str, Any] = field(default_factory=dict)  # device, threads, compiled
    latency_ms: list[float] = field(default_factory=list)  # per changed record

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else 0.0

    @property
    def changed(self) -> int:
        return self.new + self.modified + self.deleted

    @property
    def docs_per_second(self) -> float:
        return self.changed / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.wall_seconds if self.wall_seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        d = to_jsonable(dataclasses.asdict(self))
        d.update(p50_ms=self.percentile(50), p99_ms=self.percentile(99),
                 docs_per_second=self.docs_per_second, chunks_per_second=self.chunks_per_second)
        return d

    def summary(self) -> str:
        return "\n".join([
            f"records     {self.records:,}: {self.new:,} new, {self.modified:,} modified, "
            f"{self.deleted:,} deleted, {self.unchanged:,} unchanged, {self.rejected:,} rejected"
            + (f", {self.repaired:,} repaired (lone surrogates replaced by U+FFFD)" if self.repaired else ""),
            f"batches     {self.batches:,} (max {self.max_batch} records or {self.max_delay_ms:g} ms), "
            f"{self.commits:,} commits, {self.chunks:,} chunks embedded"
            + (f", {self.rewritten:,} partitions rewritten without removed rows" if self.rewritten else ""),
            f"latency     p50 {self.percentile(50):,.0f} ms, p99 {self.percentile(99):,.0f} ms "
            "(arrival to searchable)",
            f"throughput  {self.docs_per_second:,.1f} docs/s, {self.chunks_per_second:,.1f} chunks/s "
            f"over {self.wall_seconds:.1f} s",
            f"feed        {self.records_read:,} records read; {self.resumed_after:,} committed by earlier "
            "runs, not read again" + (f"; changed under their position, read from the start: "
                                      f"{', '.join(self.rewound)}" if self.rewound else ""),
            f"store       {self.out}",
        ])


def next_batch(q: queue.Queue, max_batch: int, max_delay_s: float, wait_s: float) -> list[Arrival]:
    """Up to ``max_batch`` arrivals; waits at most ``wait_s`` for the first one, and for the rest
    until the first has waited ``max_delay_s`` since its arrival."""
    try:
        batch = [q.get(timeout=wait_s)]
    except queue.Empty:
        return []
    deadline = batch[0].seen + max_delay_s
    while len(batch) < max_batch:
        try:
            batch.append(q.get_nowait())
            continue
        except queue.Empty:
            pass
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        try:
            batch.append(q.get(timeout=left))
        except queue.Empty:
            break
    return batch


@dataclass(frozen=True)
class _Staged:
    """A micro-batch classified, chunked and encoded into staging, not yet committed."""

    delta: Delta
    part: Partition | None  # None when the batch only deleted or changed nothing
    added: list[PartitionEntry]
    rewritten: list[PartitionEntry]  # partitions it removed rows from, without them (copy-on-write)


class _Writer:
    """Applies micro-batches to the store: classify, chunk, encode (the task), commit (landing).

    A job of :func:`embedlab.jobs.run_in_process`; the caller holds the store's writer claim for
    the writer's lifetime.
    """

    name = "stream"
    progress = False

    def __init__(self, store: Store, cfg: EmbedConfig, chunker: Chunker, result: StreamResult, watch: Path,
                 copy_on_write: bool = True):
        self.store, self.cfg, self.chunker, self.result = store, cfg, chunker, result
        self.copy_on_write = copy_on_write
        if not store.has_commits():
            store.write_manifest(Manifest(complete=True))
        self.manifest = recover(store)
        self.position = FeedPosition.of(watch, store.log.snapshot().meta)
        result.resumed_after = self.position.records
        self.live: dict[str, LiveDoc] = live_documents(store, self.manifest)
        encoder = cached_encoder(cfg.encode)
        encoder.encode_texts(["warm up"])
        result.encoder = {"device": encoder.device, "compiled": bool(getattr(encoder, "compiled", False)),
                          "torch_threads": torch_threads()}
        # Earlier runs' rejects of committed lines stay; those of an uncommitted batch go (re-read).
        self.rejects: list[Reject] = kept_rejects(store.rejects_path, self.position, watch)
        write_rejects(store, self.rejects)
        self.rejects_before = self.rejects_written = len(self.rejects)

    def key(self, batch: list[Arrival]) -> str:
        return f"stream-batch-{self.result.batches}"

    def describe(self, batch: list[Arrival]) -> str:
        return f"micro-batch {self.result.batches} ({len(batch)} records)"

    def done(self, batch: list[Arrival]) -> bool:
        return False  # a stream never sees a batch twice

    def size(self, batch: list[Arrival]) -> int:
        return len(batch)

    def stage(self, batch: list[Arrival]) -> _Staged:
        delta = Delta(self.live)
        docs = list(feed_changes(last_ops((a.record for a in batch), self.rejects), delta))
        stream = ChunkStream(docs, self.chunker, max(1, len(docs)))
        part = next(stream.partitions(sys.maxsize, first_index=self.manifest.next_index), None)
        self.rejects += stream.rejects
        self.result.repaired += stream.repaired
        added = []
        if part is not None:
            t0 = time.perf_counter()
            added.append(embed_partition(part, str(self.store.staging.root), self.cfg.encode).entry)
            self.result.encode_seconds += time.perf_counter() - t0
        rewritten = []
        if self.copy_on_write and delta.dead:
            rewritten = compact_entries(self.store, next_manifest(self.manifest, [], delta.dead),
                                        only=delta.dead.keys())
        return _Staged(delta, part, added, rewritten)

    def land(self, batch: list[Arrival], staged: _Staged) -> None:
        append_rejects(self.store.rejects_path, self.rejects[self.rejects_written:])
        self.rejects_written = len(self.rejects)
        position = self.position.after([a.mark for a in batch if a.mark is not None])
        sets = {position.key: position.to_json()}  # in the batch's own commit record
        if staged.added or staged.delta.dead:
            new = next_manifest(self.manifest, staged.added, staged.delta.dead)
            for e in staged.rewritten:
                new.partitions[e.index] = e
            commit(self.store, new, [*staged.added, *staged.rewritten], sets=sets)
            self.manifest = new
            self.result.commits += 1
            self.result.rewritten += len(staged.rewritten)
        else:  # nothing changed: the record holds the position alone
            self.store.write_manifest(self.manifest, sets=sets)
        self.position = position
        self._record(batch, staged.delta, staged.part, time.perf_counter())

    def save(self) -> None:
        pass  # every batch was committed as it landed

    def _record(self, batch: list[Arrival], delta: Delta, part: Partition | None, done: float) -> None:
        for doc_id in delta.removed:
            self.live.pop(doc_id, None)
        if part is not None:
            self.live.update(index_rows(part.index, part.doc_ids, part.chunk_ids, part.doc_sha256))
            self.result.chunks += part.n_chunks
        r, c = self.result, delta.counts
        r.batches += 1
        r.records += len(batch)
        r.new, r.modified, r.deleted, r.unchanged = (r.new + c.new, r.modified + c.modified,
                                                     r.deleted + c.deleted, r.unchanged + c.unchanged)
        r.latency_ms += [(done - a.seen) * 1e3 for a in batch
                         if isinstance(a.record, FeedOp) and a.record.doc_id in delta.changed]


def stream_config(cfg: StreamConfig) -> EmbedConfig:
    """Embed settings for the stream: the store's own, or a new store's from ``cfg``."""
    store = Store(cfg.out)
    overrides = {"device": cfg.device, "batch_size": cfg.batch_size}
    if store.exists():
        base = stored_config(store, **overrides)
    else:
        encode = EncodeConfig(model=DEFAULT_MODEL, **{k: v for k, v in overrides.items() if v is not None})
        base = EmbedConfig(corpus=_reader(cfg), out=cfg.out, encode=encode)
    given = {k: v for k, v in {"model": cfg.model, "dtype": cfg.dtype}.items() if v is not None}
    encode = resolve_dtype(dataclasses.replace(base.encode, **given),
                           store.meta().get("dtype") if store.exists() else None)
    return dataclasses.replace(base, encode=encode, chunk=cfg.chunk or base.chunk, progress=False)


def _reader(cfg: StreamConfig) -> CorpusConfig:
    return CorpusConfig(path=cfg.watch, id_field=cfg.id_field, text_field=cfg.text_field,
                        title_field=cfg.title_field)


def stream(cfg: StreamConfig, *, on_ready: Callable[[], None] | None = None) -> StreamResult:
    """Run the streaming loop until ``cfg.max_docs`` records or ``cfg.idle_exit_s`` of silence.

    ``on_ready`` is called once the model is loaded and warm, just before the source is read
    (a benchmark starts its producer there, so no record waits on the model load).

    Raises:
        StoreError: ``cfg.out`` holds an unfinished or pre-hash store.
        StoreMismatchError: ``cfg.out`` was made with other model or chunking settings.
    """
    if not cfg.watch.exists():
        raise FileNotFoundError(f"nothing to watch at {cfg.watch}")
    store = Store(cfg.out)
    ecfg = stream_config(cfg)
    chunker = make_chunker(ecfg)
    store.init(store_identity(ecfg, chunker.chunk_tokens))
    with store.claimed(f"stream {cfg.watch}", take_over=cfg.take_over):
        return _run(cfg, _Writer(store, ecfg, chunker, StreamResult(
            out=store.root, max_batch=cfg.max_batch, max_delay_ms=cfg.max_delay_ms), cfg.watch,
            cfg.copy_on_write), on_ready)


def _run(cfg: StreamConfig, writer: _Writer, on_ready: Callable[[], None] | None) -> StreamResult:
    store, result = writer.store, writer.result
    arrivals: queue.Queue = queue.Queue(maxsize=max(cfg.read_ahead, 2 * cfg.max_batch))
    tail = Tail(cfg.watch, _reader(cfg), arrivals, cfg.poll_ms / 1e3, cfg.max_docs,
                start=writer.position.files)
    if on_ready is not None:
        on_ready()
    tail.start()

    def batches() -> Iterator[list[Arrival] | None]:
        """Micro-batches as they fill; None while waiting, until the source is done or idle."""
        first: float | None = None
        last_activity = time.perf_counter()
        while True:
            batch = next_batch(arrivals, cfg.max_batch, cfg.max_delay_ms / 1e3, 0.05)
            if batch:
                first = batch[0].seen if first is None else first
                yield batch  # the runner lands (commits) it before asking for the next one
                last_activity = time.perf_counter()
                result.wall_seconds = last_activity - first
                continue
            if tail.error is not None:
                raise tail.error
            if tail.done.is_set() and arrivals.empty():
                return
            if cfg.idle_exit_s is not None and time.perf_counter() - last_activity >= cfg.idle_exit_s:
                return
            yield None

    try:
        run_in_process(writer, batches(), writer.stage)
    finally:
        tail.stop()
        tail.join(timeout=5)
        result.records_read, result.rewound = tail.count, list(tail.rewound)
        result.rejected = len(writer.rejects) - writer.rejects_before
        write_rejects(store, writer.rejects)
        atomic_write_json(store.summary_path("stream"), result.to_json())
    return result
