"""Group chunks into partitions of about equal token count, deterministically.

A partition is the unit of work (one Dask task) and of storage (one Parquet file and one FAISS
shard). It closes at the first document boundary after its token budget is reached, so a
document's chunks stay together and the same corpus and settings always give the same
partitions, whatever the cluster looks like. That is what lets a re-run skip finished work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from embedlab.chunking import Chunk


@dataclass(frozen=True)
class Partition:
    """The chunks of one partition, in the compact form that is sent to a worker."""

    index: int
    chunk_ids: list[str]
    doc_ids: list[str]
    chunk_index: np.ndarray  # (n,) int32
    char_start: np.ndarray  # (n,) int64
    char_end: np.ndarray  # (n,) int64
    texts: list[str]
    token_ids: np.ndarray  # (total_tokens,) int32, all chunks' ids back to back
    token_offsets: np.ndarray  # (n + 1,) int64; chunk i is token_ids[off[i]:off[i+1]]
    digest: str  # sha256 of what is written: ids, spans, tokens and document hashes
    doc_sha256: list[str] = field(default_factory=list)  # per chunk: sha256 of its document's text

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_ids)

    @property
    def n_tokens(self) -> int:
        return int(self.token_offsets[-1])

    @property
    def n_docs(self) -> int:
        return len(set(self.doc_ids))

    def input_ids(self) -> list[np.ndarray]:
        off = self.token_offsets
        return [self.token_ids[off[i]:off[i + 1]] for i in range(self.n_chunks)]

    def n_tokens_per_chunk(self) -> np.ndarray:
        return np.diff(self.token_offsets).astype(np.int32)

    @classmethod
    def from_chunks(cls, index: int, chunks: list[Chunk],
                    doc_sha256: Mapping[str, str] | None = None) -> Partition:
        """Pack ``chunks``; ``doc_sha256`` maps each chunk's doc id to its document's content hash."""
        hashes = [doc_sha256[c.doc_id] for c in chunks] if doc_sha256 is not None else []
        lengths = np.fromiter((c.n_tokens for c in chunks), dtype=np.int64, count=len(chunks))
        offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        token_ids = (np.concatenate([c.input_ids for c in chunks]) if chunks
                     else np.zeros(0, dtype=np.int32))
        h = hashlib.sha256()
        for i, c in enumerate(chunks):
            h.update(f"{c.chunk_id}\0{c.char_start}\0{c.char_end}\0".encode())
            if hashes:
                h.update(f"{hashes[i]}\0".encode())
        h.update(token_ids.tobytes())
        h.update(offsets.tobytes())
        return cls(
            index=index,
            chunk_ids=[c.chunk_id for c in chunks],
            doc_ids=[c.doc_id for c in chunks],
            chunk_index=np.array([c.chunk_index for c in chunks], dtype=np.int32),
            char_start=np.array([c.char_start for c in chunks], dtype=np.int64),
            char_end=np.array([c.char_end for c in chunks], dtype=np.int64),
            texts=[c.text for c in chunks],
            token_ids=token_ids,
            token_offsets=offsets,
            digest=h.hexdigest(),
            doc_sha256=hashes,
        )


def partition_chunks(chunks: Iterable[Chunk], token_budget: int, *, first_index: int = 0,
                     doc_sha256: Mapping[str, str] | None = None) -> Iterator[Partition]:
    """Yield partitions of ``chunks`` (in corpus order) of about ``token_budget`` tokens each.

    Args:
        chunks: the chunk stream; a document's chunks come together.
        token_budget: tokens after which a partition closes at the next document boundary.
        first_index: index of the first partition (an update appends after the store's last one).
        doc_sha256: doc id -> content hash, read when a partition is packed (see
            :meth:`Partition.from_chunks`); it may be filled while ``chunks`` is consumed.
    """
    current: list[Chunk] = []
    tokens = 0
    index = first_index
    for chunk in chunks:
        if current and tokens >= token_budget and chunk.doc_id != current[-1].doc_id:
            yield Partition.from_chunks(index, current, doc_sha256)
            index += 1
            current, tokens = [], 0
        current.append(chunk)
        tokens += chunk.n_tokens
    if current:
        yield Partition.from_chunks(index, current, doc_sha256)
