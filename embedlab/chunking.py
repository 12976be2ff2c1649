"""Split documents into token windows of the encoder's own tokenizer.

A window holds at most ``chunk_tokens`` tokens including the model's special tokens, so the
encoder never truncates a chunk: no text is silently lost. Windows end and start on word
boundaries where one lies in reach, so re-tokenizing a chunk's text gives the same tokens.
Consecutive windows of a document share ``overlap`` tokens.

Offsets cost: asking the Rust tokenizer for character offsets and word ids makes it about 1.3x
slower than ids alone (``encode_batch_fast``), and most documents fit one window, whose
offsets are its first and last character when those are plain ASCII (see :func:`edges_known`).
So a block is tokenized for ids only, and just the documents that need more (several windows,
or an edge character the tokenizer might drop) are tokenized again with offsets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedlab.config import default_overlap
from embedlab.corpus import Document, Reject

CHUNK_ID_SEP = "#"
# Texts up to this share of a window's worth of characters are tokenized for ids first; longer
# ones straight with offsets (a text's characters per token vary around the corpus's mean).
ONE_WINDOW_MARGIN = 0.8


def make_chunk_id(doc_id: str, chunk_index: int) -> str:
    """``doc_id#chunk_index``; the last ``#`` splits it back, so ids never collide."""
    return f"{doc_id}{CHUNK_ID_SEP}{chunk_index}"


def split_chunk_id(chunk_id: str) -> tuple[str, int]:
    doc_id, _, index = chunk_id.rpartition(CHUNK_ID_SEP)
    return doc_id, int(index)


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    chunk_index: int
    char_start: int  # offsets into Document.text
    char_end: int
    text: str
    input_ids: np.ndarray  # (n_tokens,) int32, special tokens included
    truncated_tokens: int = 0  # tokens cut off the document (truncate mode only)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])


class Chunker:
    """Tokenize documents in blocks and cut them into windows.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (see ``encoder.fast_tokenizer``) or a Hugging Face
            fast tokenizer, whose ``backend_tokenizer`` is used.
        chunk_tokens: tokens per window, special tokens included.
        overlap: tokens shared by consecutive windows; None: ``config.default_overlap(chunk_tokens)``.
        truncate: keep only the first window of each document.
    """

    def __init__(self, tokenizer, chunk_tokens: int, overlap: int | None = None, truncate: bool = False):
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not hasattr(backend, "encode_batch"):
            raise TypeError("chunking needs a fast (Rust) tokenizer")
        spec = backend.to_str()
        self._tok = backend.__class__.from_str(spec)
        self._tok.no_truncation()
        self._tok.no_padding()
        probe = self._tok.encode("a", add_special_tokens=True)
        mask = probe.special_tokens_mask
        first = mask.index(0)
        last = len(mask) - 1 - mask[::-1].index(0)
        self.prefix = list(probe.ids[:first])
        self.suffix = list(probe.ids[last + 1:])
        self.chunk_tokens = chunk_tokens
        self.window = chunk_tokens - len(self.prefix) - len(self.suffix)
        if self.window < 4:
            raise ValueError(f"chunk_tokens={chunk_tokens} leaves no room for text")
        overlap = default_overlap(chunk_tokens) if overlap is None else overlap
        if overlap >= self.window // 2:
            raise ValueError(f"overlap {overlap} must be less than half the window ({self.window})")
        self.overlap = overlap
        self.truncate = truncate
        self.ids_first = hasattr(self._tok, "encode_batch_fast") and edges_known(spec)
        self.chars_per_token = 4.0  # English WordPiece; each block's short documents update it

    def chunk(self, docs: Sequence[Document]) -> tuple[list[Chunk], list[Reject]]:
        """Cut ``docs`` into windows; a document that cannot be tokenized or cut is rejected.

        Whatever fails for one document (the tokenizer refusing its text, say) rejects that
        document with the reason; the others in the block are chunked as usual.
        """
        encodings = self._encode(docs)
        chunks: list[Chunk] = []
        rejects: list[Reject] = []
        for doc, enc in zip(docs, encodings):
            if isinstance(enc, Reject):
                rejects.append(enc)
                continue
            try:
                cut = self._cut(doc, enc) if not isinstance(enc, list) else self._whole(doc, enc)
            except Exception as e:  # noqa: BLE001 - reported with the document, never the job
                rejects.append(Reject(doc.source, doc.line, doc.doc_id,
                                      f"cannot be chunked: {type(e).__name__}: {str(e)[:200]}"))
                continue
            if not cut:
                rejects.append(Reject(doc.source, doc.line, doc.doc_id, "text has no tokens"))
                continue
            chunks.extend(cut)
        return chunks, rejects

    def _encode(self, docs: Sequence[Document]) -> list:
        """Per document: its encoding with offsets, its ids alone (a list: one window whose edges
        are its first and last character), or a Reject.

        A document whose text is longer than a window's worth of characters (at the corpus's
        characters per token so far) goes straight to offsets: tokenizing it for ids first would
        only find it needs them (on SciFact, tokenizing every document twice cost 1.5x)."""
        texts = [d.text for d in docs]
        try:
            if not self.ids_first:
                return self._tok.encode_batch(texts, add_special_tokens=False)
            out: list = [None] * len(texts)
            limit = self.window * self.chars_per_token * ONE_WINDOW_MARGIN
            short = [i for i, t in enumerate(texts) if t and len(t) <= limit and _plain(t[0]) and _plain(t[-1])]
            ids = [e.ids for e in self._tok.encode_batch_fast([texts[i] for i in short], add_special_tokens=False)]
            for i, x in zip(short, ids):
                out[i] = x if len(x) <= self.window else None
            again = [i for i, x in enumerate(out) if x is None]
            for i, enc in zip(again, self._tok.encode_batch([texts[i] for i in again], add_special_tokens=False)):
                out[i] = enc
        except Exception:  # noqa: BLE001 - one bad text fails the batch: find it, keep the rest
            return [self._encode_one(d) for d in docs]
        n_ids = sum(len(x) for x in ids)
        if n_ids:
            self.chars_per_token = sum(len(texts[i]) for i in short) / n_ids
        return out

    def _encode_one(self, doc: Document):
        try:
            return self._tok.encode(doc.text, add_special_tokens=False)
        except Exception as e:  # noqa: BLE001
            return Reject(doc.source, doc.line, doc.doc_id,
                          f"the tokenizer cannot read the text: {type(e).__name__}: {str(e)[:200]}")

    def _whole(self, doc: Document, ids: list[int]) -> list[Chunk]:
        """The one window of a document whose text, edge to edge, is its tokens' span (never
        empty: its first character is printable ASCII)."""
        return [Chunk(chunk_id=make_chunk_id(doc.doc_id, 0), doc_id=doc.doc_id, chunk_index=0, char_start=0,
                      char_end=len(doc.text), text=doc.text,
                      input_ids=np.array(self.prefix + ids + self.suffix, dtype=np.int32))]

    def _cut(self, doc: Document, enc) -> list[Chunk]:
        ids = np.asarray(enc.ids, dtype=np.int32)
        if ids.size == 0:
            return []
        offsets = enc.offsets
        prefix, suffix = np.asarray(self.prefix, np.int32), np.asarray(self.suffix, np.int32)
        out = []
        bounds = window_bounds(len(ids), word_starts(enc.word_ids), self.window, self.overlap, self.truncate)
        for index, (s, e) in enumerate(bounds):
            cs, ce = offsets[s][0], offsets[e - 1][1]
            out.append(Chunk(
                chunk_id=make_chunk_id(doc.doc_id, index),
                doc_id=doc.doc_id,
                chunk_index=index,
                char_start=int(cs),
                char_end=int(ce),
                text=doc.text[cs:ce],
                input_ids=np.concatenate([prefix, ids[s:e], suffix]),
                truncated_tokens=len(ids) - e if self.truncate else 0,
            ))
        return out


