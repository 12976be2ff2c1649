"""The embed job on corpus splits: the driver plans, the workers read, chunk and encode.

The driver plans the corpus as splits from file metadata alone (:func:`embedlab.splits.plan_splits`:
sizes, versions, Parquet footers) and sends each split the store does not hold whole to a worker
(:func:`embedlab.split_task.embed_split_task`). Its work per split is constant and it never reads
the corpus text, so input grows with the workers. Each partition a worker writes is committed as
soon as the worker announces it; when the split's task ends, the split's record (documents, lines,
rejects) lands in ``OUT/_splits/`` and its entries learn how many partitions the split gave. A
re-run skips every split whose partitions are all in place, without reading its text.

After the last split, one pass over the splits' sorted runs of id hashes finds a document id held
by two splits: the first in corpus order wins, the others are rejected and their rows tombstoned
(readers skip them; ``embedlab compact`` rewrites the files without them). The runs are merged
block by block, so the pass's memory does not grow with the corpus.

A job with ``limit`` (the first N good documents, in order) runs on the driver's stream instead
(:func:`embedlab.pipeline.embed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import time
import uuid
from dataclasses import replace
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np

from embedlab.backends import describe
from embedlab.cluster import connect
from embedlab.codes import CodeSpec
from embedlab.config import CorpusFormat, EmbedConfig, EncodeConfig, is_url, workers_per_gpu_for
from embedlab.corpus import CorpusError, Reject, parquet_columns, reader_config, require_first_line, short
from embedlab.embed_result import EmbedResult
from embedlab.files import EnvironmentFault, atomic_write_bytes, atomic_write_json
from embedlab.jobs import run_on_cluster
from embedlab.lines import iter_lines
from embedlab.chunk_stream import make_chunker
from embedlab.pipeline import EmptyCorpusError, encode_config_for, load_encoder, prepare_store, write_rejects
from embedlab.pipeline import embed as embed_on_driver
from embedlab.prechunked import MADE, plan_prechunked, resolve
from embedlab.remote_read import plan_url
from embedlab.runs import RunFile, merge_sorted
from embedlab.split_task import (SPLIT_STRIDE, SplitOutcome, SplitWork, calibrate_split_task, embed_split_task,
                                 npy_bytes)
from embedlab.splits import SplitError, plan_splits
from embedlab.store import Manifest, PartitionEntry, Store, read_json


def embed(cfg: EmbedConfig, *, source: Any = None) -> EmbedResult:
    """Run the embed job described by ``cfg`` and return what it did.

    Args:
        cfg: the job; a chunk folder (``embedlab chunk``) as the corpus is recognized by its metadata.
        source: a Dask DataFrame or Bag of chunks to embed instead of ``cfg.corpus.path``
            (:mod:`embedlab.prechunked`; each partition is a split).

    Raises:
        CorpusError: the corpus cannot be read at all, or holds no good document.
        StoreMismatchError: ``cfg.out`` holds a store made with other settings.
    """
    cfg = resolve(cfg, source)  # chunks made elsewhere: a chunk folder, prechunked rows
    if cfg.corpus.limit is not None:
        return embed_on_driver(cfg)
    t0 = time.perf_counter()
    chunker = make_chunker(cfg)  # checks chunk_tokens against the model, before any cluster
    works, fmt, path = plan(cfg, chunker.chunk_tokens, source)
    if source is None and all(w.split.size == 0 for w in works) and not Store(cfg.out).exists():  # no cluster
        raise EmptyCorpusError(f"{cfg.corpus.path}: no document could be embedded (the corpus is empty)")
    store, cfg, fresh = prepare_store(cfg, chunker.chunk_tokens)
    with store.claimed(f"embed {cfg.corpus.path}", take_over=cfg.take_over):  # one writer at a time
        return _embed_claimed(cfg, store, works, fmt, path, fresh, t0)


def _embed_claimed(cfg: EmbedConfig, store: Store, works: list[SplitWork], fmt: CorpusFormat, path: Path,
                   fresh: bool | None, t0: float) -> EmbedResult:
    store.remove_stray_temporaries()
    manifest = store.manifest()
    manifest.complete = False
    result = EmbedResult(out=cfg.out, corpus=str(path), corpus_format=fmt.value, splits=len(works))
    job = SplitJob(store, manifest, result, cfg.progress)
    pending = [w for w in works if not job.done(w)]
    try:
        if pending:
            encode_splits(cfg, job, pending, started=t0)
        finish(job, works)
    except BaseException:
        if fresh is not None and not manifest.partitions:  # never leave a half-made store behind
            store.discard(existed=fresh)
        raise
    result.wall_seconds = time.perf_counter() - t0
    atomic_write_json(store.summary_path(), result.to_json())
    return result


def plan(cfg: EmbedConfig, chunk_tokens: int, source: Any = None) -> tuple[list[SplitWork], CorpusFormat, Path | str]:
    """The corpus's splits as tasks, its format and path, from metadata alone; a missing or
    unreadable corpus fails here."""
    if source is not None or cfg.corpus.format in MADE:
        return plan_prechunked(cfg, chunk_tokens, source)
    fmt, path, reader = reader_config(cfg.corpus)
    if fmt is CorpusFormat.PARQUET and not is_url(path):
        parquet_columns(path, reader)  # the footer only: a missing column fails before any cluster
    info = describe(cfg.encode.model, cfg.encode.revision)
    settings = {"format": fmt.value, "id": reader.id_field, "text": reader.text_field, "title": reader.title_field,
                "tokenizer": info.sha256, "chunk_tokens": chunk_tokens, "overlap": cfg.chunk.overlap,
                "truncate": cfg.chunk.truncate, "partition_tokens": cfg.partition_tokens}
    try:  # a URL: listing, footers and gzip heads checked in embedlab.remote_read
        splits = (plan_url(path, fmt, reader, settings) if is_url(path) else
                  plan_splits(str(path), split_bytes=reader.split_bytes, settings=settings))
    except SplitError as e:
        raise CorpusError(str(e)) from None
    for s in splits:
        if s.kind == "jsonl.gz" and not is_url(s.url):
            gzip_head(Path(s.url))
    if fmt is CorpusFormat.TXT and not is_url(path) and path.is_file():
        splits = [replace(s, url=str(path.parent)) for s in splits]
    works = [SplitWork(split=s, number=i, fmt=fmt, corpus=reader, tokenizer=info.path,
                       trust_remote_code=cfg.encode.trust_remote_code, chunk_tokens=chunk_tokens,
                       overlap=cfg.chunk.overlap, truncate=cfg.chunk.truncate,
                       partition_tokens=cfg.partition_tokens) for i, s in enumerate(splits)]
    return works, fmt, path


def gzip_head(path: Path) -> None:
    """Fail before any cluster starts on a ``.gz`` file with no readable line (its first block only).

    Raises:
        CorpusError: the file holds no gzip data, or its data ends before the first line.
    """
    require_first_line(iter_lines(path))


class SplitJob:
    """Splits encoded on the cluster into ``store``; partitions committed as workers announce them."""

    name = "embed"

    def __init__(self, store: Store, manifest: Manifest, result: EmbedResult, progress: bool):
        self.store, self.manifest, self.result, self.progress = store, manifest, result, progress
        self.records: dict[str, dict[str, Any]] = {}  # split key -> what it gave
        self.encoded: set[int] = set()
        self.events: queue.Queue = queue.Queue()  # filled on the Dask client's thread
        self.topic = f"embedlab-{uuid.uuid4().hex[:12]}"
        self.fed = [0, 0]
        self.chunks_committed = 0  # in the partitions committed so far this run (the progress bar)

    def key(self, work: SplitWork) -> str:
        return f"split-{work.number:05d}-{work.split.key[:16]}"

    def describe(self, work: SplitWork) -> str:
        return f"split {work.number} ({work.split.url}, {work.split.kind} {work.split.start}-{work.split.end})"

    def size(self, work: SplitWork) -> int:
        return 0  # the bar counts chunks as partitions are committed (chunks_committed), not splits

    def entries_of(self, key: str) -> list[PartitionEntry]:
        return sorted((e for e in self.manifest.partitions.values() if e.split == key), key=lambda e: e.ordinal)

    def done(self, work: SplitWork) -> bool:
        """True when the store holds every partition of the split and its record (nothing is read)."""
        key = work.split.key
        record_path = self.store.split_record_path(key)
        if record_path.is_file() and self.store.split_ids_path(key).is_file():
            record = read_json(record_path)
            entries = self.entries_of(key)
            if ([e.ordinal for e in entries] == list(range(record["parts"]))
                    and all(self.store.entry_is_current(e, e.digest) for e in entries)):
                self.records[key] = record
                self.result.partitions_skipped += len(entries)
                return True
        return False

    def prepare(self, work: SplitWork) -> SplitWork:
        """The task's input: the entries the store holds in the split's index range, to reuse."""
        prior = {k: e for k, e in self.manifest.partitions.items()
                 if work.base <= k < work.base + SPLIT_STRIDE}
        sizes = self.store.log.sizes if self.store.logged else {}
        return replace(work, prior=prior, prior_sizes={k: sizes[k] for k in prior if k in sizes},
                       verify_deep=self.store.verify_deep, topic=self.topic)

    def on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        self.events.put(event[1])

    def poll(self) -> None:
        """Commit the partitions workers have announced since the last poll."""
        changed = False
        while True:
            try:
                msg = self.events.get_nowait()
            except queue.Empty:
                break
            entry = PartitionEntry(**msg["entry"])
            self.manifest.partitions[entry.index] = entry
            self.chunks_committed += entry.rows
            if msg["encoded"]:
                self.encoded.add(entry.index)
            changed = True
        if changed:
            self.store.write_manifest(self.manifest)

    def commit_written(self, entries: list[PartitionEntry]) -> None:
        """Commit partitions a split wrote before it failed (the first fault is the one reported)."""
        for e in entries:
            self.manifest.partitions[e.index] = e
        with contextlib.suppress(EnvironmentFault):
            self.save()

    def land(self, work: SplitWork, outcome: SplitOutcome) -> None:
        self.poll()
        r = self.result
        r.forward_seconds += outcome.forward_seconds
        r.input_wait_seconds += outcome.input_wait_seconds
        r.writer_wait_seconds += outcome.writer_wait_seconds
        self.fed[0] += outcome.tokens
        self.fed[1] += outcome.padded_tokens
        self.encoded.update(outcome.encoded)
        r.partitions_skipped += len(outcome.entries) - len(outcome.encoded)
        record = {"parts": len(outcome.entries), "documents": outcome.documents, "repaired": outcome.repaired,
                  "truncated_documents": outcome.truncated_documents,
                  "truncated_tokens": outcome.truncated_tokens, "lines": outcome.lines,
                  "source": work.split.url, "rejects": outcome.rejects, "counts": outcome.counts}
        atomic_write_json(self.store.split_record_path(work.split.key), record)
        self.records[work.split.key] = record
        for e in outcome.entries:
            self.manifest.partitions[e.index] = e
        self.store.write_manifest(self.manifest)

    def save(self) -> None:
        self.poll()
        self.store.write_manifest(self.manifest)


def encode_splits(cfg: EmbedConfig, job: SplitJob, works: list[SplitWork], started: float) -> None:
    """Run ``works`` on the cluster ``cfg.cluster`` describes; each lands in ``job``."""
    result = job.result
    dim = describe(cfg.encode.model, cfg.encode.revision).dim
    with connect(workers_per_gpu_for(cfg.cluster, dim)) as (client, cluster):
        encode = encode_config_for(cfg.encode, cluster)
        result.cluster = dataclasses.asdict(cluster)
        warm = [client.submit(load_encoder, encode, workers=[w], allow_other_workers=True, pure=False)
                for w in client.scheduler_info()["workers"]]
        loaded = client.gather(warm)
        result.encoder = {**loaded[0], "dtype_notes": sorted({n for w in loaded for n in w["dtype_notes"]})}
        result.startup_seconds = time.perf_counter() - started
        spec = code_spec(cfg, job.store, client, works, encode)
        client.subscribe_topic(job.topic, job.on_event)
        try:
            stats = run_on_cluster(client, job, (replace(job.prepare(w), codes=spec) for w in works),
                                   embed_split_task,
                                   str(job.store.root), encode, max_in_flight=max(2, 2 * cluster.workers))
        except EnvironmentFault as e:  # keep what the failed split wrote before the fault
            job.commit_written([PartitionEntry(**x) for x in getattr(e, "written", [])])
            raise
        finally:
            client.unsubscribe_topic(job.topic)
        result.partitions_resent += stats.resent
        if stats.first_submit is not None:
            result.encode_wall_seconds = time.perf_counter() - stats.first_submit
    result.partitions_encoded = len(job.encoded)
    result.padding_waste = 1 - job.fed[0] / job.fed[1] if job.fed[1] else 0.0


def code_spec(cfg: EmbedConfig, store: Store, client: Any, works: list[SplitWork],
              encode: EncodeConfig) -> CodeSpec | None:
    """What each split task makes beside its vectors. int8 ranges are calibrated once per store,
    on a worker, from the corpus's first partition, and kept in the store before any partition is
    written with them, so a resume (or another worker) quantizes exactly as the first did."""
    if not cfg.codes:
        return None
    ranges = None
    if "int8" in cfg.codes:
        path = store.int8_ranges_path
        if path.is_file():
            ranges = np.load(path, allow_pickle=False)
        for work in works if ranges is None else []:
            ranges = client.submit(calibrate_split_task, work, encode, pure=False).result()
            if ranges is not None:
                atomic_write_bytes(path, npy_bytes(ranges))
                break
        if ranges is None:
            raise EmptyCorpusError(f"{cfg.corpus.path}: no chunk to calibrate int8 codes on")
    return CodeSpec.of(cfg.codes, ranges)


def finish(job: SplitJob, works: list[SplitWork]) -> None:
    """Drop stale entries, resolve ids held by two splits, write rejects and the complete manifest."""
    store, manifest, result = job.store, job.manifest, job.result
    parts = {w.split.key: job.records[w.split.key]["parts"] for w in works}
    for k, e in list(manifest.partitions.items()):
        if e.split not in parts or e.ordinal >= parts[e.split]:
            del manifest.partitions[k]
        else:
            e.tombstones = []
            e.split_parts = parts[e.split]
    rejects = split_rejects(job, works)
    losers = duplicate_rejects(store, manifest, works, rejects)
    if not manifest.partitions:
        write_rejects(store, rejects)
        raise EmptyCorpusError(f"{works[0].split.url if works else 'the corpus'}: no document could be "
                               f"embedded ({len(rejects)} record(s) rejected"
                               f"{'; see ' + str(store.rejects_path) if rejects else ''})")
    store.remove_stray_temporaries()
    manifest.complete = True
    store.write_manifest(manifest)
    store.remove_uncommitted(manifest)
    records = [job.records[w.split.key] for w in works]
    result.documents = sum(r["documents"] for r in records) - losers
    result.repaired_documents = sum(r["repaired"] for r in records)
    result.truncated_documents = sum(r["truncated_documents"] for r in records)
    result.truncated_tokens = sum(r["truncated_tokens"] for r in records)
    result.long_chunks = {k: sum(r.get("counts", {}).get(k, 0) for r in records)
                          for k in dict.fromkeys(k for r in records for k in r.get("counts", {}))}
    result.rejected = len(rejects)
    result.partitions = len(manifest.partitions)
    result.chunks = manifest.live_rows
    result.tokens = sum(p.tokens for p in manifest.partitions.values())
    result.reencoded_fp32 = [c for k in sorted(manifest.partitions) for c in manifest.partitions[k].reencoded_fp32]
    write_rejects(store, rejects)


def line_offsets(works: list[SplitWork], records: dict[str, dict[str, Any]]) -> list[int]:
    """Per split, the lines its file's earlier splits own (added to its own line numbers)."""
    seen: dict[str, int] = {}
    out = []
    for w in works:
        lines = records[w.split.key]["lines"]
        out.append(seen.get(w.split.url, 0) if lines is not None else 0)
        if lines is not None:
            seen[w.split.url] = out[-1] + lines
    return out


