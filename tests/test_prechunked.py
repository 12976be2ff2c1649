"""Tokenize once, embed many times (`embedlab chunk`), and chunks made upstream (Parquet rows,
Dask DataFrame and Bag): the same store as from the corpus, ids kept, long chunks split or refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import embedlab
from embedlab.chunkfile import FOLDER_RECORD, file_meta, next_cut, token_arrays, tokens_column
from embedlab.partition import partition_chunks
from embedlab.store import Store

from .conftest import REPO

SIM = "sim:r_max=50000,b_half=16,dim=32"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A real (random, 1-layer, 32-wide) BERT with all-MiniLM-L6-v2's tokenizer and window of 256."""
    from embedlab.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", hidden=32, layers=1, max_len=256))


def dirty_corpus(path: Path, docs: list[dict]) -> Path:
    """``docs`` as JSONL with bad records and an id held twice (the copy in a later split)."""
    lines = [json.dumps(d) for d in docs]
    lines.insert(5, '{"_id": "bad-json", "text": ')
    lines.insert(9, '{"_id": "no-text"}')
    lines.append(json.dumps({**docs[2], "text": "a later copy of an earlier id"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def same_stores(a: Path, b: Path) -> int:
    """Assert two stores hold the same partitions, byte for byte; return how many."""
    ma, mb = Store(a).manifest(), Store(b).manifest()
    assert sorted(ma.partitions) == sorted(mb.partitions)
    for k, ea in ma.partitions.items():
        eb = mb.partitions[k]
        assert (ea.digest, ea.rows, ea.tokens, ea.tombstones) == (eb.digest, eb.rows, eb.tokens, eb.tombstones)
        assert (a / ea.parquet).read_bytes() == (b / eb.parquet).read_bytes()
        assert (a / ea.faiss).read_bytes() == (b / eb.faiss).read_bytes()
    return len(ma.partitions)


def test_a_store_from_chunks_equals_the_store_from_the_corpus(tmp_path, scifact_docs, tiny):
    corpus = dirty_corpus(tmp_path / "corpus.jsonl", scifact_docs[:300])
    opts = dict(model=tiny, progress=False, split_bytes=corpus.stat().st_size // 4 + 1, partition_tokens=6000)
    raw = embedlab.embed(corpus, tmp_path / "raw", **opts)
    made = embedlab.chunk(corpus, tmp_path / "chunks", **opts)
    assert raw.splits == made.splits >= 4
    # the files keep the rows of the later copy of an id (embed tombstones them, as from the corpus)
    assert (made.documents, made.tokens, made.rejected) == (raw.documents, raw.tokens, raw.rejected) == \
        (raw.documents, sum(len(x) for x in read_tokens(tmp_path / "chunks")), 3)
    m = Store(raw.out).manifest()
    assert made.chunks == m.rows == raw.chunks + sum(len(e.tombstones) for e in m.partitions.values()) > raw.chunks
    meta = file_meta(tmp_path / "chunks" / "chunks-00000.parquet")
    assert meta["token_dtype"] == "<u2" and meta["chunk_tokens"] == 256 and meta["overlap"] == 32
    assert len(meta["tokenizer_sha256"]) == 64
    got = embedlab.embed(tmp_path / "chunks", tmp_path / "from-chunks", **opts)
    assert got.corpus_format == "chunks" and got.splits == raw.splits
    assert same_stores(raw.out, got.out) == raw.partitions >= 8
    assert (got.documents, got.chunks, got.tokens, got.rejected) == (raw.documents, raw.chunks, raw.tokens, 3)
    want = [json.loads(x) for x in (raw.out / "_rejects.jsonl").read_text().splitlines()]
    have = [json.loads(x) for x in (got.out / "_rejects.jsonl").read_text().splitlines()]
    assert [r for r in have if "duplicate" not in r["reason"]] == [r for r in want if "duplicate" not in r["reason"]]
    # the copy of an id an earlier split holds: rejected, its rows tombstoned (found at its chunk-file row)
    [dup] = [r for r in have if "duplicate" in r["reason"]]
    assert dup["doc_id"] == scifact_docs[2]["_id"] and "chunks-00000.parquet" in dup["reason"]
    chunked = [json.loads(x) for x in (tmp_path / "chunks" / "_rejects.jsonl").read_text().splitlines()]
    assert chunked == want  # the chunk run reports what embed reports, at the corpus's lines
    ids, x = embedlab.open_store(got.out).vectors()
    ids_raw, x_raw = embedlab.open_store(raw.out).vectors()
    assert ids == ids_raw and x.tobytes() == x_raw.tobytes()
    # a re-run of the chunk job reads no text and rewrites nothing
    before = {p.name: p.read_bytes() for p in (tmp_path / "chunks").glob("chunks-*.parquet")}
    again = embedlab.chunk(corpus, tmp_path / "chunks", **opts)
    assert again.splits_skipped == again.splits and again.rejected == 3
    assert {p.name: p.read_bytes() for p in (tmp_path / "chunks").glob("chunks-*.parquet")} == before
    # a run cut short (a split's file missing, the folder not marked complete) redoes only that split
    (tmp_path / "chunks" / "chunks-00002.parquet").unlink()
    resumed = embedlab.chunk(corpus, tmp_path / "chunks", **opts)
    assert resumed.splits_skipped == resumed.splits - 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "chunks").glob("chunks-*.parquet")} == before


def read_tokens(folder: Path) -> list[np.ndarray]:
    out = []
    for p in sorted(folder.glob("chunks-*.parquet")):
        ids, off = token_arrays(pq.read_table(p).column("tokens"), np.dtype("<u2"))
        out += [ids[a:b] for a, b in zip(off[:-1], off[1:])]
    return out


def test_a_model_with_another_tokenizer_or_a_shorter_window_is_refused(tmp_path, scifact_docs, tiny):
    from embedlab.testing import make_tiny_model

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in scifact_docs[:20]))
    embedlab.chunk(corpus, tmp_path / "chunks", model=tiny, progress=False)
    other = make_tiny_model(tmp_path / "other", hidden=32, layers=1, max_len=256)
    spec = json.loads((other / "tokenizer.json").read_text())
    spec["normalizer"]["lowercase"] = False  # the same vocabulary, other ids for "The"
    (other / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="another tokenizer"):
        embedlab.embed(tmp_path / "chunks", tmp_path / "o1", model=str(other), progress=False)
    short = make_tiny_model(tmp_path / "short", hidden=32, layers=1, max_len=128)
    with pytest.raises(ValueError, match="reads at most 128"):
        embedlab.embed(tmp_path / "chunks", tmp_path / "o2", model=str(short), progress=False)
    with pytest.raises(ValueError, match="other settings: chunk_tokens=128"):
        embedlab.embed(tmp_path / "chunks", tmp_path / "o3", model=tiny, chunk_tokens=128, progress=False)
    # the simulated device chunks with all-MiniLM-L6-v2's tokenizer: the same ids, accepted
    r = embedlab.embed(tmp_path / "chunks", tmp_path / "o4", model=SIM, progress=False)
    assert r.documents == 20 and not list((tmp_path / "o1").glob("*.parquet"))
    # a sweep samples the folder's token ids: the same chunks as from the corpus, no tokenizer run
    from embedlab.encoder import fast_tokenizer
    from embedlab.experiments.sweeps import SweepConfig, sample_chunks

    tok = fast_tokenizer(tiny)
    got = sample_chunks(SweepConfig(corpus=tmp_path / "chunks", docs=12, chunks=9), tok, 256)
    want = sample_chunks(SweepConfig(corpus=corpus, docs=12, chunks=9), tok, 256)
    assert len(got) == 9 and [x.tolist() for x in got] == [x.tolist() for x in want]
    with pytest.raises(ValueError, match="does not share"):
        sample_chunks(SweepConfig(corpus=tmp_path / "chunks", docs=12, chunks=9), fast_tokenizer(str(other)), 256)
    # a folder whose chunk run did not finish is refused
    record = json.loads((tmp_path / "chunks" / FOLDER_RECORD).read_text())
    (tmp_path / "chunks" / FOLDER_RECORD).write_text(json.dumps({**record, "complete": False}))
    with pytest.raises(ValueError, match="has not finished"):
        embedlab.embed(tmp_path / "chunks", tmp_path / "o5", model=SIM, progress=False)


