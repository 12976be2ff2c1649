from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedlab.config import CorpusConfig
from embedlab.corpus import CorpusError, Document, Reject, read_corpus


def read(path, **kw):
    recs = list(read_corpus(CorpusConfig(path=path, **kw)))
    return [r for r in recs if isinstance(r, Document)], [r for r in recs if isinstance(r, Reject)]


def test_beir_gz_joins_title_and_text_as_beir_does(scifact_dir, scifact_docs):
    docs, rejects = read(scifact_dir / "corpus.jsonl.gz", limit=50)
    assert not rejects and len(docs) == 50
    first = scifact_docs[0]
    assert docs[0].doc_id == first["_id"]
    assert docs[0].text == (first["title"] + " " + first["text"]).strip()
    assert docs[0].line == 1


def test_generic_jsonl_with_named_fields(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "body": "alpha"}\n{"id": "b", "body": "beta"}\n')
    docs, rejects = read(p, id_field="id", text_field="body", title_field=None)
    assert [(d.doc_id, d.text) for d in docs] == [("a", "alpha"), ("b", "beta")] and not rejects


def test_parquet_corpus(tmp_path):
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"_id": ["x", "y", "z"], "text": ["one", "", "three"]}), p)
    docs, rejects = read(p)
    assert [d.doc_id for d in docs] == ["x", "z"]
    assert rejects[0].line == 2 and rejects[0].reason == "empty text"


