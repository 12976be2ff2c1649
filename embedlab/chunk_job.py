"""``embedlab chunk``: tokenize a corpus once, into a chunk folder that ``embed`` reads many times.

The driver plans the corpus as splits from file metadata (as ``embed`` does,
:func:`embedlab.split_embed.plan`); each split task reads, parses, tokenizes and chunks its split
on a worker with the same code an embed task runs (:meth:`SplitWork.cut`), so the chunks, their
ids, spans and token ids are exactly those ``embed`` would encode. Instead of encoding them, the
task writes ``chunks-NNNNN.parquet`` (one row group per partition; :mod:`embedlab.chunkfile`)
atomically, and the sorted run of its document-id hashes.

The same rules as ``embed``: every bad record is rejected with its file and line, a document the
split holds twice is rejected (the first wins), and an id held by two splits is found by one
merge of the splits' id runs (memory bounded, :func:`embedlab.split_embed.merged_runs`) and the
later copy rejected. Its rows stay in its chunk file, so ``embed`` cuts the partitions the corpus
gives; embed's own pass finds it again and tombstones them, as from the corpus. ``_chunks.json``
records each split as it lands and is marked complete last: a re-run skips every split whose file
is in place (without reading its text), and ``embed`` refuses a folder whose run has not finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.backends import describe
from embedlab.chunk_stream import make_chunker
from embedlab.chunkfile import (FILE_PATTERN, FOLDER_RECORD, FORMAT, ChunkFileError, chunk_folder, schema,
                                sha256_column, token_dtype, tokenizer_sha256, tokens_column)
from embedlab.cluster import connect
from embedlab.config import EmbedConfig, to_jsonable
from embedlab.corpus import CorpusError, Reject, short
from embedlab.encoder import fast_tokenizer
from embedlab.files import EnvironmentFault, atomic_write_bytes, atomic_write_json, reporting
from embedlab.jobs import run_on_cluster
from embedlab.partition import Partition
from embedlab.split_embed import line_offsets, merged_runs, plan
from embedlab.simdevice import is_sim_model, parse_sim_model
from embedlab.split_task import SplitWork, id_hashes, id_run
from embedlab.store import DICTIONARY_COLUMNS

IDS_DIR = "_ids"  # per split: the sorted run of its document-id hashes
REJECTS_FILE = "_rejects.jsonl"


@dataclass(frozen=True)
class ChunkOutcome:
    """What a split task wrote: its chunk file and the counts the summary adds up."""

    file: str
    size: int
    rows: int
    tokens: int
    groups: int
    documents: int
    repaired: int
    truncated_documents: int
    truncated_tokens: int
    lines: int | None
    rejects: list[dict[str, Any]]
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)  # prechunked rows: long chunks cut or refused


@dataclass
class ChunkResult:
    """What a chunk run did. ``ok`` is False when any input record was rejected."""

    out: Path
    corpus: str = ""
    corpus_format: str = ""
    splits: int = 0
    splits_skipped: int = 0
    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    rejected: int = 0
    repaired_documents: int = 0
    truncated_documents: int = 0
    truncated_tokens: int = 0
    tokenizer: str = ""
    token_dtype: str = ""
    chunk_tokens: int = 0
    overlap: int = 0
    bytes_written: int = 0
    wall_seconds: float = 0.0
    cluster: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    @property
    def rejects_path(self) -> Path:
        return self.out / REJECTS_FILE

    def to_json(self) -> dict[str, Any]:
        d = to_jsonable(dataclasses.asdict(self))
        d.update(ok=self.ok, rejects_path=str(self.rejects_path),
                 tokens_per_second=self.tokens / self.wall_seconds if self.wall_seconds else 0.0)
        return d

    def summary(self) -> str:
        rate = self.tokens / self.wall_seconds if self.wall_seconds else 0.0
        lines = [f"corpus      {self.corpus} ({self.corpus_format})",
                 f"documents   {self.documents:,}",
                 f"chunks      {self.chunks:,} of <= {self.chunk_tokens} tokens (overlap {self.overlap}), "
                 f"{self.tokens:,} tokens as {self.token_dtype}",
                 f"splits      {self.splits:,} ({self.splits_skipped:,} already chunked and skipped)",
                 f"rejected    {self.rejected:,}" + (f"  -> {self.rejects_path}" if self.rejected else "")]
        if self.repaired_documents:
            lines.append(f"repaired    {self.repaired_documents:,} documents (lone surrogates -> U+FFFD)")
        if self.truncated_documents:
            lines.append(f"truncated   {self.truncated_documents:,} documents lost {self.truncated_tokens:,} "
                         "tokens past the chunk length")
        lines += [f"tokenizer   {self.tokenizer}",
                  f"wall time   {self.wall_seconds:.1f} s ({rate:,.0f} tokens/s), {self.bytes_written / 1e6:,.1f} MB",
                  f"chunks in   {self.out}  (embed it: embedlab embed {self.out} --out STORE)"]
        return "\n".join(lines)


# -- worker side ---------------------------------------------------------------------------------
def part_table(part: Partition, dtype: np.dtype) -> Any:
    """One partition as a chunk-file table (one row group)."""
    import pyarrow as pa

    return pa.table({"chunk_id": pa.array(part.chunk_ids, pa.string()), "doc_id": pa.array(part.doc_ids, pa.string()),
                     "chunk_index": pa.array(part.chunk_index, pa.int32()),
                     "char_start": pa.array(part.char_start, pa.int64()),
                     "char_end": pa.array(part.char_end, pa.int64()), "text": pa.array(part.texts, pa.string()),
                     "tokens": tokens_column(part.token_ids, part.token_offsets, dtype),
                     "doc_sha256": sha256_column(part.doc_sha256)})


def write_chunk_file(path: Path, tables: Any, meta: dict[str, Any]) -> tuple[int, int, int, int]:
    """Write ``tables`` (one row group each) to ``path`` atomically: (bytes, rows, tokens, groups)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = tokens = groups = 0
    with reporting(path, "write the chunk file"):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with pq.ParquetWriter(tmp, schema(meta), compression="zstd", use_dictionary=DICTIONARY_COLUMNS) as writer:
                for table in tables:
                    writer.write_table(table, row_group_size=max(1, table.num_rows))
                    rows += table.num_rows
                    tokens += int(pc.sum(pc.binary_length(table.column("tokens"))).as_py() or 0)
                    groups += 1
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path.stat().st_size, rows, tokens // np.dtype(meta["token_dtype"]).itemsize, groups


