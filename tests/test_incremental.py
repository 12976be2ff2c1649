"""Incremental updates on SciFact subsets with the real model: change detection, upsert and
tombstones, equivalence with a fresh embed, compaction, and crashes mid-update."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import embedlab
from embedlab.corpus import join_title
from embedlab.incremental import UpdateConfig, compact, live_documents, update
from embedlab.chunk_stream import content_sha256
from embedlab.search import Searcher
from embedlab.commitlog import LogError
from embedlab.store import Store, StoreError, sha256_file

from .conftest import claim_holder, write_jsonl

EMBEDLAB = [sys.executable, "-m", "embedlab.cli"]
FAST = dict(partition_tokens=2000, progress=False, dtype="fp32")
QUERIES = ["vitamin D deficiency and bone health", "stem cells in the bone marrow",
           "antibiotic resistance in bacteria", "DNA methylation in cancer", "insulin and diabetes"]


@pytest.fixture(scope="module", autouse=True)
def eager_encoder():
    """These tests are about the store, not encoder speed: skip torch.compile's warm-up."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLAB_COMPILE", "0")
        yield


def revise(doc: dict, note: str = " Revised in the second snapshot.") -> dict:
    return dict(doc, text=doc["text"] + note)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, scifact_docs):
    """v1: 40 documents. v2: 3 deleted, 3 modified (longer, shorter, new title), 6 new, 34 unchanged."""
    root = tmp_path_factory.mktemp("corpora")
    v1 = scifact_docs[:40]
    deleted = {v1[i]["_id"] for i in (3, 17, 33)}
    modified = {v1[5]["_id"]: revise(v1[5]),
                v1[22]["_id"]: dict(v1[22], text=v1[22]["text"][:200]),
                v1[30]["_id"]: dict(v1[30], title="A new title")}
    new = scifact_docs[40:46]
    v2 = [modified.get(d["_id"], d) for d in v1 if d["_id"] not in deleted] + new
    feed = ([{"op": "delete", "_id": i} for i in sorted(deleted)]
            + [{"op": "upsert", **d} for d in modified.values()]
            + [{"op": "upsert", **d} for d in new]
            + [{"op": "upsert", **v1[0]},  # unchanged
               {"op": "delete", "_id": "no-such-doc"}])
    return {"root": root, "v1": write_jsonl(root / "v1.jsonl", v1), "v2": write_jsonl(root / "v2.jsonl", v2),
            "feed": write_jsonl(root / "feed.jsonl", feed), "v2_docs": v2}


@pytest.fixture(scope="module")
def v1_store(corpora):
    return embedlab.embed(corpora["v1"], corpora["root"] / "v1-store", **FAST).out


@pytest.fixture(scope="module")
def fresh_v2(corpora):
    return embedlab.embed(corpora["v2"], corpora["root"] / "fresh-v2", **FAST).out


@pytest.fixture(scope="module")
def updated(corpora, v1_store):
    out = corpora["root"] / "updated"
    shutil.copytree(v1_store, out)
    return out, update(UpdateConfig(source=corpora["v2"], out=out, progress=False))


@pytest.fixture(scope="module")
def tombstoned(corpora, v1_store):
    """The same update with --tombstones: removed rows stay in their files, marked in the manifest."""
    out = corpora["root"] / "tombstoned"
    shutil.copytree(v1_store, out)
    return out, update(UpdateConfig(source=corpora["v2"], out=out, copy_on_write=False, progress=False))


def live_rows(out: Path) -> dict[str, tuple]:
    """chunk id -> (vector, text, doc_id, char_start, char_end) of every live row."""
    t = pa.concat_tables(Store(out).iter_tables(
        ["chunk_id", "vector", "text", "doc_id", "char_start", "char_end"]))
    vecs = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    cols = [t.column(c).to_pylist() for c in ("text", "doc_id", "char_start", "char_end")]
    return {cid: (vecs[i], *(c[i] for c in cols)) for i, cid in enumerate(t.column("chunk_id").to_pylist())}


def committed(out: Path) -> dict[str, bytes]:
    """The committed manifest and every partition file: what readers see."""
    keep = [*out.glob("*.parquet"), *(out / "_faiss").glob("*.faiss")]
    return {"manifest": json.dumps(Store(out).manifest().to_json()).encode(),
            **{p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(keep)}}


