"""The split-parallel input path: workers' chunks equal the driver's, rejects keep their lines,
ids held by two splits are found, and a re-run skips committed splits without reading them."""

from __future__ import annotations

import gzip
import json
import os
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import embedlab
from embedlab.config import CorpusConfig, EmbedConfig
from embedlab.corpus import read_corpus
from embedlab.chunk_stream import ChunkStream, make_chunker
from embedlab.split_embed import plan
from embedlab.split_task import cut_split
from embedlab.store import Store

from .conftest import DATA, write_jsonl

SIM = "sim:r_max=50000,b_half=16,dim=32"
FAST = dict(model=SIM, progress=False)


def chunk_rows(parts) -> list[tuple]:
    """(chunk id, char start, char end, token ids, document sha256) of every chunk, in order."""
    rows = []
    for p in parts:
        ids = p.input_ids()
        for i in range(p.n_chunks):
            rows.append((p.chunk_ids[i], int(p.char_start[i]), int(p.char_end[i]), ids[i].tobytes(),
                         p.doc_sha256[i]))
    return rows


def worker_vs_driver(corpus: Path, split_bytes: int, partition_tokens: int = 20000) -> int:
    cfg = EmbedConfig(corpus=CorpusConfig(path=corpus, split_bytes=split_bytes), out=corpus.parent / "unused",
                      partition_tokens=partition_tokens)
    chunker = make_chunker(cfg)
    driver = ChunkStream(read_corpus(cfg.corpus), chunker, cfg.corpus.block_docs)
    want = chunk_rows(driver.partitions(cfg.partition_tokens))
    works, _, _ = plan(cfg, chunker.chunk_tokens)
    assert len(works) >= 3
    got = []
    for w in works:
        _, _, parts = cut_split(w)
        got += chunk_rows(parts)
    assert len(got) == len(want)
    assert got == want
    return len(works)


def sample(name: str, n: int | None, out: Path) -> Path:
    src = DATA / name / "corpus.jsonl.gz"
    if not src.is_file():
        pytest.skip(f"{src} not found (set EMBEDLAB_DATA)")
    with gzip.open(src, "rb") as fh:
        out.write_bytes(b"".join(islice(fh, n)))
    return out