def npy_bytes(run: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, run, allow_pickle=False)
    return buf.getvalue()


def chunk_split(work: SplitWork, out: str, meta: dict[str, Any]) -> ChunkOutcome:
    """Read, tokenize and chunk one split on a worker; write its chunk file and id run."""
    t0 = time.perf_counter()
    reader, stream, parts = work.cut()
    dtype = np.dtype(meta["token_dtype"])
    placed: dict[str, tuple[int, int, int]] = {}
    rows_before = [0]

    def tables():
        for part in parts:
            spots: dict[str, tuple[int, int, int]] = {}
            work.place(part, spots)
            placed.update((d, (work.number, rows_before[0] + r, n)) for d, (_, r, n) in spots.items())
            rows_before[0] += part.n_chunks
            yield part_table(part, dtype)

    path = Path(out) / FILE_PATTERN.format(number=work.number)
    size, rows, tokens, groups = write_chunk_file(
        path, tables(), {**meta, "split_key": work.split.key, "split_number": work.number, "source": work.split.url})
    atomic_write_bytes(Path(out) / IDS_DIR / f"{work.split.key}.npy", npy_bytes(id_run(reader.first_line, placed)))
    rejects = sorted([r.to_json() for r in stream.rejects] + reader.duplicates, key=lambda r: r["line"])
    return ChunkOutcome(path.name, size, rows, tokens, groups, stream.documents, stream.repaired,
                        stream.truncated_documents, stream.truncated_tokens, reader.lines, rejects,
                        time.perf_counter() - t0, dict(getattr(stream, "counts", {})))


def chunk_split_task(work: SplitWork, out: str, meta: dict[str, Any]) -> ChunkOutcome | EnvironmentFault:
    """:func:`chunk_split` as a Dask task; a full disk comes back as its value (see jobs)."""
    try:
        return chunk_split(work, out, meta)
    except EnvironmentFault as e:
        return e


# -- driver side ---------------------------------------------------------------------------------
class ChunkJob:
    """Split tasks writing chunk files into ``out``; each split's record saved as it lands."""

    name = "chunk"

    def __init__(self, out: Path, record: dict[str, Any], progress: bool):
        self.out, self.record, self.progress = out, record, progress
        self.records: dict[str, dict[str, Any]] = record["splits"]  # split key -> what it gave
        self.skipped = 0

    def key(self, work: SplitWork) -> str:
        return f"chunk-{work.number:05d}-{work.split.key[:16]}"

    def describe(self, work: SplitWork) -> str:
        return f"split {work.number} ({work.split.url}, {work.split.kind} {work.split.start}-{work.split.end})"

    def size(self, work: SplitWork) -> int:
        return 1

    def done(self, work: SplitWork) -> bool:
        """True when the split's file and id run are in place at their recorded size (nothing is read)."""
        rec = self.records.get(work.split.key)
        if rec is None or rec.get("number") != work.number:
            return False
        path = self.out / rec["file"]
        ok = (path.is_file() and path.stat().st_size == rec["size"]
              and (self.out / IDS_DIR / f"{work.split.key}.npy").is_file())
        self.skipped += ok
        return ok

    def land(self, work: SplitWork, outcome: ChunkOutcome) -> None:
        self.records[work.split.key] = {**dataclasses.asdict(outcome), "number": work.number,
                                        "source": work.split.url}
        self.save()

    def save(self) -> None:
        atomic_write_json(self.out / FOLDER_RECORD, self.record)