def hashes_of(docs: list[dict]) -> dict[str, str]:
    return {d["_id"]: content_sha256(join_title(d.get("title"), d["text"])) for d in docs}


def live_hashes(out: Path) -> dict[str, str]:
    store = Store(out)
    return {d: s.sha256 for d, s in live_documents(store, store.manifest()).items()}


def test_update_classifies_and_reembeds_only_the_delta(updated, v1_store, fresh_v2, corpora):
    out, r = updated
    c = r.counts
    assert (c.new, c.modified, c.deleted, c.unchanged, c.absent) == (6, 3, 3, 34, 0)
    assert r.ok and r.committed and Store(out).verify() == []
    v1_hashes, v2_hashes = live_hashes(v1_store), hashes_of(corpora["v2_docs"])
    embedded = {d for d, h in v2_hashes.items() if v1_hashes.get(d) != h}  # new and modified
    replaced = {d for d, h in v1_hashes.items() if v2_hashes.get(d) != h}  # modified and deleted
    fresh = live_rows(fresh_v2)
    want_embedded = sum(1 for row in fresh.values() if row[2] in embedded)
    assert r.chunks_embedded == want_embedded < r.chunks_total == len(fresh)
    assert r.chunks_tombstoned == sum(1 for row in live_rows(v1_store).values() if row[2] in replaced)
    summary = json.loads((out / "_update_summary.json").read_text())
    assert summary["reembedded_fraction"] == pytest.approx(want_embedded / len(fresh))
    assert summary["counts"]["new"] == 6


def test_update_equals_a_fresh_embed_of_the_new_snapshot(updated, fresh_v2, v1_store, corpora):
    """Equal to a fresh embed through the store's readers and through the raw Parquet dataset."""
    out, _ = updated
    got, want = live_rows(out), live_rows(fresh_v2)
    assert got.keys() == want.keys()
    assert all(got[k][1:] == want[k][1:] for k in want)  # text, doc id, spans
    cos = np.array([float(got[k][0] @ want[k][0]) for k in want])
    assert cos.min() >= 0.9999
    assert live_hashes(out) == hashes_of(corpora["v2_docs"])
    a, b = Searcher(out), Searcher(fresh_v2)
    assert (a.n_chunks, a.n_docs) == (b.n_chunks, b.n_docs)
    assert [[h.chunk_id for h in hs] for hs in a.search(QUERIES, 10)] == \
           [[h.chunk_id for h in hs] for hs in b.search(QUERIES, 10)]
    assert [[h.doc_id for h in hs] for hs in a.search_documents(QUERIES, 10)] == \
           [[h.doc_id for h in hs] for hs in b.search_documents(QUERIES, 10)]
    gone = live_hashes(v1_store).keys() - {d["_id"] for d in corpora["v2_docs"]}
    assert len(gone) == 3
    import pyarrow.dataset as ds

    raw = ds.dataset(out, format="parquet").to_table(columns=["chunk_id", "doc_id"])  # no reader filter
    assert sorted(raw.column("chunk_id").to_pylist()) == sorted(want)  # copy-on-write: removed rows are gone
    assert not gone & set(raw.column("doc_id").to_pylist())
    assert not any(e.tombstones for e in Store(out).manifest().partitions.values())
    rewritten = [e for e in Store(out).manifest().partitions.values() if e.generation]
    assert updated[1].partitions_rewritten == len(rewritten) >= 1
    assert sorted(p.name for p in out.glob("*.parquet")) == [f"part-{k:05d}.parquet" for k in
                                                            sorted(Store(out).manifest().partitions)]
    hits = a.search_documents(QUERIES, a.n_docs)
    assert not gone & {h.doc_id for hs in hits for h in hs}  # deleted documents never come back