def test_txt_folder_uses_relative_paths_as_ids(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("first file\r\n")
    (tmp_path / "sub" / "b.txt").write_bytes(b"\xef\xbb\xbfsecond file")
    (tmp_path / "empty.txt").write_bytes(b"")
    docs, rejects = read(tmp_path)
    assert {d.doc_id: d.text for d in docs} == {"a.txt": "first file", "sub/b.txt": "second file"}
    assert [(r.doc_id, r.reason) for r in rejects] == [("empty.txt", "empty file (0 bytes)")]


def test_bad_lines_are_rejected_with_file_line_and_reason_and_good_ones_kept(tmp_path):
    p = tmp_path / "corpus.jsonl"
    lines = [
        b'\xef\xbb\xbf{"_id": "1", "title": "T", "text": "good one"}\r\n',  # BOM + CRLF: fine
        b'{"_id": "2", "text": "broken"\n',  # malformed JSON
        b'{"_id": "3", "title": "only title"}\n',  # missing text
        b'{"_id": "4", "text": "   "}\n',  # empty text
        b'{"_id": "1", "text": "duplicate"}\n',  # duplicate id
        b'{"_id": "5", "text": "caf\xe9"}\n',  # not UTF-8
        b'{"_id": 6, "text": "numeric id", "extra": [1, 2]}\n',  # int id + extra field: fine
        b'{"_id": "6", "text": "same id as a string"}\n',  # duplicate of 6
        b'{"_id": null, "text": "no id"}\n',
        b'["not", "an", "object"]\n',
        b'{"_id": "7", "text": "ctrl \x01\x02 chars"}\n',  # control characters: kept
        b'{"_id": "8", "text": "truncated last li',  # truncated last line
    ]
    p.write_bytes(b"".join(lines))
    docs, rejects = read(p)
    assert [d.doc_id for d in docs] == ["1", "6", "7"]
    assert docs[0].text == "T good one"
    by_line = {r.line: r.reason for r in rejects}
    assert set(by_line) == {2, 3, 4, 5, 6, 8, 9, 10, 12}
    assert "invalid JSON" in by_line[2] and "invalid JSON" in by_line[12]
    assert "missing text field" in by_line[3]
    assert by_line[4] == "empty text"
    assert "duplicate document id '1'" in by_line[5] and f"{p}:1" in by_line[5]
    assert "not valid UTF-8" in by_line[6]
    assert "duplicate document id '6'" in by_line[8]
    assert "id field" in by_line[9] and "JSON object" in by_line[10]
    assert all(r.source == str(p) for r in rejects)


def test_limit_counts_good_documents(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a", "text": ""}\n{"_id": "b", "text": "x"}\n{"_id": "c", "text": "y"}\n')
    docs, rejects = read(p, limit=2)
    assert [d.doc_id for d in docs] == ["b", "c"] and len(rejects) == 1


def test_missing_path_and_unknown_format_raise_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        read(tmp_path / "nope.jsonl")
    (tmp_path / "c.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match="cannot tell the format"):
        read(tmp_path / "c.csv")


def test_a_gz_file_without_readable_gzip_data_is_a_corpus_error(tmp_path):
    p = tmp_path / "c.jsonl.gz"
    p.write_bytes(b'{"_id": "a", "text": "plain JSON under a .gz name"}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl.gz: cannot read the file: not gzip data"):
        read(p)
    p.write_bytes(gzip.compress(b'{"_id": "a", "text": "x"}\n' * 100)[:10])  # the header only
    with pytest.raises(CorpusError, match="ends before any line"):
        read(p)


GZ_LINES = [json.dumps({"_id": f"d{i}", "text": f"document {i} " * (i % 9 + 1)}).encode() + b"\n"
            for i in range(4000)]


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, 0.999])
def test_truncated_gzip_keeps_every_line_before_the_cut_and_rejects_the_cut(tmp_path, keep):
    data = gzip.compress(b"".join(GZ_LINES))
    p = tmp_path / "c.jsonl.gz"
    p.write_bytes(data[:int(len(data) * keep)])
    docs, rejects = read(p)
    n = len(docs)
    assert 0 < n < len(GZ_LINES)
    assert [d.doc_id for d in docs] == [f"d{i}" for i in range(n)]  # every line before the cut
    gone = gzip.decompress(data)[sum(map(len, GZ_LINES[:n])):]
    assert len(rejects) == 1 and rejects[0].line == n + 1 and rejects[0].source == str(p)
    assert "truncated" in rejects[0].reason and f"the last good line is {n}" in rejects[0].reason
    assert gone.startswith(b"{")  # what was lost starts at a line boundary: nothing half-kept


def test_gzip_damage_in_the_middle_multi_member_and_trailing_bytes(tmp_path):
    p = tmp_path / "c.jsonl.gz"
    body = b"".join(GZ_LINES[:300])
    p.write_bytes(gzip.compress(body[:5000]) + gzip.compress(body[5000:]) + b"\0" * 512)
    docs, rejects = read(p)  # members joined, zero padding after the last ignored, as gzip does
    assert len(docs) == 300 and not rejects
    p.write_bytes(gzip.compress(body) + b"not gzip")
    docs, rejects = read(p)
    assert len(docs) == 300 and len(rejects) == 1 and "after the end of the gzip data" in rejects[0].reason
    data = bytearray(gzip.compress(body, mtime=0))
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # a run of zeroed bytes mid-stream
    p.write_bytes(bytes(data))
    docs, rejects = read(p)  # lines before the damage are kept, in order; the rest rejected
    ids = [d.doc_id for d in docs]
    assert ids[:100] == [f"d{i}" for i in range(100)] and set(ids) <= {f"d{i}" for i in range(300)}
    assert rejects and all(r.reason and r.source == str(p) for r in rejects)
    assert any("gzip data is corrupt" in r.reason for r in rejects)  # the cut itself is listed


def test_zero_byte_file_yields_nothing(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(b"")
    assert read(p) == ([], [])


def test_reader_streams_without_reading_everything(tmp_path):
    p = tmp_path / "c.jsonl"
    with open(p, "w") as fh:
        for i in range(100_000):
            fh.write(json.dumps({"_id": str(i), "text": "t"}) + "\n")
    it = read_corpus(CorpusConfig(path=p))
    assert next(it).doc_id == "0"  # first record without parsing the rest