def chunk_corpus(cfg: EmbedConfig) -> ChunkResult:
    """Chunk and tokenize ``cfg.corpus`` into the chunk folder ``cfg.out`` with ``cfg.encode.model``'s
    tokenizer; ``cfg.partition_tokens`` is the token budget of a row group.

    Raises:
        CorpusError: the corpus cannot be read, is already a chunk folder, or holds no good document.
        ChunkFileError: ``cfg.out`` holds chunks made with other settings, or is not a chunk folder.
    """
    t0 = time.perf_counter()
    if chunk_folder(cfg.corpus.path) is not None:
        raise CorpusError(f"{cfg.corpus.path} is already a chunk folder: embed it with `embedlab embed`")
    if cfg.corpus.limit is not None:
        raise CorpusError("limit: a chunk folder holds whole splits of the corpus; chunk it all (or a smaller "
                          "corpus file)")
    chunker = make_chunker(cfg)
    works, fmt, path = plan(cfg, chunker.chunk_tokens)
    info = describe(cfg.encode.model, cfg.encode.revision)
    tok = fast_tokenizer(info.path, trust_remote_code=cfg.encode.trust_remote_code)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    name = parse_sim_model(cfg.encode.model).tokenizer if is_sim_model(cfg.encode.model) else info.name
    settings = {"tokenizer": name, "tokenizer_path": info.path, "tokenizer_sha256": tokenizer_sha256(tok),
                "vocab_size": vocab, "token_dtype": token_dtype(vocab).str, "chunk_tokens": chunker.chunk_tokens,
                "overlap": chunker.overlap, "truncate": chunker.truncate, "partition_tokens": cfg.partition_tokens,
                "corpus": str(path), "corpus_format": fmt.value, "id_field": works[0].corpus.id_field if works else "",
                "text_field": works[0].corpus.text_field if works else ""}
    record = open_folder(cfg.out, settings)
    record["complete"] = False
    job = ChunkJob(cfg.out, record, cfg.progress)
    job.save()
    meta = {"format": FORMAT, **{k: v for k, v in settings.items() if k not in ("corpus", "corpus_format")}}
    result = ChunkResult(out=cfg.out, corpus=str(path), corpus_format=fmt.value, splits=len(works),
                         tokenizer=f"{name} (sha256 {settings['tokenizer_sha256'][:12]})",
                         token_dtype=np.dtype(settings["token_dtype"]).name, chunk_tokens=chunker.chunk_tokens,
                         overlap=chunker.overlap)
    pending = [w for w in works if not job.done(w)]
    if pending:
        with connect(cfg.cluster) as (client, cluster):
            result.cluster = dataclasses.asdict(cluster)
            run_on_cluster(client, job, pending, chunk_split_task, str(cfg.out), meta,
                           max_in_flight=max(2, 2 * cluster.workers))
    result.splits_skipped = job.skipped
    finish(job, works, result)
    result.wall_seconds = time.perf_counter() - t0
    return result


