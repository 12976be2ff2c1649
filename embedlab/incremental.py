"""Keep a store current: embed only what changed, tombstone what is gone, compact later.

Every partition row carries ``doc_sha256``, the sha256 of its document's encoded text, so the
store knows, per live document, what it embedded. ``update`` compares a new snapshot (or an
explicit change feed) with that and classifies each document as new, modified, unchanged or
deleted. New and modified documents are chunked and encoded on the same Dask machinery as
``embed`` into new partitions, numbered after the store's last one; the old chunks of modified
and deleted documents become tombstones in the manifest entry of the partition that holds
them, and readers skip them at once. By default (copy-on-write) the update also rewrites each
partition it removed rows from, without them, as that partition's next generation in the same
commit, so readers of the raw Parquet dataset never see removed rows either; with
``copy_on_write=False`` they stay tombstones until ``compact`` rewrites such partitions.

An update is atomic: its partitions are staged, then committed with one manifest write, and an
interrupted run resumes from what it staged (see :mod:`embedlab.transaction`).
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedlab.chunking import Chunker
from embedlab.config import (ChunkConfig, ClusterConfig, CorpusConfig, EmbedConfig, EncodeConfig,
                             to_jsonable)
from embedlab.corpus import (CorpusError, Document, Record, Reject, guarded, normalize_doc_id, short,
                             parse_jsonl_line, read_corpus, record_from_json, resolve_format)
from embedlab.lines import Cut, NotCompressedError, iter_lines
from embedlab.partition import Partition
from embedlab.embed_result import EmbedResult
from embedlab.chunk_stream import ChunkStream, content_sha256, make_chunker
from embedlab.pipeline import encode_partitions, store_identity, write_rejects
from embedlab.store import Manifest, PartitionEntry, Store, atomic_write_json
from embedlab.transaction import (LiveDoc, commit, compact_entries, discard_staging, live_documents,
                                  next_manifest, recover)


class Op(str, enum.Enum):
    UPSERT = "upsert"
    DELETE = "delete"


@dataclass(frozen=True)
class FeedOp:
    """One change-feed record: an upsert carries the document, a delete only its id."""

    op: Op
    doc_id: str
    doc: Document | None


@dataclass
class ChangeCounts:
    new: int = 0
    modified: int = 0
    unchanged: int = 0
    deleted: int = 0
    absent: int = 0  # deletes of ids the store does not hold (ignored)


class Delta:
    """Classifies documents against the live ones and collects the tombstones they imply.

    Args:
        live: doc id -> what the store holds (see :func:`live_documents`); not modified.
    """

    def __init__(self, live: dict[str, LiveDoc]):
        self.live = live
        self.counts = ChangeCounts()
        self.dead: dict[int, set[str]] = {}  # partition index -> chunk ids to tombstone
        self.removed: set[str] = set()  # doc ids whose live chunks are tombstoned
        self.changed: set[str] = set()  # doc ids that are new, modified or deleted

    def upsert(self, doc: Document) -> bool:
        """Classify ``doc``; True when it must be (re-)embedded."""
        old = self.live.get(doc.doc_id)
        if old is not None and old.sha256 == content_sha256(doc.text):
            self.counts.unchanged += 1
            return False
        self.changed.add(doc.doc_id)
        if old is None:
            self.counts.new += 1
        else:
            self.counts.modified += 1
            self._kill(doc.doc_id, old)
        return True

    def delete(self, doc_id: str) -> None:
        old = self.live.get(doc_id)
        if old is None:
            self.counts.absent += 1
            return
        self.counts.deleted += 1
        self.changed.add(doc_id)
        self._kill(doc_id, old)

    @property
    def tombstoned(self) -> int:
        return sum(len(ids) for ids in self.dead.values())

    def _kill(self, doc_id: str, old: LiveDoc) -> None:
        self.dead.setdefault(old.partition, set()).update(old.chunk_ids)
        self.removed.add(doc_id)


# -- change feeds ----------------------------------------------------------------------------
def parse_feed_line(raw: bytes, cfg: CorpusConfig, source: str, line: int) -> FeedOp | Reject | None:
    """One JSONL change-feed line -> :class:`FeedOp`, a :class:`Reject`, or None for a blank line.

    A record is ``{"op": "upsert", <id>, <title>, <text>}`` or ``{"op": "delete", <id>}`` with
    the field names of ``cfg``; a record without ``op`` is an upsert.
    """
    return guarded(lambda: _feed_op(raw, cfg, source, line), source, line)


def _feed_op(raw: bytes, cfg: CorpusConfig, source: str, line: int) -> FeedOp | Reject | None:
    obj = parse_jsonl_line(raw, source, line)
    if obj is None or isinstance(obj, Reject):
        return obj
    op = obj.get("op", Op.UPSERT.value)
    if op not in (Op.UPSERT.value, Op.DELETE.value):
        return Reject(source, line, None, f"op must be upsert or delete; got {short(op)}")
    if op == Op.DELETE.value:
        doc_id = normalize_doc_id(obj.get(cfg.id_field))
        if doc_id is None:
            return Reject(source, line, None, f"delete without a valid id field {cfg.id_field!r}")
        return FeedOp(Op.DELETE, doc_id, None)
    rec = record_from_json(obj, cfg, source, line)
    return rec if isinstance(rec, Reject) else FeedOp(Op.UPSERT, rec.doc_id, rec)


def read_feed(cfg: CorpusConfig) -> Iterator[FeedOp | Reject]:
    """Every record of the JSONL change feed at ``cfg.path``, in file order (a damaged gzip
    feed gives every line before the damage, then a reject naming the cut)."""
    source = str(cfg.path)
    try:
        for item in iter_lines(cfg.path):
            rec = (Reject(source, item.line, None, item.reason) if isinstance(item, Cut)
                   else parse_feed_line(item[1], cfg, source, item[0]))
            if rec is not None:
                yield rec
    except NotCompressedError as e:
        raise CorpusError(f"cannot read the change feed: {e}") from None


def last_ops(records: Iterable[FeedOp | Reject], rejects: list[Reject]) -> list[FeedOp]:
    """The last op per document, in the order those last ops came; rejects go to ``rejects``."""
    last: dict[str, FeedOp] = {}
    for rec in records:
        if isinstance(rec, Reject):
            rejects.append(rec)
            continue
        last.pop(rec.doc_id, None)
        last[rec.doc_id] = rec
    return list(last.values())


def feed_changes(ops: Iterable[FeedOp], delta: Delta) -> Iterator[Document]:
    """Apply change-feed ops to ``delta``; yield the documents to embed."""
    for op in ops:
        if op.op is Op.DELETE:
            delta.delete(op.doc_id)
        elif delta.upsert(op.doc):
            yield op.doc


def snapshot_changes(records: Iterable[Record], delta: Delta) -> Iterator[Record]:
    """Compare a full snapshot with ``delta.live``: yield rejects and the documents to embed.

    Live documents the snapshot lacks are deleted once the snapshot has been read to its end.
    """
    seen: set[str] = set()
    for rec in records:
        if isinstance(rec, Document):
            seen.add(rec.doc_id)
            if not delta.upsert(rec):
                continue
        yield rec
    for doc_id in delta.live.keys() - seen:
        delta.delete(doc_id)


# -- the update job --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class UpdateConfig:
    source: Path  # the new snapshot (any corpus format embed reads), or a JSONL change feed
    out: Path  # an existing store
    feed: bool = False  # source is a change feed: records with op upsert / delete
    compact: bool = False  # also rewrite the partitions holding tombstones, in the same commit
    copy_on_write: bool = True  # rewrite the partitions this update removes rows from, without
    # them, in the same commit (raw Parquet readers never see removed rows); False: tombstones
    corpus_format: str | None = None  # reader settings; None: as the store's embed read its corpus
    id_field: str | None = None
    text_field: str | None = None
    title_field: str | None = None
    batch_size: int | None = None  # encoder settings that do not change vectors; None: the store's
    device: str | None = None
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # as for embed
    progress: bool = True
    take_over: bool = False  # take over a stale writer claim from another host (see Store.claimed)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "out", Path(self.out))


@dataclass
class UpdateResult:
    """What an update did, and what it cost against re-embedding everything."""

    out: Path
    counts: ChangeCounts = field(default_factory=ChangeCounts)
    rejected: int = 0
    repaired_documents: int = 0  # embedded with lone surrogates replaced by U+FFFD
    chunks_embedded: int = 0  # chunks of new and modified documents
    tokens_embedded: int = 0
    chunks_tombstoned: int = 0  # old chunks of modified and deleted documents
    chunks_total: int = 0  # live chunks after the update
    partitions_added: int = 0
    partitions_resumed: int = 0  # staged by an interrupted run of the same update, not re-encoded
    partitions_compacted: int = 0  # rewritten without every tombstone (--compact)
    partitions_rewritten: int = 0  # rewritten without the rows this update removed (copy-on-write)
    committed: bool = False  # False when nothing changed and the store was left as it was
    wall_seconds: float = 0.0
    embed: dict[str, Any] = field(default_factory=dict)  # the delta's embed run (EmbedResult)

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    @property
    def reembedded_fraction(self) -> float:
        return self.chunks_embedded / self.chunks_total if self.chunks_total else 0.0

    def to_json(self) -> dict[str, Any]:
        d = to_jsonable(dataclasses.asdict(self))
        d.update(ok=self.ok, reembedded_fraction=self.reembedded_fraction)
        return d

    def summary(self) -> str:
        c = self.counts
        absent = f" ({c.absent:,} deletes of unknown ids ignored)" if c.absent else ""
        resumed = (f" ({self.partitions_resumed:,} resumed from an interrupted run)"
                   if self.partitions_resumed else "")
        lines = [
            f"documents   {c.new:,} new, {c.modified:,} modified, {c.deleted:,} deleted, "
            f"{c.unchanged:,} unchanged{absent}",
            f"re-embedded {self.chunks_embedded:,} of {self.chunks_total:,} chunks "
            f"({self.reembedded_fraction:.2%}), {self.tokens_embedded:,} tokens",
            f"tombstoned  {self.chunks_tombstoned:,} chunks",
            f"partitions  {self.partitions_added:,} added{resumed}"
            + (f", {self.partitions_compacted:,} compacted" if self.partitions_compacted else "")
            + (f", {self.partitions_rewritten:,} rewritten without removed rows" if self.partitions_rewritten else ""),
            f"rejected    {self.rejected:,}" + (f" ({self.repaired_documents:,} documents repaired: lone "
                                                 "surrogates -> U+FFFD)" if self.repaired_documents else ""),
            f"wall time   {self.wall_seconds:.1f} s"
            + (f" (encode {self.embed.get('encode_wall_seconds', 0.0):.1f} s)" if self.embed else ""),
            f"store       {self.out}" + ("" if self.committed else " (unchanged)"),
        ]
        return "\n".join(lines)


def stored_config(store: Store, **encode_overrides: Any) -> EmbedConfig:
    """The embed settings a store recorded, with the corpus left to the caller.

    The model is loaded from the path the store recorded when it is still there (a relative
    ``--model`` folder need not resolve from the current directory); the store's identity check
    still compares its weights' checksum.
    """
    meta = store.meta()
    cfg = meta.get("config") or {}
    encode = _fields(EncodeConfig, cfg.get("encode", {}))
    if Path(meta.get("model_path", "")).is_dir():
        encode["model"] = meta["model_path"]
    encode.update({k: v for k, v in encode_overrides.items() if v is not None})
    return EmbedConfig(
        corpus=CorpusConfig(**_fields(CorpusConfig, {**cfg.get("corpus", {}), "limit": None})),
        out=store.root,
        chunk=ChunkConfig(**_fields(ChunkConfig, cfg.get("chunk", {}))),
        encode=EncodeConfig(**encode),
        partition_tokens=int(cfg.get("partition_tokens", EmbedConfig.partition_tokens)),
    )


def _fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _reader(cfg: UpdateConfig, stored: CorpusConfig) -> CorpusConfig:
    given = {"format": cfg.corpus_format, "id_field": cfg.id_field, "text_field": cfg.text_field,
             "title_field": cfg.title_field}
    changes = {k: v for k, v in given.items() if v is not None}
    if changes.get("title_field") == "":
        changes["title_field"] = None
    return dataclasses.replace(stored, path=cfg.source, limit=None, **changes)


def update(cfg: UpdateConfig) -> UpdateResult:
    """Bring the store at ``cfg.out`` up to date with ``cfg.source``; embed only what changed.

    Raises:
        StoreError: ``cfg.out`` is not a finished store, or predates document hashes.
        StoreMismatchError: the store's model files changed since it was made.
        CorpusError: the source cannot be read.
    """
    t0 = time.perf_counter()
    store = Store(cfg.out)
    stored = stored_config(store, batch_size=cfg.batch_size, device=cfg.device)
    ecfg = dataclasses.replace(stored, corpus=_reader(cfg, stored.corpus), cluster=cfg.cluster,
                               progress=cfg.progress)
    if not cfg.source.exists():
        raise CorpusError(f"{'change feed' if cfg.feed else 'corpus path'} does not exist: {cfg.source}")
    if not cfg.feed:
        resolve_format(ecfg.corpus)
    chunker = make_chunker(ecfg)
    store.init(store_identity(ecfg, chunker.chunk_tokens))
    with store.claimed(f"update {cfg.source}", take_over=cfg.take_over):
        return _update(cfg, ecfg, store, chunker, t0)


def _update(cfg: UpdateConfig, ecfg: EmbedConfig, store: Store, chunker: Chunker, t0: float) -> UpdateResult:
    manifest = recover(store)
    delta = Delta(live_documents(store, manifest))
    rejects: list[Reject] = []
    if cfg.feed:
        records: Iterable[Record] = feed_changes(last_ops(read_feed(ecfg.corpus), rejects), delta)
    else:
        records = snapshot_changes(read_corpus(ecfg.corpus), delta)
    stream = ChunkStream(records, chunker, ecfg.corpus.block_docs)
    result = UpdateResult(out=store.root)
    added = _embed_delta(ecfg, store, manifest, stream, result)
    rejects += stream.rejects

    new = next_manifest(manifest, added, delta.dead)
    compacted = (compact_entries(store, new) if cfg.compact else
                 compact_entries(store, new, only=delta.dead.keys()) if cfg.copy_on_write else [])
    for e in compacted:
        new.partitions[e.index] = e
    result.committed = bool(added or delta.dead or compacted)
    if result.committed:
        commit(store, new, [*added, *compacted])
        write_rejects(store, rejects)
    else:
        discard_staging(store)

    result.counts = delta.counts
    result.rejected = len(rejects)
    result.repaired_documents = stream.repaired
    result.chunks_embedded = sum(e.rows for e in added)
    result.tokens_embedded = sum(e.tokens for e in added)
    result.chunks_tombstoned = delta.tombstoned
    result.chunks_total = (new if result.committed else manifest).live_rows
    result.partitions_added = len(added)
    result.partitions_compacted = len(compacted) if cfg.compact else 0
    result.partitions_rewritten = 0 if cfg.compact else len(compacted)
    result.wall_seconds = time.perf_counter() - t0
    if result.committed:
        atomic_write_json(store.summary_path("update"), result.to_json())
    return result


def _embed_delta(cfg: EmbedConfig, store: Store, manifest: Manifest, stream: ChunkStream,
                 result: UpdateResult) -> list[PartitionEntry]:
    """Encode the changed documents into staging; return their entries, in index order."""
    staging = store.staging
    journal = staging.manifest()
    parts = stream.partitions(cfg.partition_tokens, first_index=manifest.next_index)
    planned = 0
    first: Partition | None = None
    for part in parts:  # partitions an interrupted run staged need no cluster
        if not staging.entry_is_current(journal.partitions.get(part.index), part.digest):
            first = part
            break
        planned += 1
    result.partitions_resumed = planned
    if first is not None:
        run = EmbedResult(out=store.root)
        planned += encode_partitions(cfg, staging, journal, first, parts, run)
        run.documents, run.partitions = stream.documents, planned
        run.chunks = sum(e.rows for e in journal.partitions.values())
        result.partitions_resumed += run.partitions_skipped
        result.embed = run.to_json()
    keep = range(manifest.next_index, manifest.next_index + planned)
    return [journal.partitions[k] for k in sorted(journal.partitions) if k in keep]


# -- compaction ------------------------------------------------------------------------------
@dataclass
class CompactResult:
    out: Path
    partitions_compacted: int = 0
    rows_dropped: int = 0
    bytes_before: int = 0  # of the rewritten partitions' files
    bytes_after: int = 0
    wall_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    def summary(self) -> str:
        return (f"compacted   {self.partitions_compacted:,} partitions, dropped {self.rows_dropped:,} "
                f"tombstoned rows ({self.bytes_before / 2**20:.1f} -> {self.bytes_after / 2**20:.1f} MiB) "
                f"in {self.wall_seconds:.1f} s\nstore       {self.out}")


def _size(store: Store, e: PartitionEntry) -> int:
    return sum((store.root / f).stat().st_size for f in (e.parquet, e.faiss))


def compact(out: Path | str) -> CompactResult:
    """Rewrite every partition that holds tombstoned rows without them, in one commit."""
    t0 = time.perf_counter()
    store = Store(out)
    store.meta()
    with store.claimed("compact"):
        manifest = recover(store)
        entries = compact_entries(store, manifest)
        result = CompactResult(out=store.root, partitions_compacted=len(entries))
        if entries:
            new = next_manifest(manifest, entries, {})
            for e in entries:
                old = manifest.partitions[e.index]
                result.rows_dropped += old.rows - e.rows
                result.bytes_before += _size(store, old)
                result.bytes_after += _size(store.staging, e)
            commit(store, new, entries)
    result.wall_seconds = time.perf_counter() - t0
    return result
