"""Whole jobs on corpora that mix real SciFact documents with hostile records (issue #14): the
job finishes, every good record is embedded once, every bad one is listed, exit 3."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embedlab
from embedlab.store import Store
from tests.fuzzing import HOSTILE_JSONL, dump, oracle, records

EMBED = [sys.executable, "-m", "embedlab.cli", "embed"]


def embed_cli(corpus: Path, out: Path, model: Path, scheduler: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EMBED, str(corpus), "--out", str(out), "--model", str(model), "--no-progress",
                           "--json", "--scheduler", scheduler], capture_output=True, text=True, timeout=600)


def stored(out: Path) -> tuple[list[str], list[str]]:
    t = pq.read_table(out, columns=["doc_id", "chunk_id"])
    return t.column("doc_id").to_pylist(), t.column("chunk_id").to_pylist()


def test_a_lone_surrogate_and_every_other_hostile_line_among_73_scifact_documents(tmp_path, tiny_model,
                                                                                   scifact_docs, scheduler):
    good = [json.dumps(d).encode() for d in scifact_docs[:73]]
    lines, expect = [], {}
    for i, raw in enumerate(good):  # a hostile line after every third document
        lines.append(raw)
        if i % 3 == 2 and i // 3 < len(HOSTILE_JSONL):
            hostile, outcome = HOSTILE_JSONL[i // 3]
            lines.append(hostile)
            expect[len(lines)] = outcome
    for hostile, outcome in HOSTILE_JSONL[len(good) // 3:]:
        lines.append(hostile)
        expect[len(lines)] = outcome
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    proc = embed_cli(corpus, out, tiny_model, scheduler)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    kept = {what for kind, what in expect.values() if kind == "doc"}
    bad_lines = {line for line, (kind, _) in expect.items() if kind == "reject"}
    assert summary["documents"] == 73 + len(kept) and summary["rejected"] == len(bad_lines)
    assert summary["repaired_documents"] == 2  # "lone \ud800 surrogate" and the title's \udfff
    rejects = [json.loads(x) for x in (out / "_rejects.jsonl").read_text().splitlines()]
    assert {r["line"] for r in rejects} == bad_lines
    for r in rejects:
        assert r["file"] == str(corpus) and expect[r["line"]][1] in r["reason"]
    doc_ids, chunk_ids = stored(out)
    assert set(doc_ids) == {d["_id"] for d in scifact_docs[:73]} | kept  # every good record
    assert len(chunk_ids) == len(set(chunk_ids))  # each chunk once
    texts = pq.read_table(out, columns=["doc_id", "text"]).to_pylist()
    assert any(r["doc_id"] == "surrogate" and "lone \ufffd surrogate" in r["text"] for r in texts)
    assert Store(out).verify() == []


def test_truncated_gzip_corpus_keeps_what_was_readable_and_exits_3(tmp_path, tiny_model, scifact_docs,
                                                                 scheduler):
    data = gzip.compress(b"".join(json.dumps(d).encode() + b"\n" for d in scifact_docs[:60]), mtime=0)
    corpus = tmp_path / "corpus.jsonl.gz"
    corpus.write_bytes(data[:int(len(data) * 0.6)])
    out = tmp_path / "out"
    proc = embed_cli(corpus, out, tiny_model, scheduler)
    assert proc.returncode == 3, proc.stderr
    [cut] = [json.loads(x) for x in (out / "_rejects.jsonl").read_text().splitlines()]
    kept = cut["line"] - 1
    assert 10 < kept < 60 and cut["file"] == str(corpus)
    assert f"the last good line is {kept}" in cut["reason"] and "truncated" in cut["reason"]
    doc_ids, _ = stored(out)
    assert set(doc_ids) == {d["_id"] for d in scifact_docs[:kept]}
    assert json.loads(proc.stdout)["documents"] == kept and Store(out).verify() == []


def test_parquet_with_hostile_rows(tmp_path, tiny_model, scifact_docs, scheduler):
    docs = scifact_docs[:30]
    ids = [d["_id"].encode() for d in docs] + [None, b"\xff\xfe", b"dup", b"dup", b"ok-binary"]
    texts = [d["text"].encode() for d in docs] + [b"no id", b"bad id", b"first", b"second", b"text \xff"]
    corpus = tmp_path / "c.parquet"
    table = pa.table({"_id": pa.array(ids, pa.binary()), "text": pa.array(texts, pa.binary()).view(pa.string())})
    pq.write_table(table, corpus, row_group_size=8)
    r = embedlab.embed(corpus, tmp_path / "out", model=str(tiny_model), progress=False,
                        scheduler=scheduler)
    rejects = [json.loads(x) for x in r.rejects_path.read_text().splitlines()]
    assert [x["line"] for x in rejects] == [31, 32, 34, 35]
    assert "id field" in rejects[0]["reason"] and "duplicate" in rejects[2]["reason"]
    assert "cannot be read" in rejects[3]["reason"]  # invalid UTF-8 in a string column
    assert set(stored(r.out)[0]) == {d["_id"] for d in docs} | {"dup"}
    assert r.documents == 31 and r.rejected == 4


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(value=records(), ascii_only=st.booleans(), unique=st.booleans())
def collect(lines: list[bytes], value, ascii_only: bool, unique: bool) -> None:
    if unique and isinstance(value, dict) and "_id" in value:
        value["_id"] = f"fuzz-{len(lines)}"  # so that more records are good, not duplicates
    lines.append(dump(value, ascii_only))


def test_a_fuzzed_file_end_to_end_every_good_record_once_every_bad_one_listed(tiny_model, scheduler):
    lines: list[bytes] = []
    collect(lines)
    data = b"\n".join(lines) + b"\n"
    want = oracle(data)
    good = {e.doc_id for e in want if e.doc_id is not None}
    assert len(good) >= 10 and len(want) - len(good) >= 30  # the file holds plenty of both
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_bytes(data)
        result = embedlab.embed(corpus, Path(tmp) / "out", model=str(tiny_model), progress=False,
                        scheduler=scheduler)
        doc_ids, chunk_ids = stored(result.out)
        rejects = [json.loads(x) for x in result.rejects_path.read_text().splitlines()]
        assert Store(result.out).verify() == []
    assert len(set(chunk_ids)) == len(chunk_ids)  # every chunk once
    no_tokens = {r["doc_id"] for r in rejects if r["reason"] == "text has no tokens"}
    assert set(doc_ids) == good - no_tokens  # every good record, unless its text has no token
    assert {r["line"] for r in rejects} == {e.line for e in want if e.doc_id is None or e.doc_id in no_tokens}
    assert all(r["reason"] and r["file"] == str(corpus) for r in rejects)