@pytest.mark.parametrize("name, n", [("scifact", 400), ("wikipedia-vital-en", 150)])
def test_worker_chunks_equal_the_driver_chunks(tmp_path, name, n):
    corpus = sample(name, n, tmp_path / "corpus.jsonl")
    worker_vs_driver(corpus, split_bytes=corpus.stat().st_size // 5 + 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scifact", "wikipedia-vital-en"])
def test_worker_chunks_equal_the_driver_chunks_on_the_whole_corpus(tmp_path, name):
    corpus = sample(name, None, tmp_path / "corpus.jsonl")
    worker_vs_driver(corpus, split_bytes=4 << 20, partition_tokens=65536)


def test_rejects_keep_their_lines_and_ids_held_by_two_splits_are_found(tmp_path, scifact_docs):
    docs = scifact_docs[:24]
    lines = [json.dumps(d).encode() for d in docs[:8]]
    lines += [b'{"_id": "bad-json", "text": ', json.dumps(docs[1]).encode()]  # a duplicate in split 1
    lines += [json.dumps(d).encode() for d in docs[8:16]] + [b"", b'{"_id": "no-text"}']
    lines += [json.dumps(docs[3]).encode(), json.dumps(docs[9]).encode()]  # ids of earlier splits
    lines += [json.dumps(d).encode() for d in docs[16:]] + [b'{"_id": "empty", "text": ""}']
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    want = [r for r in read_corpus(CorpusConfig(path=corpus)) if not hasattr(r, "text")]
    result = embedlab.embed(corpus, tmp_path / "out", split_bytes=corpus.stat().st_size // 4,
                            partition_tokens=2000, **FAST)
    assert result.splits >= 4
    got = [json.loads(x) for x in (tmp_path / "out" / "_rejects.jsonl").read_text().splitlines()]
    assert [(r["file"], r["line"], r["doc_id"], r["reason"]) for r in got] == \
        [(str(corpus), r.line, r.doc_id, r.reason) for r in want]
    assert result.rejected == len(want) == 6 and result.documents == 24
    store = Store(result.out)
    assert store.verify() == []
    live = [c for t in store.iter_tables(["chunk_id"]) for c in t.column("chunk_id").to_pylist()]
    assert len(live) == len(set(live)) == result.chunks
    assert {c.rpartition("#")[0] for c in live} == {d["_id"] for d in docs}
    # a fresh run on the same files and settings writes the same bytes
    again = embedlab.embed(corpus, tmp_path / "again", split_bytes=corpus.stat().st_size // 4,
                           partition_tokens=2000, **FAST)
    assert again.partitions == result.partitions
    for e in store.manifest().partitions.values():
        assert (result.out / e.parquet).read_bytes() == (again.out / e.parquet).read_bytes()


def test_rerun_skips_committed_splits_without_reading_their_text(tmp_path, scifact_docs):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", scifact_docs[:30])
    opts = dict(split_bytes=corpus.stat().st_size // 3, partition_tokens=2500, **FAST)
    first = embedlab.embed(corpus, tmp_path / "out", **opts)
    assert first.splits >= 3 and first.partitions_encoded == first.partitions
    keys = {e.index: e.split for e in Store(first.out).manifest().partitions.values()}
    assert 3 <= len(set(keys.values())) <= first.splits and max(keys) >= 100_000  # index: split x stride
    # same size and modification time, other text: a re-run that read the text would re-encode
    st = corpus.stat()
    corpus.write_bytes(corpus.read_bytes().replace(b"the", b"THE"))
    os.utime(corpus, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = {p: p.read_bytes() for p in first.out.glob("*.parquet")}
    again = embedlab.embed(corpus, tmp_path / "out", **opts)
    assert again.partitions_skipped == first.partitions and again.partitions_encoded == 0
    assert again.documents == 30 and again.chunks == first.chunks
    assert {p: p.read_bytes() for p in first.out.glob("*.parquet")} == before
    # a changed size is another file: its splits are planned anew
    corpus.write_bytes(corpus.read_bytes() + json.dumps(scifact_docs[30]).encode() + b"\n")
    grown = embedlab.embed(corpus, tmp_path / "out", **opts)
    assert grown.documents == 31 and Store(grown.out).verify() == []
    assert set(pq.read_table(grown.out, columns=["doc_id"]).column("doc_id").to_pylist()) == \
        {d["_id"] for d in scifact_docs[:31]}


def test_parquet_row_groups_and_txt_files_are_splits(tmp_path, scifact_docs):
    import pyarrow as pa

    docs = scifact_docs[:40]
    table = pa.table({"_id": [d["_id"] for d in docs], "title": [d["title"] for d in docs],
                      "text": [d["text"] for d in docs]})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=7)
    r = embedlab.embed(tmp_path / "c.parquet", tmp_path / "o1", split_bytes=2000, **FAST)
    assert r.splits >= 3 and r.documents == 40
    txt = tmp_path / "txt"
    for d in docs[:12]:
        (txt / d["_id"][:2]).mkdir(parents=True, exist_ok=True)
        (txt / d["_id"][:2] / f"{d['_id']}.txt").write_text(d["text"])
    r = embedlab.embed(txt, tmp_path / "o2", split_bytes=3000, **FAST)
    assert r.splits >= 3 and r.documents == 12
    ids = set(pq.read_table(tmp_path / "o2", columns=["doc_id"]).column("doc_id").to_pylist())
    assert ids == {f"{d['_id'][:2]}/{d['_id']}.txt" for d in docs[:12]}
    vec = np.stack(pq.read_table(tmp_path / "o1", columns=["vector"]).column("vector").to_numpy(
        zero_copy_only=False))
    assert np.allclose(np.linalg.norm(vec, axis=1), 1, atol=1e-5)


def test_merged_runs_find_every_duplicate_across_blocks():
    from embedlab.split_embed import merged_runs
    from embedlab.split_task import ID_RUN_DTYPE

    rng = np.random.default_rng(3)
    runs = []
    for k in range(5):
        run = np.zeros(int(rng.integers(0, 300)), dtype=ID_RUN_DTYPE)
        run["h1"] = rng.integers(0, 50, size=len(run)).astype(np.uint64)  # many equal h1 across runs
        run["h2"] = rng.integers(0, 3, size=len(run)).astype(np.uint64)
        run["line"] = rng.permutation(len(run))
        runs.append(np.sort(run, order=["h1", "h2", "line"]))
    got = [(int(r["h1"]), int(r["h2"]), int(o), int(r["line"])) for rows, owners in merged_runs(runs, block=7)
           for r, o in zip(rows, owners)]
    want = sorted((int(r["h1"]), int(r["h2"]), k, int(r["line"])) for k, run in enumerate(runs) for r in run)
    assert got == want