def split_rejects(job: SplitJob, works: list[SplitWork]) -> list[Reject]:
    """Every split's rejects in corpus order, with the file's own line numbers."""
    out = []
    for w, offset in zip(works, line_offsets(works, job.records)):
        for r in job.records[w.split.key]["rejects"]:
            reason = r["reason"]
            if r.get("first") is not None:
                reason += f" (first seen at {r['file']}:{r['first'] + offset})"
            out.append(Reject(r["file"], r["line"] + (offset if r["line"] else 0), r["doc_id"], reason))
    return out


def merged_runs(runs: list[np.ndarray | RunFile], block: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The splits' id runs merged in rounds (:func:`embedlab.runs.merge_sorted`): (rows, their run
    numbers), sorted by hash, then run, line; memory does not grow with the runs' lengths."""
    return merge_sorted(runs, ("h1", "h2"), ("line",), block)


def duplicate_rejects(store: Store, manifest: Manifest, works: list[SplitWork], rejects: list[Reject]) -> int:
    """Find ids held by two splits; keep the first, reject and tombstone the others.

    Each split's run is sorted by id hash; the runs are read block by block (no memory map, whose
    touched pages would stay resident) and merged (:func:`merged_runs`); equal neighbours are
    duplicates.

    Returns:
        How many chunked documents lost their place (they no longer count as documents).
    """
    if len(works) < 2:
        return 0
    runs = [RunFile(store.split_ids_path(w.split.key)) for w in works]
    offsets: list[int] | None = None
    losers = 0
    found = False
    for run, split_no in merged_runs(runs):
        same = (run["h1"][1:] == run["h1"][:-1]) & (run["h2"][1:] == run["h2"][:-1])
        if not same.any():
            continue
        if offsets is None:
            offsets = line_offsets(works, {w.split.key: read_json(store.split_record_path(w.split.key))
                                           for w in works})
        found = True
        first = 0
        for i in range(1, len(run)):
            if not same[i - 1]:
                first = i
                continue
            losers += _reject_duplicate(store, manifest, works, offsets, rejects, run[first], split_no[first],
                                        run[i], split_no[i])
    if found:
        rejects.sort(key=lambda r: (r.source, r.line))
    return losers


