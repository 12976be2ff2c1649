"""The embed job: corpus -> chunks -> partitions -> encoder tasks on Dask -> store.

The driver streams the corpus in blocks, chunks each block with the model's tokenizer and cuts
the stream into token-balanced partitions. Each partition that the store does not already hold
(same content digest, files whose sha256 match the manifest) becomes one Dask task, and at
most a few tasks per worker are in flight, so memory stays bounded however large the corpus.
A task encodes its partition with the worker's cached encoder and writes its Parquet file and
FAISS shard atomically; the driver records the result in the manifest as each one lands, so
an interrupted run loses only the partitions in flight. The submitting, re-sending and landing
is :mod:`embedlab.jobs`'s; :class:`PartitionJob` says how a partition is skipped and recorded.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedlab.backends import describe, worker_encoder
from embedlab.chunk_stream import ChunkStream, make_chunker
from embedlab.chunking import Chunker
from embedlab.codes import CodeSpec, code_columns
from embedlab.cluster import ClusterInfo, connect
from embedlab.config import Dtype, EmbedConfig, EncodeConfig, is_url, to_jsonable, workers_per_gpu_for
from embedlab.corpus import CorpusError, Reject, read_corpus, resolve_format
from embedlab.embed_result import EmbedResult
from embedlab.encoder import resolve_dtype
from embedlab.files import EnvironmentFault, probe_writable
from embedlab.index import ID_SCHEME
from embedlab.jobs import run_on_cluster
from embedlab.partition import Partition
from embedlab.remote_read import url_records
from embedlab.store import (
    FORMAT_VERSION,
    Manifest,
    PartitionEntry,
    Store,
    atomic_write_bytes,
    atomic_write_json,
)

if TYPE_CHECKING:
    from distributed import Future


# Partitions the driver may chunk ahead while the workers load their models (~1 MB each at the
# default 65,536 tokens).
CHUNK_AHEAD_WHILE_LOADING = 32


class EmptyCorpusError(CorpusError):
    pass


class NonFiniteVectorError(RuntimeError):
    pass



def store_identity(cfg: EmbedConfig, chunk_tokens: int) -> dict[str, Any]:
    info = describe(cfg.encode.model, cfg.encode.revision)
    return {
        "format_version": FORMAT_VERSION,
        "model": info.name,
        "model_path": info.path,
        "model_revision": info.revision,
        "model_sha256": info.sha256,
        "pooling": info.pooling,
        "normalize": info.normalize,
        "max_seq_length": info.max_seq_length,
        "dim": info.dim,
        "dtype": cfg.encode.dtype.value,
        "chunk_tokens": chunk_tokens,
        "overlap": cfg.chunk.overlap_for(chunk_tokens),
        "truncate": cfg.chunk.truncate,
        "vector_dtype": "float32",
        "metric": "inner_product",
        "faiss_id": ID_SCHEME,
        **({"codes": list(cfg.codes)} if cfg.codes else {}),  # absent: no code columns (older stores too)
        "config": to_jsonable(cfg),
    }


# -- worker side ----------------------------------------------------------------------------
def load_encoder(encode: EncodeConfig) -> dict[str, Any]:
    """Load (and cache) the worker's encoder before any partition arrives; say how it runs."""
    t0 = time.perf_counter()
    enc = worker_encoder(encode)
    note = enc.dtype_note and f"worker {platform.node()}: {enc.dtype_note}"
    return {"load_seconds": time.perf_counter() - t0, "device": enc.device, "dtype": enc.dtype.value,
            "dtype_notes": [note] if note else [],
            "compiled": enc.compiled, "compile_error": enc.compile_error, "torch_threads": enc.torch_threads,
            "max_batch_tokens": enc.max_batch_tokens, "batch_size": encode.batch_size,
            "keeps_freed_memory": enc.keeps_freed_memory}


@dataclass(frozen=True)
class PartitionOutcome:
    """A finished partition: its manifest entry, and timings that stay out of the manifest."""

    entry: PartitionEntry
    task_seconds: float  # the whole task: encode, check, write
    forward_seconds: float  # inside the model's forward passes
    tokens: int
    padded_tokens: int