def upstream_rows(docs: list[dict]) -> list[dict]:
    """Chunks an upstream job made: runs of three sentences, a long one, a repeated id, an empty text."""
    rows = []
    for d in docs:
        parts = [p for p in d["text"].split(". ") if p]
        rows += [{"cid": f"{d['_id']}-p{i}", "doc": d["_id"], "body": ". ".join(parts[i:i + 3])}
                 for i in range(0, len(parts), 3)]
    rows.append({"cid": "long-1", "doc": "L", "body": " ".join(d["text"] for d in docs[:3])})
    rows.append({"cid": rows[0]["cid"], "doc": "dup", "body": "a second row with an id already used"})
    rows.append({"cid": "empty", "doc": "E", "body": ""})
    return rows


def test_prechunked_parquet_keeps_ids_and_splits_or_refuses_long_chunks(tmp_path, scifact_docs):
    rows = upstream_rows(scifact_docs[:60])
    table = pa.Table.from_pylist(rows)
    (tmp_path / "pre").mkdir()
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), tmp_path / "pre" / "a.parquet", row_group_size=40)
    pq.write_table(table.slice(half), tmp_path / "pre" / "b.parquet", row_group_size=40)
    opts = dict(model=SIM, progress=False, format="prechunked", id_field="cid", text_field="body", doc_field="doc",
                split_bytes=3000)
    split = embedlab.embed(tmp_path / "pre", tmp_path / "split", **opts)
    refused = embedlab.embed(tmp_path / "pre", tmp_path / "refuse", long_chunks="refuse", **opts)
    assert split.splits >= 4
    n_long = split.long_chunks["long_chunks_split"]
    assert n_long >= 1 and refused.long_chunks["long_chunks_refused"] == n_long
    assert split.long_chunks["long_chunk_windows"] > n_long and split.chunks == len(rows) - 2 - n_long + \
        split.long_chunks["long_chunk_windows"]
    good = {r["cid"] for r in rows[:-2]}  # the repeated id and the empty text are rejected
    ids = store_ids(split.out)
    whole = good & set(ids)
    cut = {c.rpartition("#")[0] for c in ids if c not in whole}
    assert whole | cut == good and not whole & cut and len(cut) == n_long and "long-1" in cut
    df = embedlab.open_store(split.out).to_pandas().set_index("chunk_id")
    assert df.loc["long-1#0", "doc_id"] == "L" and list(df.loc[[f"long-1#{k}" for k in range(5)], "chunk_index"]) == \
        list(range(5))
    first = rows[0]
    assert df.loc[first["cid"], "doc_id"] == first["doc"] and df.loc[first["cid"], "text"] == first["body"]
    assert (df["n_tokens"] <= 256).all()
    rejects = [json.loads(x) for x in (split.out / "_rejects.jsonl").read_text().splitlines()]
    assert [(r["doc_id"], r["reason"].split(" (")[0]) for r in rejects] == \
        [(first["cid"], f"duplicate chunk id {first['cid']!r}"), ("empty", "empty text")]
    assert rejects[0]["reason"].endswith(f"(first seen at {tmp_path / 'pre' / 'a.parquet'}:1)")
    refusals = [json.loads(x) for x in (refused.out / "_rejects.jsonl").read_text().splitlines()]
    assert sum("longer than the window of 256 tokens" in r["reason"] for r in refusals) == n_long
    assert refused.chunks == len(rows) - 2 - n_long and "long-1" not in store_ids(refused.out)
    assert "refused" in refused.summary() and "cut into" in split.summary()


