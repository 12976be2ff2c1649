"""Streaming mode on SciFact text with a tiny real encoder: arriving files and a growing feed."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import embedlab
from embedlab.corpus import join_title
from embedlab.incremental import live_documents
from embedlab.chunk_stream import content_sha256
from embedlab.search import Searcher
from embedlab.store import Store
from embedlab.streaming import Arrival, StreamConfig, next_batch, stream

from .conftest import write_jsonl


@pytest.fixture(scope="module", autouse=True)
def eager_encoder():
    """Latency here is about batching and commits: skip torch.compile's warm-up."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLAB_COMPILE", "0")
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from embedlab.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


def lines(docs: list[dict]) -> str:
    return "".join(json.dumps(d) + "\n" for d in docs)


def live_vectors(out: Path) -> dict[str, np.ndarray]:
    t = pa.concat_tables(Store(out).iter_tables(["chunk_id", "vector"]))
    vectors = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    return dict(zip(t.column("chunk_id").to_pylist(), vectors))


def test_next_batch_takes_what_waits_and_holds_the_rest_until_the_deadline():
    q: queue.Queue = queue.Queue()
    now = time.perf_counter()
    for i in range(5):
        q.put(Arrival(i, now))
    assert [a.record for a in next_batch(q, 3, 10.0, 0.1)] == [0, 1, 2]  # full: no waiting
    t0 = time.perf_counter()
    assert [a.record for a in next_batch(q, 3, 0.2, 0.1)] == [3, 4]
    assert 0.1 < time.perf_counter() - t0 < 1.0  # waited for a third until the first's deadline
    assert next_batch(q, 3, 0.2, 0.05) == []


@pytest.fixture(scope="module")
def streamed(tmp_path_factory, scifact_docs, tiny):
    """40 documents arrive: a file present at the start, two files renamed in later, and a file
    appended line by line (one line written in two halves), ending with a modify and a delete."""
    root = tmp_path_factory.mktemp("stream")
    watch = root / "in"
    watch.mkdir()
    docs = scifact_docs[:40]
    (watch / "a.jsonl").write_text(lines(docs[:12]))
    changed = dict(docs[2], text="A rewritten abstract about bone marrow stem cells.")

    def produce():
        for i, name in ((12, "b"), (22, "c")):
            time.sleep(0.3)
            (watch / f".{name}.part").write_text(lines(docs[i:i + 10]))
            (watch / f".{name}.part").rename(watch / f"{name}.jsonl")
        with open(watch / "d.jsonl", "w") as fh:
            for d in docs[32:40]:
                text = json.dumps(d) + "\n"
                fh.write(text[:40])
                fh.flush()
                time.sleep(0.05)  # the reader must not take half a line
                fh.write(text[40:])
                fh.flush()
            fh.write(json.dumps(changed) + "\n" + json.dumps({"op": "delete", "_id": docs[7]["_id"]}) + "\n")

    producer = threading.Thread(target=produce)
    producer.start()
    result = stream(StreamConfig(watch=watch, out=root / "out", model=tiny, max_batch=8, max_delay_ms=50,
                                 max_docs=42, poll_ms=5, dtype="fp32"))
    producer.join()
    final = [changed if d["_id"] == changed["_id"] else d for d in docs if d["_id"] != docs[7]["_id"]]
    return result, final, root


def test_stream_embeds_every_arrival_and_reports_latency(streamed):
    result, final, root = streamed
    assert (result.records, result.new, result.modified, result.deleted, result.rejected) == (42, 40, 1, 1, 0)
    assert len(result.latency_ms) == 42 and 0 < result.percentile(50) <= result.percentile(99)
    assert result.batches >= 42 / 8 and result.docs_per_second > 0 and result.chunks > 0
    store = Store(root / "out")
    assert store.verify() == []
    live = live_documents(store, store.manifest())
    assert {d: s.sha256 for d, s in live.items()} == {
        d["_id"]: content_sha256(join_title(d["title"], d["text"])) for d in final}
    summary = json.loads((root / "out" / "_stream_summary.json").read_text())
    assert summary["p99_ms"] >= summary["p50_ms"] > 0 and summary["records"] == 42
    changed = next(d for d in final if d["text"].startswith("A rewritten abstract"))
    new_text = join_title(changed["title"], changed["text"])
    searcher = Searcher(root / "out")
    [top] = searcher.search([new_text], 1)[0]  # the rewritten document's own text finds it first
    assert top.doc_id == changed["_id"] and top.score > 0.9999
    t = pa.concat_tables(Store(root / "out").iter_tables(["doc_id", "text"]))
    rows = zip(t.column("doc_id").to_pylist(), t.column("text").to_pylist())
    live = [x for d, x in rows if d == changed["_id"]]
    assert live == [new_text]  # only the rewrite is live
    import pyarrow.dataset as ds

    raw = ds.dataset(root / "out", format="parquet").to_table(columns=["doc_id", "text"])  # no reader filter
    raw_rows = list(zip(raw.column("doc_id").to_pylist(), raw.column("text").to_pylist()))
    assert [x for d, x in raw_rows if d == changed["_id"]] == [new_text]  # copy-on-write: the old
    assert {d for d, _ in raw_rows} == {d["_id"] for d in final}  # chunks and the deleted document
    assert result.rewritten >= 1  # are gone from the files


def test_streamed_store_equals_a_bulk_embed_of_the_same_documents(streamed, tiny):
    _, final, root = streamed
    bulk = embedlab.embed(write_jsonl(root / "final.jsonl", final), root / "bulk", model=tiny,
                          progress=False, dtype="fp32")
    got, want = live_vectors(root / "out"), live_vectors(bulk.out)
    assert got.keys() == want.keys()
    assert min(float(got[k] @ want[k]) for k in want) >= 0.9999


def test_stream_cli_reads_a_growing_feed_into_an_existing_store(streamed, scifact_docs, tmp_path):
    _, _, root = streamed
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    feed = tmp_path / "feed.jsonl"
    feed.write_text(lines(scifact_docs[40:45]))
    before = len(Store(out).manifest().partitions)
    proc = subprocess.Popen([sys.executable, "-m", "embedlab.cli", "stream", "--watch", str(feed),
                             "--out", str(out), "--max-docs", "8", "--max-batch", "4", "--max-delay-ms", "20",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while len(Store(out).manifest().partitions) < before + 2:  # the first 5 records are committed
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        assert Searcher(out).n_docs == 39 + 5  # searchable before the feed grows
        with open(feed, "a") as fh:  # so the feed grows after a read, never before the first one
            fh.write(lines(scifact_docs[45:48]))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["new"] == 8 and summary["p50_ms"] > 0 and summary["chunks_per_second"] > 0
    assert summary["commits"] >= 3  # 4 + 1 read first, the appended 3 in a later batch
    assert Store(out).verify() == [] and Searcher(out).n_docs == 39 + 8
