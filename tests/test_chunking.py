from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from embedlab.chunking import Chunker, make_chunk_id, split_chunk_id
from embedlab.corpus import Document

from .test_split_input import sample


@pytest.fixture(scope="module")
def chunker(encoder):
    return Chunker(encoder.tokenizer, chunk_tokens=64, overlap=8)


def docs_of(scifact_docs, n):
    return [Document(d["_id"], (d["title"] + " " + d["text"]).strip(), "scifact", i + 1)
            for i, d in enumerate(scifact_docs[:n])]


def test_chunk_ids_round_trip_even_with_separator_in_doc_id():
    assert split_chunk_id(make_chunk_id("a#1", 0)) == ("a#1", 0)
    assert make_chunk_id("a#1", 0) != make_chunk_id("a", 1)


def test_windows_respect_the_limit_overlap_and_cover_every_token(chunker, encoder, scifact_docs):
    docs = docs_of(scifact_docs, 30)
    chunks, rejects = chunker.chunk(docs)
    assert not rejects
    by_doc: dict[str, list] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    assert any(len(v) > 2 for v in by_doc.values())
    for doc in docs:
        cs = by_doc[doc.doc_id]
        assert [c.chunk_index for c in cs] == list(range(len(cs)))
        assert all(c.n_tokens <= 64 for c in cs)
        assert cs[0].char_start == 0 and cs[-1].char_end == len(doc.text.rstrip())
        for a, b in zip(cs, cs[1:]):
            assert b.char_start < a.char_end  # consecutive windows overlap
            assert b.char_start > a.char_start
        content = encoder.tokenizer.encode(doc.text, add_special_tokens=False).ids
        covered = set()
        pos = 0
        for c in cs:  # every token of the document lies in some window
            inner = list(c.input_ids[1:-1])
            start = next(i for i in range(max(0, pos - 64), len(content))
                         if content[i:i + len(inner)] == inner)
            covered.update(range(start, start + len(inner)))
            pos = start + len(inner)
        assert covered == set(range(len(content)))


def test_chunk_text_retokenizes_to_the_same_ids(chunker, encoder, scifact_docs):
    chunks, _ = chunker.chunk(docs_of(scifact_docs, 20))
    for c in chunks:
        assert np.array_equal(encoder.tokenize([c.text])[0], c.input_ids), c.chunk_id


def test_truncate_mode_keeps_one_window_and_counts_the_loss(encoder, scifact_docs):
    ch = Chunker(encoder.tokenizer, chunk_tokens=256, overlap=32, truncate=True)
    docs = docs_of(scifact_docs, 50)
    chunks, _ = ch.chunk(docs)
    assert len(chunks) == 50
    full = [e.ids for e in encoder.tokenizer.encode_batch([d.text for d in docs], add_special_tokens=False)]
    for c, ids in zip(chunks, full):
        assert c.n_tokens == min(len(ids), 254) + 2
        assert c.truncated_tokens == max(0, len(ids) - 254)
        # the same tokens sentence-transformers feeds the model when it truncates at 256
        assert np.array_equal(c.input_ids, encoder.tokenize([docs[chunks.index(c)].text])[0])


def test_a_several_megabyte_document_is_chunked_not_truncated(encoder, scifact_docs):
    ch = Chunker(encoder.tokenizer, chunk_tokens=256, overlap=32)
    text = " ".join(d["text"] for d in scifact_docs)  # ~ 600k characters
    text = (text + " ") * 5
    assert len(text) > 2_000_000
    chunks, rejects = ch.chunk([Document("big", text, "mem", 1)])
    assert not rejects and len(chunks) > 1000
    assert chunks[-1].char_end == len(text.rstrip())
    assert max(c.n_tokens for c in chunks) <= 256


def test_text_without_tokens_is_rejected(chunker):
    chunks, rejects = chunker.chunk([Document("ctl", "\x01\x02", "f", 3)])
    assert not chunks and rejects[0].reason == "text has no tokens" and rejects[0].line == 3