def test_change_feed_with_compaction_gives_the_same_store(updated, v1_store, corpora, tmp_path):
    out = tmp_path / "fed"
    shutil.copytree(v1_store, out)
    r = update(UpdateConfig(source=corpora["feed"], out=out, feed=True, compact=True, progress=False))
    c = r.counts
    assert (c.new, c.modified, c.deleted, c.unchanged, c.absent) == (6, 3, 3, 1, 1)
    assert r.partitions_compacted >= 1 and Store(out).verify() == []
    got, want = live_rows(out), live_rows(updated[0])
    assert got.keys() == want.keys()
    assert min(float(got[k][0] @ want[k][0]) for k in want) >= 0.9999
    raw = pq.read_table(out, columns=["chunk_id"]).column("chunk_id").to_pylist()  # compacted in the commit
    assert sorted(raw) == sorted(want)


def test_a_second_identical_update_changes_nothing(updated, corpora):
    out, _ = updated
    before = committed(out)
    r = update(UpdateConfig(source=corpora["v2"], out=out, progress=False))
    assert not r.committed and r.chunks_embedded == 0 and r.counts.unchanged == 43
    assert committed(out) == before


def test_compact_drops_tombstoned_rows_and_keeps_every_result(tombstoned, fresh_v2, tmp_path):
    out = tmp_path / "compacted"
    shutil.copytree(tombstoned[0], out)
    raw = pq.read_table(out, columns=["chunk_id"]).column("chunk_id").to_pylist()
    assert len(raw) == len(live_rows(fresh_v2)) + tombstoned[1].chunks_tombstoned  # still in the files
    assert tombstoned[1].partitions_rewritten == 0 and live_rows(out).keys() == live_rows(fresh_v2).keys()
    before = Searcher(out).search(QUERIES, 10)
    r = compact(out)
    assert r.partitions_compacted >= 1 and r.rows_dropped == tombstoned[1].chunks_tombstoned
    store = Store(out)
    assert store.verify() == [] and not any(e.tombstones for e in store.manifest().partitions.values())
    raw = pq.read_table(out, columns=["chunk_id"]).column("chunk_id").to_pylist()  # no reader filter
    assert sorted(raw) == sorted(live_rows(fresh_v2))
    assert any(e.generation == 1 for e in store.manifest().partitions.values())  # under its live name
    assert len(list(out.glob("*.parquet"))) == len(store.manifest().partitions)
    assert [[h.chunk_id for h in hs] for hs in Searcher(out).search(QUERIES, 10)] == \
           [[h.chunk_id for h in hs] for hs in before]
    assert compact(out).partitions_compacted == 0