def encode_partition(part: Partition, encode: EncodeConfig, codes: CodeSpec | None = None,
                     ) -> tuple[np.ndarray, dict[str, np.ndarray], list[str], tuple[float, int, int]]:
    """A partition's vectors, their ``codes`` (made on the encoder's device), the chunks
    re-encoded in fp32 (non-finite at ``encode.dtype``), and the forward seconds, real and padded
    tokens it took. Runs on a Dask worker."""
    encoder = worker_encoder(encode)
    before = dataclasses.replace(encoder.stats)
    vectors, made = encoder.encode_ids_coded(part.input_ids(), codes)
    stats = encoder.stats
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    reencoded: list[str] = []
    if bad.size:
        if encode.dtype is Dtype.FP32:
            raise NonFiniteVectorError(
                f"partition {part.index}: non-finite vector in fp32 for chunk(s) "
                f"{[part.chunk_ids[i] for i in bad[:10]]}")
        fp32 = worker_encoder(replace(encode, dtype=Dtype.FP32))
        ids = part.input_ids()
        vectors[bad] = fp32.encode_ids([ids[i] for i in bad])
        reencoded = [part.chunk_ids[i] for i in bad]
        for kind, rows in (codes.on_host(vectors[bad]) if codes else {}).items():
            made[kind][bad] = rows
    return vectors, made, reencoded, (stats.forward_seconds - before.forward_seconds, stats.tokens - before.tokens,
                                stats.padded_tokens - before.padded_tokens)


def write_partition(part: Partition, out: str, vectors: np.ndarray, reencoded: list[str],
                    codes: dict[str, np.ndarray] | None = None) -> PartitionEntry:
    """Write a partition's Parquet file (with its ``codes`` as columns) and FAISS shard into the
    store ``out``; its manifest entry."""
    store = Store(out)
    columns = {"chunk_id": part.chunk_ids, "doc_id": part.doc_ids, "chunk_index": part.chunk_index,
               "char_start": part.char_start, "char_end": part.char_end,
               "n_tokens": part.n_tokens_per_chunk(), "text": part.texts}
    if part.doc_sha256:
        columns["doc_sha256"] = part.doc_sha256
    columns.update(code_columns(codes or {}))
    pq_sha, fs_sha = store.write_partition(part.index, columns, vectors)
    return PartitionEntry(
        index=part.index, rows=part.n_chunks, tokens=part.n_tokens, docs=part.n_docs,
        digest=part.digest,
        parquet=store.parquet_path(part.index).relative_to(store.root).as_posix(),
        faiss=store.faiss_path(part.index).relative_to(store.root).as_posix(),
        parquet_sha256=pq_sha, faiss_sha256=fs_sha, reencoded_fp32=reencoded,
    )


def embed_partition(part: Partition, out: str, encode: EncodeConfig) -> PartitionOutcome:
    """Encode one partition and write its files. Runs on a Dask worker; pure given its inputs."""
    t0 = time.perf_counter()
    vectors, _, reencoded, (forward, tokens, padded) = encode_partition(part, encode)
    entry = write_partition(part, out, vectors, reencoded)
    return PartitionOutcome(entry, time.perf_counter() - t0, forward, tokens, padded)


def embed_partition_task(part: Partition, out: str, encode: EncodeConfig,
                         ) -> PartitionOutcome | EnvironmentFault:
    """:func:`embed_partition` as a Dask task. A full disk or a read-only store comes back as the
    task's value, not its exception: the worker neither retries it nor logs a traceback, and the
    driver raises it as one line."""
    try:
        return embed_partition(part, out, encode)
    except EnvironmentFault as e:
        return e


# -- driver side ----------------------------------------------------------------------------


def embed(cfg: EmbedConfig) -> EmbedResult:
    """Run the embed job described by ``cfg`` and return what it did.

    Raises:
        CorpusError: the corpus cannot be read at all, or holds no good document.
        StoreMismatchError: ``cfg.out`` holds a store made with other settings.
    """
    t0 = time.perf_counter()
    chunker = make_chunker(cfg)
    fmt, path = resolve_format(cfg.corpus)  # fail on a missing path before any cluster starts
    store, cfg, fresh = prepare_store(cfg, chunker.chunk_tokens)
    with store.claimed(f"embed {cfg.corpus.path}", take_over=cfg.take_over):  # one writer at a time
        return _embed_claimed(cfg, store, chunker, fmt, path, fresh, t0)


