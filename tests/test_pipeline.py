"""The embed job end to end: real model, real SciFact text, a real in-process Dask cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

import embedlab
from embedlab.index import faiss_ids
from embedlab.store import Store, StoreMismatchError

from .conftest import write_jsonl

EMBEDLAB = [sys.executable, "-m", "embedlab.cli"]
FAST = dict(partition_tokens=3000, progress=False, dtype="fp32")


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".faiss")}


def run_cli(*args, timeout=600):
    return subprocess.run([*EMBEDLAB, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory, scifact_docs):
    """One embed run of 40 SciFact docs shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("built")
    corpus = write_jsonl(root / "corpus.jsonl", scifact_docs[:40])
    result = embedlab.embed(corpus, root / "out", **FAST)
    return corpus, result


def test_store_is_complete_and_consistent(built, encoder, scifact_docs):
    corpus, result = built
    store = Store(result.out)
    assert result.ok and result.documents == 40 and result.partitions > 2
    assert store.verify() == []
    table = pq.read_table(result.out)  # the folder is one Parquet dataset
    assert table.num_rows == result.chunks == store.manifest().rows
    ids = table.column("chunk_id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert set(table.column("doc_id").to_pylist()) == {d["_id"] for d in scifact_docs[:40]}
    assert {"chunk_id", "doc_id", "chunk_index", "char_start", "char_end", "n_tokens", "vector"} <= set(
        table.column_names)
    ntotal = sum(faiss.read_index(str(store.faiss_path(i))).ntotal for i in range(result.partitions))
    assert ntotal == table.num_rows
    # stored vectors are the encoder's vectors for the stored text
    vecs = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    direct = encoder.encode_texts(table.column("text").to_pylist()[:30])
    assert ((vecs[:30] * direct).sum(1)).min() >= 0.9999
    # FAISS ids map back to chunk ids: each vector finds itself
    index = faiss.read_index(str(store.faiss_path(0)))
    first = pq.read_table(store.parquet_path(0))
    D, I = index.search(np.stack(first.column("vector").to_numpy(zero_copy_only=False))[:3], 1)
    assert I[:, 0].tolist() == faiss_ids(first.column("chunk_id").to_pylist()[:3]).tolist()
    meta = store.meta()
    assert meta["model_sha256"] == encoder.info.sha256 and meta["chunk_tokens"] == 256
    summary = json.loads((result.out / "_summary.json").read_text())
    assert summary["chunks"] == result.chunks and summary["chunks_per_second"] > 0


def test_rerun_skips_everything_and_a_fresh_run_is_byte_identical(built, tmp_path):
    corpus, result = built
    before = files(result.out)
    again = embedlab.embed(corpus, result.out, **FAST)
    assert again.partitions_skipped == result.partitions and again.partitions_encoded == 0
    assert files(result.out) == before
    fresh = embedlab.embed(corpus, tmp_path / "fresh", **FAST)
    assert files(fresh.out) == before


def test_rerun_repairs_exactly_the_damaged_partitions(built, tmp_path):
    """Each kind of damage the README lists, on its own partition; the re-run redoes those four."""
    import shutil

    corpus, result = built
    assert result.partitions >= 5
    out = tmp_path / "copy"
    shutil.copytree(result.out, out)
    store = Store(out)
    store.parquet_path(1).write_bytes(store.parquet_path(1).read_bytes()[:1000])  # truncated Parquet
    store.faiss_path(2).unlink()  # a missing file
    shard = bytearray(store.faiss_path(3).read_bytes())
    shard[len(shard) // 2] ^= 0xFF  # flipped bytes in a FAISS shard
    store.faiss_path(3).write_bytes(bytes(shard))
    m = store.manifest()
    del m.partitions[0]  # a deleted manifest entry: its files are still there, unlisted
    store.write_manifest(m)
    (out / ".part-00004.parquet.zz.tmp").write_bytes(b"junk")  # a stray temporary file
    problems = "\n".join(store.verify())
    for damage in ("part-00001.parquet: 1000 bytes, its commit recorded", "part-00002.faiss: missing",
                   "part-00003.faiss: sha256 differs", "no entry for partition(s) [0]",
                   "part-00000.parquet: not in the manifest", "stray temporary file"):
        assert damage in problems, damage
    # a re-run trusts committed files of the recorded size: the flipped shard (same size) is left
    again = embedlab.embed(corpus, out, **FAST)
    assert again.partitions_encoded == 3 and again.partitions_skipped == result.partitions - 3
    assert [p for p in store.verify() if "part-00003.faiss: sha256 differs" in p]
    deep = embedlab.embed(corpus, out, **FAST, verify_deep=True)  # re-hashes: finds and redoes it
    assert deep.partitions_encoded == 1 and deep.partitions_skipped == result.partitions - 1
    assert store.verify() == [] and files(out) == files(result.out)


def test_refuses_to_mix_runs_with_different_chunking(built):
    corpus, result = built
    with pytest.raises(StoreMismatchError, match="chunk_tokens: store has 256, this run has 128"):
        embedlab.embed(corpus, result.out, chunk_tokens=128, **FAST)


def test_bad_records_are_reported_and_every_good_one_embedded(tmp_path, scifact_docs):
    good = scifact_docs[:6]
    big = {"_id": "big", "title": "", "text": " ".join(d["text"] for d in scifact_docs[:30])}
    lines = [json.dumps(d).encode() for d in good[:3]]
    lines += [b'{"_id": "bad-json", "text": ', b'{"_id": "no-text"}', json.dumps(good[0]).encode(),
              b'{"_id": "latin1", "text": "caf\xe9"}', b'{"_id": "empty", "text": ""}']
    lines += [json.dumps(d).encode() for d in good[3:]] + [json.dumps(big).encode()]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    proc = run_cli("embed", corpus, "--out", tmp_path / "out", "--no-progress",
                   "--partition-tokens", 4000)
    assert proc.returncode == 3, proc.stderr
    assert "5 input record(s) rejected" in proc.stderr
    rejects = [json.loads(x) for x in (tmp_path / "out" / "_rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["file"]) for r in rejects] == [(i, str(corpus)) for i in (4, 5, 6, 7, 8)]
    assert "duplicate document id" in rejects[2]["reason"] and "UTF-8" in rejects[3]["reason"]
    table = pq.read_table(tmp_path / "out")
    assert set(table.column("doc_id").to_pylist()) == {d["_id"] for d in good} | {"big"}
    big_chunks = [c for c in table.column("chunk_id").to_pylist() if c.startswith("big#")]
    assert len(big_chunks) > 10  # the long document was chunked, not truncated
    assert Store(tmp_path / "out").verify() == []


def test_empty_and_missing_corpora_fail_with_a_clear_message(tmp_path):
    empty = tmp_path / "corpus.jsonl"
    empty.write_bytes(b"")
    proc = run_cli("embed", empty, "--out", tmp_path / "o1", "--no-progress")
    assert proc.returncode == 1 and "no document could be embedded" in proc.stderr
    proc = run_cli("embed", tmp_path / "missing.jsonl", "--out", tmp_path / "o2")
    assert proc.returncode == 1 and "corpus path does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_help_explains_every_option():
    proc = run_cli("embed", "--help")
    assert proc.returncode == 0
    for opt in ("--out", "--model", "--batch-size", "--dtype", "--workers", "--scheduler", "--limit",
                "--chunk-tokens", "--overlap", "--truncate"):
        assert opt in proc.stdout


def test_default_command_embeds_the_shipped_corpus_without_network(tmp_path, monkeypatch):
    from embedlab.config import SAMPLE_CORPUS

    result = embedlab.embed(SAMPLE_CORPUS, tmp_path / "sample", progress=False)
    assert result.ok and result.documents == 20 and result.chunks == 20


def test_driver_chunks_ahead_only_while_models_load():
    from concurrent.futures import Future

    from embedlab.pipeline import chunk_while_loading

    loaded = Future()
    loaded.set_result(None)
    rest = iter(range(1, 100))
    assert chunk_while_loading(0, rest, [loaded], workers=3) == [0, 1, 2]  # one per worker, no more
    assert next(rest) == 3  # nothing taken is lost

    loading = Future()
    rest = iter(range(1, 100))
    assert chunk_while_loading(0, rest, [loaded, loading], workers=1, limit=5) == [0, 1, 2, 3, 4]
    assert next(rest) == 5

    def stream():  # the model finishes loading while partition 3 is being chunked
        for k in range(1, 100):
            if k == 3:
                loading.set_result(None)
            yield k

    loading = Future()
    rest = stream()
    assert chunk_while_loading(0, rest, [loading], workers=1) == [0, 1, 2, 3]
    assert next(rest) == 4
    assert chunk_while_loading(0, iter([1]), [Future()], workers=1) == [0, 1]  # a short stream ends it