def test_driver_tokenizer_from_tokenizer_json_equals_autotokenizer(encoder, scifact_docs):
    from embedlab.encoder import fast_tokenizer

    raw = Chunker(fast_tokenizer(encoder.info.path), chunk_tokens=64, overlap=8)
    hf = Chunker(encoder.tokenizer, chunk_tokens=64, overlap=8)
    docs = docs_of(scifact_docs, 40)
    a, _ = raw.chunk(docs)
    b, _ = hf.chunk(docs)
    assert [(c.chunk_id, c.char_start, c.char_end) for c in a] == [(c.chunk_id, c.char_start, c.char_end) for c in b]
    assert all(np.array_equal(x.input_ids, y.input_ids) for x, y in zip(a, b))


def _loop_windows(n, starts_word, w, overlap):
    """The per-token loops the vectorized :func:`window_bounds` replaced: the reference."""
    if n <= w:
        return [(0, n)]
    out, start = [], 0
    while True:
        if n - start <= w:
            out.append((start, n))
            return out
        end = start + w
        e = end
        while e > start + w // 2 and not starts_word[e]:
            e -= 1
        if starts_word[e]:
            end = e
        out.append((start, end))
        nxt = end - overlap
        s = nxt
        while s < end and not starts_word[s]:
            s += 1
        start = s if s < end else nxt


def test_vectorized_windows_equal_the_per_token_loops():
    import numpy as np

    from embedlab.chunking import window_bounds, word_starts

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 900))
        words = np.cumsum(rng.random(n) < rng.choice([0.05, 0.3, 0.9]))  # long and short words
        word_ids = [None if rng.random() < 0.01 else int(x) for x in words]
        ref = np.ones(n + 1, dtype=bool)
        for i in range(1, n):
            ref[i] = word_ids[i] is None or word_ids[i] != word_ids[i - 1]
        starts = word_starts(word_ids)
        assert np.array_equal(starts, np.flatnonzero(ref))
        w = int(rng.integers(8, 300))
        overlap = int(rng.integers(0, w // 2))
        assert window_bounds(n, starts, w, overlap) == _loop_windows(n, ref, w, overlap), trial



def chunk_tuples(chunker, docs) -> tuple[list[tuple], list[tuple]]:
    chunks, rejects = chunker.chunk(docs)
    return ([(c.chunk_id, c.char_start, c.char_end, c.text, c.input_ids.tobytes(), c.truncated_tokens)
             for c in chunks], [(r.doc_id, r.reason) for r in rejects])


EDGE_TEXTS = ["plain text.", "  leading spaces", "trailing spaces  ", "\x00control first", "last control\x07",
              "\u0301lone accent first", "accent last e\u0301", "\u00e9t\u00e9", "\u4e2d\u6587 CJK", "[SEP] tail [SEP]",
              "\ufeffbom first", "x", ".", "\u200b", "", "a" * 300, "word " * 200 + "end\u3000", "tab\tend\t",
              "a." * 150]  # short in characters, over a window in tokens: tokenized again with offsets


@pytest.mark.parametrize("truncate", [False, True])
def test_ids_first_tokenizing_gives_the_chunks_of_tokenizing_with_offsets(encoder, tmp_path, truncate):
    """Documents tokenized for ids alone (one window, plain ASCII edges) and the rest with
    offsets give exactly what tokenizing every document with offsets gives."""
    fast = Chunker(encoder.tokenizer, chunk_tokens=128, overlap=16, truncate=truncate)
    assert fast.ids_first
    slow = copy.copy(fast)
    slow.ids_first = False
    docs = [Document(f"e{i}", t, "edges", i + 1) for i, t in enumerate(EDGE_TEXTS)]
    assert chunk_tuples(fast, docs) == chunk_tuples(slow, docs)
    assert fast.chars_per_token != 4.0  # some went ids first
    for name in ("scifact", "wikipedia-vital-en"):
        records = [json.loads(x) for x in sample(name, 2000, tmp_path / f"{name}.jsonl").read_bytes().splitlines()]
        docs = [Document(r["_id"], (r.get("title", "") + " " + r["text"]).strip(), name, i + 1)
                for i, r in enumerate(records)]
        got, want = chunk_tuples(fast, docs), chunk_tuples(slow, docs)
        assert len(got[0]) >= len(docs) and got == want