def _embed_claimed(cfg: EmbedConfig, store: Store, chunker: Chunker, fmt: Any, path: Path,
                   fresh: bool | None, t0: float) -> EmbedResult:
    store.remove_stray_temporaries()
    manifest = store.manifest()
    manifest.complete = False
    result = EmbedResult(out=cfg.out, corpus=str(path), corpus_format=fmt.value)
    records = url_records(cfg.corpus) if is_url(cfg.corpus.path) else None  # object storage
    stream = ChunkStream(read_corpus(cfg.corpus, records), chunker, cfg.corpus.block_docs)

    partitions = stream.partitions(cfg.partition_tokens)
    n_parts, first = skip_current(partitions, store, manifest, result)  # before any cluster starts
    if first is None and not n_parts:  # an empty corpus fails here, before any cluster starts
        write_rejects(store, stream.rejects)
        raise EmptyCorpusError(
            f"{cfg.corpus.path}: no document could be embedded ({len(stream.rejects)} record(s) "
            f"rejected{'; see ' + str(store.rejects_path) if stream.rejects else ''})")
    try:
        if first is not None:
            n_parts += encode_partitions(cfg, store, manifest, first, partitions, result, started=t0)
    except BaseException:
        if fresh is not None and not manifest.partitions:  # never leave a half-made store behind
            store.discard(existed=fresh)
        raise

    store.remove_stray_temporaries()  # left by attempts on workers that died mid-write
    for stale in [k for k in manifest.partitions if k >= n_parts]:
        del manifest.partitions[stale]
    manifest.complete = True
    store.write_manifest(manifest)
    store.remove_uncommitted(manifest)  # stale partitions, and files of superseded generations

    result.documents = stream.documents
    result.repaired_documents = stream.repaired
    result.rejected = len(stream.rejects)
    result.truncated_documents = stream.truncated_documents
    result.truncated_tokens = stream.truncated_tokens
    result.partitions = n_parts
    result.chunks = manifest.rows
    result.tokens = sum(p.tokens for p in manifest.partitions.values())
    result.reencoded_fp32 = [c for p in manifest.partitions.values() for c in p.reencoded_fp32]
    write_rejects(store, stream.rejects)
    result.wall_seconds = time.perf_counter() - t0
    atomic_write_json(store.summary_path(), result.to_json())
    return result


def prepare_store(cfg: EmbedConfig, chunk_tokens: int) -> tuple[Store, EmbedConfig, bool | None]:
    """Open (or create) ``cfg.out`` for an embed: the store, ``cfg`` with its dtype resolved (an
    existing store keeps its own), and None when resuming, else whether the folder existed.

    Raises:
        StoreMismatchError: the store was made with other settings.
        EnvironmentFault: the folder cannot be written (before any cluster starts).
    """
    store = Store(cfg.out, verify_deep=cfg.verify_deep)
    fresh = None if store.exists() else cfg.out.is_dir()
    cfg = replace(cfg, encode=resolve_dtype(cfg.encode, store.meta().get("dtype") if store.exists() else None))
    store.init(store_identity(cfg, chunk_tokens))
    probe_writable(store.root)
    return store, cfg, fresh


def skip_current(partitions: Iterator[Partition], store: Store, manifest: Manifest,
                 result: EmbedResult) -> tuple[int, Partition | None]:
    """Skip the partitions the store already holds, up to the first one it lacks (returned).

    A re-run that finds every partition in place so never starts a cluster or loads the model.
    """
    skipped = 0
    for part in partitions:
        current = manifest.partitions.get(part.index)
        if not store.entry_is_current(current, part.digest):
            return skipped, part
        current.tombstones = []  # its files hold exactly this partition: every row is live
        result.partitions_skipped += 1
        skipped += 1
    return skipped, None


def encode_partitions(cfg: EmbedConfig, store: Store, manifest: Manifest, first: Partition,
                      rest: Iterator[Partition], result: EmbedResult,
                      started: float | None = None) -> int:
    """Encode ``first`` and ``rest`` on the cluster ``cfg.cluster`` describes, into ``store``.

    Partitions that ``manifest`` already holds (same digest, files intact) are skipped; each
    one that lands is recorded in ``manifest``, which is written as they land.

    Returns:
        The number of partitions planned (skipped or encoded).
    """
    started = time.perf_counter() if started is None else started
    dim = describe(cfg.encode.model, cfg.encode.revision).dim
    with connect(workers_per_gpu_for(cfg.cluster, dim)) as (client, cluster):
        encode = encode_config_for(cfg.encode, cluster)
        result.cluster = dataclasses.asdict(cluster)
        warm = [client.submit(load_encoder, encode, workers=[w], allow_other_workers=True, pure=False)
                for w in client.scheduler_info()["workers"]]
        head = chunk_while_loading(first, rest, warm, cluster.workers)
        loaded = client.gather(warm)
        result.encoder = {**loaded[0], "dtype_notes": sorted({n for w in loaded for n in w["dtype_notes"]})}
        result.startup_seconds = time.perf_counter() - started
        return _run_partitions(client, cluster, store, manifest, encode,
                               itertools.chain(head, rest), result, cfg)