def store_ids(out: Path) -> list[str]:
    return embedlab.open_store(out).to_arrow(["chunk_id"]).column("chunk_id").to_pylist()


def test_a_dask_dataframe_or_bag_of_chunks_is_embedded_partition_by_partition(tmp_path, scifact_docs):
    import dask.bag as db
    import dask.dataframe as dd
    import pandas as pd

    rows = upstream_rows(scifact_docs[:40])[:-3]
    ddf = dd.from_pandas(pd.DataFrame(rows), npartitions=3)
    opts = dict(model=SIM, progress=False, id_field="cid", text_field="body", doc_field="doc")
    r = embedlab.embed(ddf, tmp_path / "ddf", **opts)
    assert r.splits == 3 and r.corpus_format == "prechunked" and r.rejected == 0
    assert max(e.index for e in Store(r.out).manifest().partitions.values()) >= 200_000  # a split per partition
    df = embedlab.open_store(r.out).to_pandas()
    assert set(df["doc_id"]) == {row["doc"] for row in rows}
    assert {c if c in set(r["cid"] for r in rows) else c.rpartition("#")[0] for c in df["chunk_id"]} == \
        {r["cid"] for r in rows}
    again = embedlab.embed(ddf, tmp_path / "ddf", **opts)
    assert again.partitions_encoded == 0 and again.partitions_skipped == r.partitions
    bag = db.from_sequence([{k: v for k, v in row.items() if k != "doc"} for row in rows], npartitions=2)
    b = embedlab.embed(bag, tmp_path / "bag", model=SIM, progress=False, id_field="cid", text_field="body")
    assert b.splits == bag.npartitions >= 2 and b.chunks == r.chunks
    ids, x = embedlab.open_store(b.out).vectors()
    ids2, x2 = embedlab.open_store(r.out).vectors()
    order = np.argsort(ids2)
    assert sorted(ids) == [ids2[i] for i in order] and np.array_equal(x[np.argsort(ids)], x2[order])