def _plain(ch: str) -> bool:
    return "!" <= ch <= "~"  # printable ASCII but the space


def edges_known(spec: str) -> bool:
    """Whether a text that begins and ends with printable ASCII (not a space) has its first token
    start at character 0 and its last token end at its last character: true of BERT's WordPiece
    pipeline (its normalizer keeps such characters, its pre-tokenizer makes each one part of a
    word or a token of its own, and WordPiece spans every word, as [UNK] at worst).
    Other pipelines are not assumed to (a tokenizer may, say, strip or merge characters).

    Args:
        spec: the tokenizer's JSON (``Tokenizer.to_str()``)."""
    pipeline = json.loads(spec)
    kind = lambda part: (pipeline.get(part) or {}).get("type")  # noqa: E731
    return (kind("normalizer") == "BertNormalizer" and kind("pre_tokenizer") == "BertPreTokenizer"
            and kind("model") == "WordPiece")


def word_starts(word_ids: Sequence[int | None]) -> np.ndarray:
    """Positions of the tokens that begin a word, then ``n``: one numpy pass, no loop per token.

    A token begins a word where its word id differs from the previous token's; a token with no
    word (None, e.g. a special token) always does, and so does token 0.
    """
    n = len(word_ids)
    w = np.array(word_ids, dtype=np.float64)  # None -> nan, and nan != nan
    starts = np.ones(n + 1, dtype=bool)
    starts[1:n] = w[1:] != w[:-1]
    return np.flatnonzero(starts)


def window_bounds(n: int, starts: np.ndarray, window: int, overlap: int,
                  truncate: bool = False) -> list[tuple[int, int]]:
    """Token windows ``(start, end)`` of a document of ``n`` tokens; one step per window.

    A window ends at the last word start in its second half when there is one (else at the
    window's full length), and the next begins ``overlap`` tokens before that end, moved
    forward to the first word start before the end when there is one.

    Args:
        starts: sorted positions of word starts, ending with ``n`` (:func:`word_starts`).
    """
    if truncate or n <= window:
        return [(0, min(n, window))]
    out = []
    start = 0
    half = window // 2
    while n - start > window:
        end = start + window
        e = int(starts[np.searchsorted(starts, end, side="right") - 1])  # last word start <= end
        if e >= start + half:
            end = e
        out.append((start, end))
        nxt = end - overlap
        s = int(starts[np.searchsorted(starts, nxt, side="left")])  # first word start >= nxt
        start = s if s < end else nxt
    out.append((start, n))
    return out
