"""The chunk file: a chunked, pre-tokenized corpus that ``embed`` reads without a tokenizer.

``embedlab chunk CORPUS --out CHUNKS`` writes one Parquet file per corpus split
(``chunks-NNNNN.parquet``, in corpus order) and a folder record ``_chunks.json``. Each row is one
chunk, exactly as ``embed`` would cut it from the raw corpus:

| column | type | what |
| --- | --- | --- |
| ``chunk_id`` | string | ``doc_id#chunk_index`` |
| ``doc_id`` | string | the document's id |
| ``chunk_index`` | int32 | the chunk's place in its document |
| ``char_start``, ``char_end`` | int64 | the chunk's span in the document's text |
| ``text`` | string | the chunk's text |
| ``tokens`` | large_binary | the chunk's token ids, special tokens included, little-endian ``uint16`` (vocabularies up to 65,536) or ``uint32`` |
| ``doc_sha256`` | fixed_size_binary(32) | sha256 of the document's text (the store keeps it per chunk) |

Each row group is one partition of the chunk run (``partition_tokens``), so embedding the folder
with the same budget cuts the same partitions as embedding the raw corpus. The file's key-value
metadata (:data:`META_KEY`) records the tokenizer (name and the sha256 of its normalized JSON),
``chunk_tokens``, ``overlap``, ``truncate``, the token width and the split the file came from; a
reader recognizes a chunk file by it and refuses a model whose tokenizer differs.

The token column is read without a per-row conversion: its offsets and data buffers are viewed
as numpy arrays (:func:`token_arrays`), so a reader turns a row group into a partition's flat
``int32`` token array and offsets in a few vectorized passes.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.partition import Partition

META_KEY = b"embedlab.chunks"
FOLDER_RECORD = "_chunks.json"
FORMAT = 1  # the chunk file's own format version
FILE_PATTERN = "chunks-{number:05d}.parquet"
COLUMNS = ("chunk_id", "doc_id", "chunk_index", "char_start", "char_end", "text", "tokens", "doc_sha256")


class ChunkFileError(ValueError):
    """A chunk folder or file that cannot be read as one (damaged, incomplete, another tokenizer)."""


def tokenizer_sha256(tokenizer: Any) -> str:
    """sha256 of the tokenizer's JSON with truncation and padding off: two models share token ids
    exactly when their tokenizers hash equal (vocabulary, normalizer, special tokens included)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    tok = backend.__class__.from_str(backend.to_str())
    tok.no_truncation()
    tok.no_padding()
    return hashlib.sha256(tok.to_str().encode()).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned width that holds every token id of a vocabulary."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def schema(meta: dict[str, Any]) -> Any:
    """The chunk file's Arrow schema, ``meta`` (JSON) stored under :data:`META_KEY`."""
    import pyarrow as pa

    return pa.schema([("chunk_id", pa.string()), ("doc_id", pa.string()), ("chunk_index", pa.int32()),
                      ("char_start", pa.int64()), ("char_end", pa.int64()), ("text", pa.string()),
                      ("tokens", pa.large_binary()), ("doc_sha256", pa.binary(32))],
                     metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()})


def tokens_column(token_ids: np.ndarray, offsets: np.ndarray, dtype: np.dtype) -> Any:
    """Chunks' token ids (flat, with ``(n + 1,)`` offsets) as one ``large_binary`` array, each
    value the row's ids in ``dtype``.

    Raises:
        ValueError: an id does not fit ``dtype``.
    """
    import pyarrow as pa

    if token_ids.size and (token_ids.min() < 0 or token_ids.max() > np.iinfo(dtype).max):
        raise ValueError(f"token id out of range for {dtype.name}")
    data = np.ascontiguousarray(token_ids, dtype=dtype)
    byte_offsets = (np.asarray(offsets, dtype=np.int64) - int(offsets[0])) * dtype.itemsize
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(offsets) - 1,
                                            [None, pa.py_buffer(byte_offsets), pa.py_buffer(data)])


