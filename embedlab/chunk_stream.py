"""Records to chunks to partitions: the chunk stream a driver or a split task cuts a corpus with."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from embedlab.backends import describe
from embedlab.chunking import Chunk, Chunker
from embedlab.config import EmbedConfig
from embedlab.corpus import Document, Record, Reject
from embedlab.encoder import fast_tokenizer
from embedlab.partition import Partition, partition_chunks


def content_sha256(text: str) -> str:
    """The hash a store keeps per document: sha256 of its encoded text (``Document.text``)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ChunkStream:
    """Records -> chunks -> partitions, collecting rejects and document counts on the way.

    Args:
        records: corpus records (documents and rejects), e.g. :func:`read_corpus`.
        chunker: cuts documents into token windows.
        block_docs: documents tokenized together.
    """

    def __init__(self, records: Iterable[Record], chunker: Chunker, block_docs: int):
        self.records = records
        self.chunker = chunker
        self.block_docs = block_docs
        self.rejects: list[Reject] = []
        self.documents = 0
        self.repaired = 0  # documents chunked whose text had lone surrogates replaced
        self.truncated_documents = 0
        self.truncated_tokens = 0
        self._doc_sha256: dict[str, str] = {}  # documents chunked but not yet in a partition

    def __iter__(self) -> Iterator[Chunk]:
        block: list[Document] = []
        for rec in self.records:
            if isinstance(rec, Reject):
                self.rejects.append(rec)
                continue
            block.append(rec)
            if len(block) >= self.block_docs:
                yield from self._chunk(block)
                block = []
        if block:
            yield from self._chunk(block)

    def partitions(self, token_budget: int, first_index: int = 0) -> Iterator[Partition]:
        """The chunk stream cut into partitions numbered from ``first_index``."""
        for part in partition_chunks(self, token_budget, first_index=first_index,
                                     doc_sha256=self._doc_sha256):
            for doc_id in dict.fromkeys(part.doc_ids):
                del self._doc_sha256[doc_id]
            yield part

    def _chunk(self, block: list[Document]) -> list[Chunk]:
        chunks, rejects = self.chunker.chunk(block)
        self.rejects.extend(rejects)
        self.documents += len(block) - len(rejects)
        refused = {r.doc_id for r in rejects}
        self.repaired += sum(1 for d in block if d.repaired and d.doc_id not in refused)
        self._doc_sha256.update((d.doc_id, content_sha256(d.text)) for d in block
                                if d.doc_id not in refused)
        for c in chunks:
            if c.truncated_tokens:
                self.truncated_documents += 1
                self.truncated_tokens += c.truncated_tokens
        return chunks


def make_chunker(cfg: EmbedConfig) -> Chunker:
    """The chunker ``cfg`` describes, with the model's own tokenizer.

    Raises:
        ValueError: ``cfg.chunk.chunk_tokens`` exceeds the model's max sequence length.
    """
    info = describe(cfg.encode.model, cfg.encode.revision)
    chunk_tokens = cfg.chunk.chunk_tokens or info.max_seq_length
    if chunk_tokens > info.max_seq_length:
        raise ValueError(f"chunk_tokens={chunk_tokens} exceeds the model's max sequence length "
                         f"{info.max_seq_length}; the encoder would truncate every full chunk")
    tokenizer = fast_tokenizer(info.path, trust_remote_code=cfg.encode.trust_remote_code)
    return Chunker(tokenizer, chunk_tokens, cfg.chunk.overlap, cfg.chunk.truncate)
