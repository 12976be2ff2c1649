"""Hostile records through the readers and the chunker: each one is a document or a reject with
its reason, never an exception that stops the job (issue #14, per-record isolation)."""

from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedlab.chunking import Chunker
from embedlab.config import CorpusConfig
from embedlab.corpus import Document, Reject, read_corpus
from embedlab.incremental import parse_feed_line, read_feed

from .fuzzing import HOSTILE_JSONL

@pytest.fixture(scope="module")
def chunker(encoder):
    return Chunker(encoder.tokenizer, chunk_tokens=64, overlap=8)


def records(path, **kw):
    return list(read_corpus(CorpusConfig(path=path, **kw)))


def test_every_hostile_jsonl_line_is_a_document_or_a_reject_with_its_reason(tmp_path, chunker):
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(line for line, _ in HOSTILE_JSONL) + b"\n")
    got = records(path)
    assert [r.line for r in got] == list(range(1, len(HOSTILE_JSONL) + 1))  # one outcome per line
    for rec, (raw, (kind, what)) in zip(got, HOSTILE_JSONL):
        if kind == "doc":
            assert isinstance(rec, Document) and rec.doc_id == what, (raw[:60], rec)
        else:
            assert isinstance(rec, Reject) and what in rec.reason and rec.source == str(path), (raw[:60], rec)
    docs = [r for r in got if isinstance(r, Document)]
    chunks, rejects = chunker.chunk(docs)
    assert not rejects  # every document the reader keeps can be chunked
    assert {c.doc_id for c in chunks} == {d.doc_id for d in docs}


def test_a_lone_surrogate_becomes_u_fffd_and_is_counted(tmp_path, chunker):
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "a", "text": "lone \\ud800 surrogate, \\udc00 twice"}\n'
                    '{"_id": "b", "text": "no surrogate \\ud83d\\ude00"}\n')
    a, b = records(path)
    assert a.text == "lone \ufffd surrogate, \ufffd twice" and a.repaired == 2
    assert b.text == "no surrogate \U0001F600" and b.repaired == 0
    chunks, rejects = chunker.chunk([a, b])
    assert not rejects and chunks[0].text.encode("utf-8")


def test_the_chunker_rejects_only_the_text_the_tokenizer_refuses(chunker):
    docs = [Document("good", "a good text", "f", 1), Document("bad", "raw \ud800 surrogate", "f", 2),
            Document("also-good", "another good text", "f", 3), Document("ctl", "\x01\x02", "f", 4)]
    chunks, rejects = chunker.chunk(docs)
    assert [c.doc_id for c in chunks] == ["good", "also-good"]
    assert [(r.doc_id, r.line) for r in rejects] == [("bad", 2), ("ctl", 4)]
    assert "tokenizer cannot read the text" in rejects[0].reason and rejects[1].reason == "text has no tokens"


def test_hostile_parquet_rows_are_rejected_one_by_one(tmp_path):
    bad_utf8 = pa.array([b"good text", b"bad \xff text", b"fine"], pa.binary()).view(pa.string())
    cases = {
        "utf8": (pa.table({"_id": ["a", "b", "c"], "text": bad_utf8}), ["a", "c"], {2: "cannot be read"}),
        "types": (pa.table({"_id": pa.array([1.5, None, 3.0]),
                            "text": pa.array([[1], [2], None], pa.list_(pa.int64()))}),
                  [], {1: "got float", 2: "got NoneType", 3: "got float"}),
        "binary": (pa.table({"_id": pa.array([b"x", b"y\xff", b"z", b"w"]),
                             "text": pa.array([b"binary text", b"t", b"\xff", None]),
                             "title": pa.array([1, 2, 3, 4])}),
                   ["x"], {2: "id field", 3: "not valid UTF-8", 4: "missing text field"}),
        "struct": (pa.table({"_id": pa.array([{"a": 1}, None, {"a": 2}]),
                             "text": pa.array(["x", "y", "z"])}),
                   [], {1: "got dict", 2: "id field", 3: "got dict"}),
        "ints": (pa.table({"_id": pa.array([2**63 - 1, 7], pa.int64()), "text": ["big", "seven"],
                           "title": [None, "T"]}), [str(2**63 - 1), "7"], {}),
    }
    for name, (table, good, bad) in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        got = records(path)
        assert [r.doc_id for r in got if isinstance(r, Document)] == good, name
        assert {r.line: r.reason for r in got if isinstance(r, Reject)}.keys() == bad.keys(), name
        for r in got:
            if isinstance(r, Reject):
                assert bad[r.line] in r.reason, (name, r)


