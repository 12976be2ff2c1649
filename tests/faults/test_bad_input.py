"""The bad-input matrix through the real CLI: clear errors, every good record kept, exit status."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq

from embedlab.store import Store

EMBED = [sys.executable, "-m", "embedlab.cli", "embed"]


def test_bad_input_matrix(tmp_path, tiny_model, scifact_docs):
    million = " ".join(d["text"] for d in scifact_docs)
    million = (million * (1_000_000 // len(million) + 1))[:1_000_000]
    good = [json.dumps(d).encode() for d in scifact_docs[:5]]
    lines = [
        b"\xef\xbb\xbf" + good[0] + b"\r",  # BOM, CRLF
        good[1] + b"\r",
        b'{"_id": 101, "text": "tab\\t bell \x07 escape \x1b and NUL-free control chars", "x": {"y": 1}}',
        b'{"_id": "101", "text": "same id as the number above"}',
        b'{"_id": "no-text", "title": "a title and nothing else", "extra": true}',
        json.dumps({"_id": "million", "text": million}).encode(),
        good[2],
        b'{"_id": "trunc", "text": "the file ends mid-li',
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\n".join(lines))
    out = tmp_path / "out"
    proc = subprocess.run([*EMBED, str(corpus), "--out", str(out), "--model", str(tiny_model),
                           "--no-progress", "--json"], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["documents"] == 5 and summary["rejected"] == 3
    rejects = [json.loads(x) for x in (out / "_rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["doc_id"]) for r in rejects] == [(4, "101"), (5, "no-text"), (8, None)]
    assert all(r["file"] == str(corpus) for r in rejects)
    assert "duplicate document id '101' (first seen at" in rejects[0]["reason"]
    assert "missing text field" in rejects[1]["reason"] and "invalid JSON" in rejects[2]["reason"]
    t = pq.read_table(out)
    docs = set(t.column("doc_id").to_pylist())
    assert docs == {scifact_docs[i]["_id"] for i in range(3)} | {"101", "million"}
    texts = dict(zip(t.column("chunk_id").to_pylist(), t.column("text").to_pylist()))
    assert texts["101#0"] == "tab\t bell \x07 escape \x1b and NUL-free control chars"  # kept, byte for byte
    big = [c for c in t.column("chunk_id").to_pylist() if c.startswith("million#")]
    assert len(big) > 1000
    ends = sorted(zip(t.column("doc_id").to_pylist(), t.column("char_end").to_pylist()))
    assert max(e for d, e in ends if d == "million") == len(million.strip())  # nothing cut off
    assert Store(out).verify() == []


def test_a_store_made_with_another_model_is_refused(tmp_path, tiny_model, scifact_docs):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in scifact_docs[:3]))
    first = subprocess.run([*EMBED, str(corpus), "--out", str(tmp_path / "o"), "--model", str(tiny_model),
                            "--no-progress"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([*EMBED, str(corpus), "--out", str(tmp_path / "o"), "--no-progress"],
                            capture_output=True, text=True)
    assert second.returncode == 1
    assert "refusing to mix" in second.stderr and "model_sha256" in second.stderr