@pytest.mark.parametrize("phase", ["before-commit", "after-commit"])
def test_sigkill_mid_update_before_or_after_the_commit(v1_store, scifact_docs, encoder, tmp_path, phase):
    v1 = scifact_docs[:40]
    v2 = [revise(d, " (revised)") if i % 3 == 0 else d for i, d in enumerate(v1)]  # 14 modified
    corpus = write_jsonl(tmp_path / "v2.jsonl", v2)
    out = tmp_path / "out"
    shutil.copytree(v1_store, out)
    before = committed(out)
    manifest = before["manifest"]
    proc = subprocess.Popen([*EMBEDLAB, "update", str(corpus), "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        if phase == "before-commit":  # the first partition is staged; the others are still encoding
            wait_for_staged(out, proc)
        else:  # the manifest was just replaced: the commit happened, its clean-up may not have
            # the manifest alone: the commit deletes the rewritten partitions' old generations
            wait_for(lambda: json.dumps(Store(out).manifest().to_json()).encode() != manifest, proc, poll=0.002)
        stop_group(proc)
        proc.wait(timeout=60)
    finally:
        stop_group(proc)
    if phase == "before-commit":  # exactly v1, and readers still work
        assert committed(out) == before
        assert Store(out).verify() == [] and Searcher(out).n_docs == 40
    else:  # exactly v2
        assert live_hashes(out) == hashes_of(v2)
    r = update(UpdateConfig(source=corpus, out=out, progress=False))
    if phase == "before-commit":
        assert r.committed and r.partitions_resumed >= 1  # staged partitions were not re-encoded
    else:
        assert not r.committed and r.chunks_embedded == 0  # nothing left to do
    assert Store(out).verify() == [] and live_hashes(out) == hashes_of(v2)
    assert not (out / "_staging").exists()
    rows = live_rows(out)
    revised = [k for k, row in rows.items() if row[1].endswith("(revised)")]
    assert len(revised) == 14
    direct = encoder.encode_texts([rows[k][1] for k in revised])
    assert (np.stack([rows[k][0] for k in revised]) * direct).sum(1).min() >= 0.9999


def test_crash_at_the_commit_point_rolls_back_and_the_rerun_completes(updated, v1_store, corpora,
                                                                      tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(v1_store, out)
    before = committed(out)
    real = Store.write_manifest

    def crash(self, manifest, **kw):
        if self.root == out:  # the store's own manifest (not the staging journal): the commit
            raise SystemExit("power cut")
        real(self, manifest, **kw)

    monkeypatch.setattr(Store, "write_manifest", crash)
    with pytest.raises(SystemExit):
        update(UpdateConfig(source=corpora["v2"], out=out, progress=False))
    monkeypatch.setattr(Store, "write_manifest", real)
    assert committed(out) == before  # nothing is moved in before the commit record
    assert Store(out).verify() == [] and list((out / "_staging").glob("*.parquet.staged"))
    r = update(UpdateConfig(source=corpora["v2"], out=out, progress=False))
    assert r.partitions_resumed == r.partitions_added >= 1  # still staged, reused
    assert r.embed == {}  # nothing left to encode: no cluster was started
    assert committed(out) == committed(updated[0])  # byte for byte what an uninterrupted update wrote


def test_verify_understands_tombstones(tombstoned, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tombstoned[0], out)
    store = Store(out)
    m = store.manifest()
    live = live_rows(out)
    k = next(k for k, e in m.partitions.items() if set(e.tombstones) & live.keys())
    m.partitions[k].tombstones = []  # a modified document's old chunks come back to life
    store.write_manifest(m)
    assert any("live in two partitions" in p for p in store.verify())
    m.partitions[k].tombstones = ["never-existed#0"]
    store.write_manifest(m)
    assert any("tombstones chunk(s) it does not hold" in p for p in store.verify())


def test_a_store_without_document_hashes_is_refused(v1_store, corpora, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(v1_store, out)
    store = Store(out)
    path = store.parquet_path(0)
    pq.write_table(pq.read_table(path).drop_columns(["doc_sha256"]), path)
    m = store.manifest()
    m.partitions[0].parquet_sha256 = sha256_file(path)
    store.write_manifest(m)
    with pytest.raises(StoreError, match="no doc_sha256 column"):
        update(UpdateConfig(source=corpora["v2"], out=out, progress=False))


def test_update_cli_reports_the_cost(updated, corpora):
    proc = subprocess.run([*EMBEDLAB, "update", str(corpora["v2"]), "--out", str(updated[0]), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["chunks_embedded"] == 0 and summary["chunks_total"] == updated[1].chunks_total
    proc = subprocess.run([*EMBEDLAB, "update", str(corpora["v2"]), "--out", str(corpora["root"] / "nope")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "not an embedlab store" in proc.stderr and "Traceback" not in proc.stderr


def wait_for(done, proc: subprocess.Popen, timeout: float = 300, poll: float = 0.02) -> None:
    end = time.time() + timeout
    while not done():
        assert proc.poll() is None, f"the process ended first: {proc.communicate()}"
        assert time.time() < end, "timed out"
        time.sleep(poll)


def wait_for_staged(out: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    journal = out / "_staging" / "_manifest.json"
    end = time.time() + timeout
    while time.time() < end:
        if journal.is_file():
            try:
                if json.loads(journal.read_text())["partitions"]:
                    return
            except (json.JSONDecodeError, KeyError):
                pass
        assert proc.poll() is None, f"update ended early: {proc.communicate()}"
        time.sleep(0.02)
    raise TimeoutError("no partition was staged")


def stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_one_writer_at_a_time(updated, corpora):
    out, _ = updated
    with claim_holder(out) as holder:
        with pytest.raises(LogError, match=f"being written by pid {holder.pid} on"):
            update(UpdateConfig(source=corpora["v2"], out=out, progress=False))
        with pytest.raises(LogError, match=f"being written by pid {holder.pid} on"):
            compact(out)
    assert Store(out).verify() == []