def test_a_damaged_parquet_row_group_costs_its_rows_only(tmp_path):
    n = 3000
    path = tmp_path / "c.parquet"
    table = pa.table({"_id": [f"d{i}" for i in range(n)], "text": [f"text {i} " * 20 for i in range(n)]})
    pq.write_table(table, path, row_group_size=1000)
    page = pq.ParquetFile(path).metadata.row_group(1).column(1).data_page_offset
    data = bytearray(path.read_bytes())
    data[page + 50:page + 400] = bytes(b ^ 0x5A for b in data[page + 50:page + 400])
    path.write_bytes(bytes(data))
    got = records(path)
    docs = [r.doc_id for r in got if isinstance(r, Document)]
    assert docs == [f"d{i}" for i in range(1000)] + [f"d{i}" for i in range(2000, 3000)]
    [cut] = [r for r in got if isinstance(r, Reject)]
    assert cut.line == 1001 and "rows 1001-2000 (row group 2 of 3) cannot be read" in cut.reason


def test_txt_folder_with_hostile_files(tmp_path):
    (tmp_path / "ok.txt").write_bytes(b"plain text with a NUL \x00 and \x1b control characters")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "folder.txt").mkdir()  # a folder named like a file: walked, not read
    (tmp_path / "folder.txt" / "inner.txt").write_text("inside")
    os.symlink(tmp_path / "missing-target", tmp_path / "dangling.txt")
    (tmp_path / os.fsdecode(b"caf\xe9.txt")).write_text("a latin-1 file name")
    got = records(tmp_path)
    assert {r.doc_id: r.text for r in got if isinstance(r, Document)} == {
        "ok.txt": "plain text with a NUL \x00 and \x1b control characters", "folder.txt/inner.txt": "inside"}
    assert {r.doc_id: r.reason for r in got if isinstance(r, Reject)} == {
        "dangling.txt": "a link to a file that does not exist", "latin1.txt": "not valid UTF-8 at byte 3",
        None: "the file name (the id) is not valid UTF-8: 'caf\\udce9.txt'"}


def test_change_feed_lines_never_raise_and_a_truncated_gzip_feed_keeps_its_head(tmp_path):
    cfg = CorpusConfig(path=tmp_path / "feed.jsonl.gz")
    for raw, _ in HOSTILE_JSONL:
        assert parse_feed_line(raw, cfg, "feed", 1) is not None
    ops = [b'{"op": ["upsert"], "_id": "a", "text": "x"}', b'{"op": "delete", "_id": 1.5}',
           b'{"op": "delete", "_id": 7}']
    got = [parse_feed_line(raw, cfg, "feed", i) for i, raw in enumerate(ops, start=1)]
    assert isinstance(got[0], Reject) and "op must be upsert or delete" in got[0].reason
    assert isinstance(got[1], Reject) and got[2].doc_id == "7"
    lines = b"".join(json.dumps({"_id": f"d{i}", "text": f"text {i} " * 30}).encode() + b"\n"
                     for i in range(2000))
    data = gzip.compress(lines)
    cfg.path.write_bytes(data[:len(data) // 2])
    got = list(read_feed(cfg))
    assert isinstance(got[-1], Reject) and "truncated" in got[-1].reason
    assert [op.doc_id for op in got[:-1]] == [f"d{i}" for i in range(len(got) - 1)] and len(got) > 100