def open_folder(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The folder record to resume, or a new one; a folder of other chunks or other files is refused."""
    path = out / FOLDER_RECORD
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
        same = ("tokenizer_sha256", "chunk_tokens", "overlap", "truncate", "partition_tokens", "token_dtype")
        diffs = [f"{k}: folder has {old.get('settings', {}).get(k)!r}, this run has {settings[k]!r}"
                 for k in same if old.get("settings", {}).get(k) != settings[k]]
        if old.get("format") == FORMAT and not diffs:
            return {**old, "settings": settings}
        raise ChunkFileError(f"{out} holds chunks made with other settings ({'; '.join(diffs) or 'another format'}); "
                             "use another --out folder or delete this one")
    if out.exists() and any(out.iterdir()):
        raise ChunkFileError(f"{out} is not empty and is not a chunk folder; refusing to write into it")
    with reporting(out, "create the chunk folder", resumable=False):
        (out / IDS_DIR).mkdir(parents=True, exist_ok=True)
    return {"format": FORMAT, "complete": False, "settings": settings, "splits": {}}


def finish(job: ChunkJob, works: list[SplitWork], result: ChunkResult) -> None:
    """Find ids held by two splits, remove stale files, write the rejects and the complete record."""
    out, records = job.out, job.records
    keys = {w.split.key for w in works}
    for k in [k for k in records if k not in keys]:
        del records[k]
    wanted = {records[w.split.key]["file"] for w in works}
    for p in out.glob("chunks-*.parquet"):
        if p.name not in wanted:
            with reporting(p, "remove a stale chunk file"):
                p.unlink()
    for p in (out / IDS_DIR).glob("*.npy"):
        if p.stem not in keys:
            with reporting(p, "remove a stale id run"):
                p.unlink()
    files = []
    offsets = line_offsets(works, records)
    for w, offset in zip(works, offsets):
        r = records[w.split.key]
        files.append({k: r[k] for k in ("file", "size", "rows", "tokens", "groups", "documents", "repaired",
                                        "truncated_documents", "truncated_tokens", "number", "counts")}
                     | {"split_key": w.split.key, "source": w.split.url, "rejects": split_rejects_of(r, offset)})
    duplicates, losers = cross_duplicates(job, works, offsets)
    rejects = sorted((Reject(**x) for x in [*(x for f in files for x in f["rejects"]), *duplicates]),
                     key=lambda r: (r.source, r.line))
    recs = [records[w.split.key] for w in works]
    result.documents = sum(r["documents"] for r in recs) - losers
    result.chunks = sum(r["rows"] for r in recs)
    result.tokens = sum(r["tokens"] for r in recs)
    result.repaired_documents = sum(r["repaired"] for r in recs)
    result.truncated_documents = sum(r["truncated_documents"] for r in recs)
    result.truncated_tokens = sum(r["truncated_tokens"] for r in recs)
    result.bytes_written = sum(r["size"] for r in recs)
    result.rejected = len(rejects)
    atomic_write_bytes(out / REJECTS_FILE, "".join(json.dumps(r.to_json()) + "\n" for r in rejects).encode())
    if not result.chunks:
        raise CorpusError(f"{result.corpus}: no document could be chunked ({len(rejects)} record(s) rejected"
                          f"{'; see ' + str(out / REJECTS_FILE) if rejects else ''})")
    job.record.update(complete=True, files=files, duplicates=duplicates, documents=result.documents,
                      chunks=result.chunks, tokens=result.tokens, rejected=result.rejected)
    job.save()


def split_rejects_of(record: dict[str, Any], offset: int) -> list[dict[str, Any]]:
    """One split's own rejects with the file's line numbers (``offset``: lines of earlier splits)."""
    out = []
    for r in record["rejects"]:
        reason = r["reason"] + (f" (first seen at {r['file']}:{r['first'] + offset})" if r.get("first") is not None
                                else "")
        out.append({"source": r["file"], "line": r["line"] + (offset if r["line"] else 0), "doc_id": r["doc_id"],
                    "reason": reason})
    return out


def cross_duplicates(job: ChunkJob, works: list[SplitWork], offsets: list[int]) -> tuple[list[dict[str, Any]], int]:
    """Ids held by two splits, found by one merge of their id runs (memory bounded): a reject for each
    later copy, and how many of them had chunks.

    The chunk files keep the later copies' rows, so that ``embed`` cuts the same partitions as from
    the corpus; its own pass over the same runs rejects them again and tombstones their rows.
    """
    if len(works) < 2:
        return [], 0
    runs = [np.load(job.out / IDS_DIR / f"{w.split.key}.npy", mmap_mode="r", allow_pickle=False) for w in works]
    found: list[tuple[int, np.void, int, np.void]] = []
    for run, owner in merged_runs(runs):
        same = (run["h1"][1:] == run["h1"][:-1]) & (run["h2"][1:] == run["h2"][:-1])
        if not same.any():
            continue
        first = 0
        for i in range(1, len(run)):
            if not same[i - 1]:
                first = i
                continue
            found.append((int(owner[i]), run[i].copy(), int(owner[first]), run[first].copy()))
    rejects, losers, names = [], 0, {}
    for k, lose, win_split, win in found:
        name_of = names.get(k) or names.setdefault(k, doc_names(job.out / job.records[works[k].split.key]["file"]))
        doc_id = name_of.get((int(lose["h1"]), int(lose["h2"])))
        where = f"{works[win_split].split.url}:{int(win['line']) + offsets[win_split]}"
        rejects.append({"source": works[k].split.url, "line": int(lose["line"]) + offsets[k], "doc_id": doc_id,
                        "reason": f"duplicate document id {short(doc_id)} (first seen at {where})"})
        losers += int(lose["index"]) >= 0
    return rejects, losers


def doc_names(path: Path) -> dict[tuple[int, int], str]:
    """A chunk file's document ids by their id hash."""
    import pyarrow.parquet as pq

    docs = list(dict.fromkeys(pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist()))
    h1, h2 = id_hashes(docs)
    return {(int(a), int(b)): d for a, b, d in zip(h1, h2, docs)}