def test_chunk_and_embed_prechunked_from_the_command_line(tmp_path, scifact_docs):
    rows = upstream_rows(scifact_docs[:15])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    cmd = [sys.executable, "-m", "embedlab.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run(cmd + ["embed", str(tmp_path / "rows.parquet"), "--out", str(tmp_path / "o"), "--prechunked",
                              "--id-column", "cid", "--text-column", "body", "--long-chunks", "refuse", "--model", SIM,
                              "--no-progress", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 3, p.stderr  # records were rejected: the long one, the repeated id, the empty text
    out = json.loads(p.stdout)
    assert out["long_chunks"]["long_chunks_refused"] >= 1 and out["rejected"] == 2 + out["long_chunks"]["long_chunks_refused"]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in scifact_docs[:15]))
    p = subprocess.run(cmd + ["chunk", str(corpus), "--out", str(tmp_path / "ch"), "--model", SIM, "--no-progress"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and "15" in p.stdout and "uint16" in p.stdout, p.stderr
    p = subprocess.run(cmd + ["embed", str(tmp_path / "ch"), "--out", str(tmp_path / "o2"), "--model", SIM,
                              "--no-progress", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and json.loads(p.stdout)["corpus_format"] == "chunks", p.stderr


def test_next_cut_cuts_as_partition_chunks_does():
    from embedlab.chunking import Chunk

    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(1, 40))
        lengths = rng.integers(1, 50, size=n)
        starts = rng.random(n) < 0.4
        starts[0] = True
        doc = np.cumsum(starts)
        budget = int(rng.integers(1, 300))
        chunks = [Chunk(f"{d}#{i}", str(d), 0, 0, 0, "", np.zeros(k, np.int32)) for i, (d, k) in
                  enumerate(zip(doc.tolist(), lengths.tolist()))]
        want = [p.n_chunks for p in partition_chunks(chunks, budget)]
        got, at = [], 0
        while at < n:
            cut = next_cut(lengths[at:], starts[at:], budget)
            got.append(n - at if cut is None else cut)
            at += got[-1]
        assert got == want, (trial, lengths, starts, budget)


@pytest.mark.parametrize("dtype", ["<u2", "<u4"])
def test_token_ids_round_trip_through_parquet(tmp_path, dtype):
    rng = np.random.default_rng(0)
    hi = 30522 if dtype == "<u2" else 250_002
    lengths = rng.integers(0, 20, size=50)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(0, hi, size=int(offsets[-1])).astype(np.int32)
    pq.write_table(pa.table({"tokens": tokens_column(ids, offsets, np.dtype(dtype))}), tmp_path / "t.parquet",
                   row_group_size=7)
    col = pq.read_table(tmp_path / "t.parquet").column("tokens")
    got, off = token_arrays(col.slice(3), np.dtype(dtype))
    assert np.array_equal(off, offsets[3:] - offsets[3]) and np.array_equal(got, ids[offsets[3]:])
    with pytest.raises(ValueError, match="out of range"):
        tokens_column(np.array([70000], np.int32), np.array([0, 1]), np.dtype("<u2"))