def _reject_duplicate(store: Store, manifest: Manifest, works: list[SplitWork], offsets: list[int],
                      rejects: list[Reject], win: np.void, win_split: int, lose: np.void, lose_split: int) -> int:
    doc_id, chunk_ids = _rows_of(store, manifest, lose) if lose["index"] >= 0 else (None, [])
    if doc_id is None and win["index"] >= 0:
        doc_id = _rows_of(store, manifest, win)[0]
    unit = getattr(works[lose_split], "unit", "document")
    if unit == "chunk" and chunk_ids:  # rows made upstream: the id is a chunk's (its windows', if cut)
        doc_id = chunk_ids[0] if len(chunk_ids) == 1 else chunk_ids[0].rpartition("#")[0]
    where = f"{works[win_split].split.url}:{int(win['line']) + offsets[win_split]}"
    rejects.append(Reject(works[lose_split].split.url, int(lose["line"]) + offsets[lose_split], doc_id,
                          f"duplicate {unit} id {short(doc_id)} (first seen at {where})"))
    if not chunk_ids:
        return 0
    entry = manifest.partitions[int(lose["index"])]
    entry.tombstones = sorted(set(entry.tombstones) | set(chunk_ids))
    return 1


def _rows_of(store: Store, manifest: Manifest, spot: np.void) -> tuple[str, list[str]]:
    import pyarrow.parquet as pq

    entry = manifest.partitions[int(spot["index"])]
    table = pq.read_table(store.root / entry.parquet, columns=["doc_id", "chunk_id"])
    row, n = int(spot["row"]), int(spot["n"])
    return table.column("doc_id")[row].as_py(), table.column("chunk_id").to_pylist()[row:row + n]