def chunk_while_loading(first: Partition, rest: Iterator[Partition], loading: list[Future],
                        workers: int, limit: int = CHUNK_AHEAD_WHILE_LOADING) -> list[Partition]:
    """Take partitions from the stream while the workers start and load their models.

    Args:
        first: the stream's first partition, already chunked.
        rest: the rest of the stream; what is taken here is taken from it.
        loading: the workers' model-loading futures.
        workers: at least this many partitions are taken, one for each worker to start on.
        limit: at most this many, however long the loading takes.

    Returns:
        The partitions taken, in stream order, ``first`` first.

    While a CPU worker loads its model the driver has a core to itself; whatever it tokenizes
    then, it does not tokenize later on cores the encoder fills.
    """
    head = [first, *itertools.islice(rest, workers - 1)]
    while len(head) < limit and not all(f.done() for f in loading):
        part = next(rest, None)
        if part is None:
            break
        head.append(part)
    return head


def write_rejects(store: Store, rejects: list[Reject]) -> None:
    """Every rejected record of a run, one JSON object per line, in the store's rejects file."""
    atomic_write_bytes(store.rejects_path,
                       "".join(json.dumps(r.to_json()) + "\n" for r in rejects).encode())


def encode_config_for(encode: EncodeConfig, cluster: ClusterInfo) -> EncodeConfig:
    changes: dict[str, Any] = {}
    if encode.torch_threads is None and cluster.torch_threads is not None:
        changes["torch_threads"] = cluster.torch_threads
    if encode.device == "auto" and cluster.device != "auto":
        changes["device"] = cluster.device
    return replace(encode, **changes) if changes else encode


class PartitionJob:
    """Partitions encoded on the cluster into ``store``, each recorded in ``manifest`` as it lands.

    Embed runs it on the store itself; an update on the store's staging folder and its journal.
    """

    name = "embed"

    def __init__(self, store: Store, manifest: Manifest, result: EmbedResult, progress: bool):
        self.store, self.manifest, self.result, self.progress = store, manifest, result, progress
        self.fed = [0, 0]  # real and padded tokens fed to the model
        self.landed: list[PartitionEntry] = []  # landed, not yet committed (see flush)

    def key(self, part: Partition) -> str:
        return f"embed-{part.index:05d}-{part.digest[:16]}"

    def describe(self, part: Partition) -> str:
        return f"partition {part.index}"

    def size(self, part: Partition) -> int:
        return part.n_chunks

    def done(self, part: Partition) -> bool:
        """True when the store holds ``part`` (same digest, intact files); else forget its old entry."""
        current = self.manifest.partitions.get(part.index)
        if self.store.entry_is_current(current, part.digest):
            current.tombstones = []  # its files hold exactly this partition: every row is live
            self.result.partitions_skipped += 1
            return True
        self.manifest.partitions.pop(part.index, None)
        return False

    def land(self, part: Partition, outcome: PartitionOutcome) -> None:
        entry = outcome.entry
        self.result.forward_seconds += outcome.forward_seconds
        self.fed[0] += outcome.tokens
        self.fed[1] += outcome.padded_tokens
        old = self.manifest.partitions.get(entry.index)
        if old is not None and (old.parquet != entry.parquet or old.faiss != entry.faiss):
            self.store.remove_partition(old.index)
        self.manifest.partitions[entry.index] = entry
        self.landed.append(entry)
        self.result.partitions_encoded += 1

    def save(self) -> None:
        """Commit every partition that landed since the last commit, as one record (group commit)."""
        if self.landed:
            self.store.commit_landed(self.manifest, self.landed)
            self.landed = []

    flush = save  # the runner calls it whenever no other result is ready


def _run_partitions(client, cluster: ClusterInfo, store: Store, manifest: Manifest,
                    encode: EncodeConfig, partitions: Iterator[Partition], result: EmbedResult,
                    cfg: EmbedConfig) -> int:
    """Submit every partition the store lacks, at most a few per worker at a time (see :mod:`embedlab.jobs`)."""
    job = PartitionJob(store, manifest, result, cfg.progress)
    stats = run_on_cluster(client, job, partitions, embed_partition_task, str(store.root), encode,
                           max_in_flight=max(2, 2 * cluster.workers))
    result.partitions_resent += stats.resent
    if stats.first_submit is not None:
        result.encode_wall_seconds = time.perf_counter() - stats.first_submit
    result.padding_waste = 1 - job.fed[0] / job.fed[1] if job.fed[1] else 0.0
    return stats.units