def token_arrays(column: Any, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(token_ids (total,) int32, offsets (n + 1,) int64)`` of a ``tokens`` column, vectorized."""
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    n = len(arr)
    if arr.null_count:
        raise ChunkFileError("a chunk has no token ids (null in the tokens column)")
    _, off_buf, data_buf = arr.buffers()
    byte_off = np.frombuffer(off_buf, dtype=np.int64)[arr.offset:arr.offset + n + 1]
    if n == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(1, dtype=np.int64)
    raw = np.frombuffer(data_buf, dtype=np.uint8)[byte_off[0]:byte_off[-1]] if data_buf is not None \
        else np.zeros(0, np.uint8)
    if raw.size % dtype.itemsize or np.any((byte_off - byte_off[0]) % dtype.itemsize):
        raise ChunkFileError(f"the tokens column is not a whole number of {dtype.name} values")
    ids = raw.view(dtype).astype(np.int32)
    return ids, (byte_off - byte_off[0]) // dtype.itemsize


def sha256_column(hexes: list[str]) -> Any:
    """Hex sha256 digests as a ``fixed_size_binary(32)`` array."""
    import pyarrow as pa

    return pa.array([bytes.fromhex(h) for h in hexes], type=pa.binary(32))


def sha256_hexes(column: Any) -> list[str]:
    """A ``fixed_size_binary(32)`` column back to hex strings (one hexlify for the whole column)."""
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    n = len(arr)
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8)[arr.offset * 32:(arr.offset + n) * 32].tobytes()
    text = binascii.hexlify(raw).decode()
    return [text[i:i + 64] for i in range(0, 64 * n, 64)]


def file_meta(path: Path | str) -> dict[str, Any] | None:
    """The chunk metadata in a Parquet file's footer, or None when the file is no chunk file."""
    import pyarrow.parquet as pq

    try:
        kv = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - not Parquet, damaged: not a chunk file
        return None
    raw = kv.get(META_KEY)
    return json.loads(raw) if raw else None


def chunk_folder(path: Path) -> Path | None:
    """The chunk folder ``path`` is (or whose chunk file it is), or None.

    A folder is one when it holds :data:`FOLDER_RECORD` or its first Parquet file carries the
    chunk metadata.
    """
    if not isinstance(path, Path):  # a URL: chunk folders are read from local files only
        return None
    if path.is_file():
        return path.parent if path.suffix == ".parquet" and file_meta(path) is not None else None
    if not path.is_dir():
        return None
    if (path / FOLDER_RECORD).is_file():
        return path
    first = next(iter(sorted(path.glob("*.parquet"))), None)
    return path if first is not None and file_meta(first) is not None else None


def read_folder_record(folder: Path) -> dict[str, Any]:
    """The folder's ``_chunks.json``, which lists its files and what the chunk run rejected.

    Raises:
        ChunkFileError: the record is missing (the run never finished) or the run is incomplete.
    """
    path = folder / FOLDER_RECORD
    if not path.is_file():
        raise ChunkFileError(f"{folder}: chunk files without {FOLDER_RECORD}: the `embedlab chunk` run that "
                             "wrote them did not finish; run it again to complete the folder")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ChunkFileError(f"{path}: not valid JSON ({e}); the chunk folder is damaged") from None
    if not record.get("complete"):
        raise ChunkFileError(f"{folder}: the `embedlab chunk` run that writes this folder has not finished "
                             "(or was interrupted); run it again to complete the folder")
    if record.get("format") != FORMAT:
        raise ChunkFileError(f"{folder}: chunk folder format {record.get('format')!r}; this embedlab reads "
                             f"format {FORMAT}: chunk the corpus again")
    return record


# -- reading a chunk file as partitions ----------------------------------------------------------
def next_cut(lengths: np.ndarray, doc_start: np.ndarray, budget: int) -> int | None:
    """Rows of the partition that closes first in a run of chunks, or None if it is still open.

    The rule of :func:`embedlab.partition.partition_chunks`: a partition closes before the first
    chunk that begins a document once it holds ``budget`` tokens.

    Args:
        lengths: (n,) tokens per chunk.
        doc_start: (n,) bool, True where a chunk begins a document.
    """
    total = np.cumsum(lengths)  # total[i]: tokens of rows 0..i
    j = int(np.searchsorted(total, budget, side="left")) + 1  # first row that may start the next one
    if j >= len(lengths):
        return None
    starts = np.flatnonzero(doc_start[j:])
    return j + int(starts[0]) if starts.size else None


def table_partition(table: Any, index: int, dtype: np.dtype) -> Partition:
    """A chunk-file table (rows of one partition) as the :class:`Partition` ``embed`` would have cut,
    digest included, in a few vectorized passes."""
    token_ids, offsets = token_arrays(table.column("tokens"), dtype)
    chunk_ids = table.column("chunk_id").to_pylist()
    starts = table.column("char_start").to_numpy().astype(np.int64)
    ends = table.column("char_end").to_numpy().astype(np.int64)
    hashes = sha256_hexes(table.column("doc_sha256"))
    h = hashlib.sha256("".join(f"{c}\0{s}\0{e}\0{d}\0" for c, s, e, d in
                               zip(chunk_ids, starts.tolist(), ends.tolist(), hashes)).encode())
    h.update(token_ids.tobytes())
    h.update(offsets.tobytes())
    return Partition(index=index, chunk_ids=chunk_ids, doc_ids=table.column("doc_id").to_pylist(),
                     chunk_index=table.column("chunk_index").to_numpy().astype(np.int32), char_start=starts,
                     char_end=ends, texts=table.column("text").to_pylist(), token_ids=token_ids,
                     token_offsets=offsets, digest=h.hexdigest(), doc_sha256=hashes)


def read_partitions(path: Path | str, groups: range, budget: int, first_index: int,
                    dtype: np.dtype) -> Iterator[Partition]:
    """The partitions of row groups ``groups`` of a chunk file, cut by ``budget`` tokens.

    A file whose row groups were cut with the same budget gives one partition per row group.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    index, buf = first_index, None
    with pq.ParquetFile(path) as pf:
        for g in groups:
            t = pf.read_row_group(g, columns=list(COLUMNS))
            buf = t if buf is None else pa.concat_tables([buf, t])
            while buf.num_rows:
                lengths = pc.binary_length(buf.column("tokens")).to_numpy() // dtype.itemsize
                cut = next_cut(lengths, buf.column("chunk_index").to_numpy() == 0, budget)
                if cut is None:
                    break
                yield table_partition(buf.slice(0, cut), index, dtype)
                index += 1
                buf = buf.slice(cut)
    if buf is not None and buf.num_rows:
        yield table_partition(buf, index, dtype)


def folder_token_ids(folder: Path, tokenizer: Any, docs: int, chunk_tokens: int | None,
                     max_length: int) -> list[np.ndarray]:
    """Token ids of the chunks of a chunk folder's first ``docs`` documents (for a sweep).

    Raises:
        ChunkFileError: another tokenizer, other chunking, or chunks longer than ``max_length``.
    """
    import pyarrow.parquet as pq

    record = read_folder_record(folder)
    s = record["settings"]
    if tokenizer_sha256(tokenizer) != s["tokenizer_sha256"]:
        raise ChunkFileError(f"{folder} was tokenized by {s['tokenizer']}, whose tokenizer this model does not share")
    if chunk_tokens not in (None, s["chunk_tokens"]) or s["chunk_tokens"] > max_length:
        raise ChunkFileError(f"{folder} holds chunks of {s['chunk_tokens']} tokens; this sweep asks for "
                             f"{chunk_tokens or max_length}: chunk the corpus again")
    out: list[np.ndarray] = []
    seen = 0
    for f in record["files"]:
        with pq.ParquetFile(folder / f["file"]) as pf:
            for g in range(pf.num_row_groups):
                t = pf.read_row_group(g, columns=["chunk_index", "tokens"])
                first = t.column("chunk_index").to_numpy() == 0
                keep = int(np.searchsorted(np.cumsum(first), docs, side="right"))
                ids, off = token_arrays(t.column("tokens").slice(0, keep), np.dtype(s["token_dtype"]))
                out += [ids[a:b] for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
                seen += int(first[:keep].sum())
                if seen >= docs:
                    return out
    return out
