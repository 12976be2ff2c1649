"""Roll-forward commits SIGKILLed at each step, for `update` and for `stream`.

The writer kills itself with SIGKILL at a named step of its commit (``EMBEDLAB_CRASH_AT``, read by
:func:`embedlab.rollforward.crash_point`): after staging, after the commit record, after the
N-th rename, after the last. At each step a raw ``pyarrow.dataset`` (and pandas, and Dask) read of
the store folder must list every partition at exactly one generation (no chunk id twice, a
removed row only in a partition whose rename had not happened yet), and the next opener through
embedlab must roll the store forward to what a fresh embed of the new corpus gives.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import embedlab
from embedlab.chunk_stream import content_sha256
from embedlab.config import ClusterConfig
from embedlab.corpus import join_title
from embedlab.feed import FeedPosition
from embedlab.incremental import UpdateConfig, update
from embedlab.rollforward import CRASH_ENV, INTENT
from embedlab.search import Searcher
from embedlab.store import Store
from embedlab.streaming import StreamConfig, stream
from embedlab.transaction import live_documents

from ..conftest import write_jsonl

EMBEDLAB = [sys.executable, "-m", "embedlab.cli"]
FAST = dict(partition_tokens=1500, progress=False, dtype="fp32")
QUERIES = ["vitamin D deficiency", "stem cells in the bone marrow", "DNA methylation in cancer"]


def doc_hash(d: dict) -> str:
    return content_sha256(join_title(d.get("title"), d["text"]))


def raw_view(out: Path) -> dict[str, list[tuple[str, str]]]:
    """What a raw reader lists: per Parquet file pyarrow discovers in ``out``, its (chunk id,
    doc_sha256) rows. pandas and Dask over the folder must read the same rows."""
    files = ds.dataset(out, format="parquet").files
    view = {Path(f).name: list(zip(*(pq.read_table(f, columns=["chunk_id", "doc_sha256"]).column(c).to_pylist()
                                     for c in ("chunk_id", "doc_sha256")))) for f in files}
    rows = sorted(r for v in view.values() for r in v)
    import dask.dataframe as dd
    import pandas as pd

    for frame in (pd.read_parquet(out, columns=["chunk_id", "doc_sha256"]),
                  dd.read_parquet(str(out), columns=["chunk_id", "doc_sha256"]).compute()):
        assert sorted(zip(frame["chunk_id"], frame["doc_sha256"])) == rows
    return view


def check_one_generation(seen: dict, old: dict, new: dict, moves: list[tuple[str, str]], step: str,
                         live_hashes: set[str]) -> None:
    """Each file a raw reader saw holds its partition's old generation or its new one, no chunk id is
    listed twice, and a removed row (its document's hash is not live any more) shows only in a
    partition whose rename had not happened at ``step``."""
    ids = [c for rows in seen.values() for c, _ in rows]
    assert len(ids) == len(set(ids)), f"{step}: a chunk id listed twice"
    assert set(seen) <= set(old) | set(new)
    for name, rows in seen.items():
        assert rows in (old.get(name), new.get(name)), f"{step}: {name} is neither generation"
    done = len(moves) if step == "moved" else int(step.split("-")[1]) if step.startswith("moved-") else 0
    moved = {Path(dst).name for _, dst in moves[:done]}
    for name, rows in seen.items():
        if any(h not in live_hashes for _, h in rows):
            assert name not in moved and rows == old[name], f"{step}: {name} lists a removed row"
    if step in ("staged", "committed"):
        assert seen == old
    if step == "moved":
        assert seen == new


def committed_moves(out: Path) -> list[tuple[str, str]]:
    """The moves the last commit record names (read from the log alone: no roll-forward)."""
    return [tuple(m) for m in (Store(out).log.snapshot().meta.get(INTENT) or {}).get("moves", [])]


def live_vectors(out: Path) -> dict[str, np.ndarray]:
    t = pa.concat_tables(Store(out).iter_tables(["chunk_id", "vector"]))
    return dict(zip(t.column("chunk_id").to_pylist(), np.stack(t.column("vector").to_numpy(zero_copy_only=False))))


def assert_equal_stores(out: Path, fresh: Path) -> None:
    """``out`` holds what the fresh embed ``fresh`` holds, through embedlab and through the raw files."""
    got, want = live_vectors(out), live_vectors(fresh)
    assert got.keys() == want.keys()
    assert min(float(got[k] @ want[k]) for k in want) >= 0.9999
    raw = ds.dataset(out, format="parquet").to_table(columns=["chunk_id"]).column("chunk_id").to_pylist()
    assert sorted(raw) == sorted(want)  # no removed row, none twice
    assert Store(out).verify() == []  # deep: sha256s, sizes, FAISS ids = chunk ids, none live twice


def killed_at(step: str, cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, CRASH_ENV: step})
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    return proc


# -- update ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def versions(tmp_path_factory, scifact_docs, tiny_model, scheduler):
    """v1: 30 documents in several partitions. v2: 3 deleted and 2 modified (in different
    partitions), 3 new. Both embedded from scratch."""
    root = tmp_path_factory.mktemp("rollforward")
    v1 = scifact_docs[:30]
    gone = {v1[i]["_id"] for i in (2, 14, 26)}
    changed = {v1[8]["_id"]: dict(v1[8], text=v1[8]["text"] + " Revised."),
               v1[20]["_id"]: dict(v1[20], text=v1[20]["text"][:150])}
    v2 = [changed.get(d["_id"], d) for d in v1 if d["_id"] not in gone] + scifact_docs[30:33]
    opts = dict(model=str(tiny_model), scheduler=scheduler, **FAST)
    v1_out = embedlab.embed(write_jsonl(root / "v1.jsonl", v1), root / "v1", **opts).out
    fresh = embedlab.embed(write_jsonl(root / "v2.jsonl", v2), root / "fresh", **opts).out
    assert len(Store(v1_out).manifest().partitions) >= 4
    return {"v1": v1_out, "fresh": fresh, "v2": root / "v2.jsonl", "hashes": {doc_hash(d) for d in v2}}


@pytest.mark.parametrize("step,opener", [("staged", "searcher"), ("committed", "verify-cli"),
                                         ("moved-1", "searcher"), ("moved-3", "update"), ("moved", "verify")])
def test_update_killed_at_each_step_of_its_commit(versions, tmp_path, scheduler, step, opener):
    out = tmp_path / "out"
    shutil.copytree(versions["v1"], out)
    old = raw_view(out)
    killed_at(step, [*EMBEDLAB, "update", str(versions["v2"]), "--out", str(out), "--no-progress",
                     "--scheduler", scheduler])
    moves = committed_moves(out) if step != "staged" else []
    assert step == "staged" or len(moves) >= 8  # >= 3 rewritten partitions and 1 new, 2 files each
    seen = raw_view(out)  # before anyone opens the store

    if opener == "searcher":  # a reader opens the store: it rolls a committed update forward
        searcher = Searcher(out)
        want = Searcher(versions["v1" if step == "staged" else "fresh"])
        assert searcher.n_chunks == want.n_chunks
        assert [[h.chunk_id for h in hs] for hs in searcher.search(QUERIES, 5)] == \
               [[h.chunk_id for h in hs] for hs in want.search(QUERIES, 5)]
    elif opener == "verify-cli":
        proc = subprocess.run([*EMBEDLAB, "verify", str(out), "--deep"], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    elif opener == "update":  # the next writer: it finds the update committed, nothing left to do
        r = update(UpdateConfig(source=versions["v2"], out=out, progress=False,
                                cluster=ClusterConfig(scheduler=scheduler)))
        assert not r.committed and r.chunks_embedded == 0
    else:
        assert Store(out).verify() == []
    check_one_generation(seen, old, raw_view(out) if step != "staged" else {}, moves, step, versions["hashes"])
    if step == "staged":  # the store is v1, whole; the re-run reuses what was staged
        assert raw_view(out) == old and Store(out).verify() == []
        r = update(UpdateConfig(source=versions["v2"], out=out, progress=False,
                                cluster=ClusterConfig(scheduler=scheduler)))
        assert r.committed and r.partitions_resumed >= 1
    assert_equal_stores(out, versions["fresh"])
    assert not list((out / "_staging").glob("part-*"))
    assert len(list(out.glob("*.parquet"))) == len(Store(out).manifest().partitions)  # one file each


# -- stream ------------------------------------------------------------------------------------
@pytest.mark.parametrize("step", ["staged", "committed", "moved-1", "moved"])
def test_stream_killed_at_each_step_of_a_batch_commit(tmp_path, scifact_docs, tiny_model, scheduler, step):
    docs = scifact_docs[:16]
    feed, out = tmp_path / "feed.jsonl", tmp_path / "out"
    write_jsonl(feed, docs)
    cfg = StreamConfig(watch=feed, out=out, model=str(tiny_model), dtype="fp32", max_batch=4,
                       max_delay_ms=5, idle_exit_s=0.3, poll_ms=5)
    assert stream(cfg).records == 16  # four batches, four partitions
    revised = dict(docs[15], text=docs[15]["text"] + " Revised.")  # docs 0 and 15: first and last batch
    with open(feed, "a") as fh:  # one batch: a delete, a modify and a new document
        for rec in ({"op": "delete", "_id": docs[0]["_id"]}, revised, scifact_docs[16]):
            fh.write(json.dumps(rec) + "\n")
    final = [revised if d["_id"] == revised["_id"] else d for d in docs if d["_id"] != docs[0]["_id"]]
    final.append(scifact_docs[16])
    old = raw_view(out)
    killed_at(step, [*EMBEDLAB, "stream", "--watch", str(feed), "--out", str(out), "--max-batch", "8",
                     "--max-delay-ms", "200", "--idle-exit-s", "5"])
    moves = committed_moves(out) if step != "staged" else []
    assert step == "staged" or len(moves) == 6  # 2 rewritten partitions and 1 new, 2 files each
    seen = raw_view(out)
    committed = FeedPosition.of(feed, Store(out).log.snapshot().meta).records
    assert committed == (16 if step == "staged" else 19)  # the position is in the batch's record

    r = stream(cfg)  # the restart opens the store (rolling it forward) and reads the feed on
    assert r.resumed_after == committed and r.records_read == 19 - committed
    check_one_generation(seen, old, raw_view(out), moves, step, {doc_hash(d) for d in final})
    again = stream(cfg)
    assert again.records_read == 0 and again.commits == 0
    bulk = embedlab.embed(write_jsonl(tmp_path / "final.jsonl", final), tmp_path / "bulk",
                          model=str(tiny_model), scheduler=scheduler, **FAST).out
    assert_equal_stores(out, bulk)
    assert not ({docs[0]["_id"]} & set(ds.dataset(out, format="parquet").to_table(
        columns=["doc_id"]).column("doc_id").to_pylist()))


# -- a store of the format before roll-forward commits -------------------------------------------
def test_a_format_2_store_opens_and_its_next_update_keeps_its_generation_names(versions, tmp_path, scheduler,
                                                                              scifact_docs):
    """A format-2 store whose update had rewritten a partition as ``part-0000K.g1.parquet`` (made
    here from v1 the way a format-2 commit left it) opens as it is; the next update marks it
    format 3 and rewrites that partition under the same ``.g1`` name, one file per partition."""
    out = tmp_path / "old"
    shutil.copytree(versions["v1"], out)
    meta = json.loads((out / "_embedlab.json").read_text())
    (out / "_embedlab.json").write_text(json.dumps({**meta, "format_version": 2}))
    store = Store(out)
    m = store.manifest()
    k = live_documents(store, m)[scifact_docs[2]["_id"]].partition  # v2 deletes this document
    e = m.partitions[k]
    for rel, new in ((e.parquet, f"part-{k:05d}.g1.parquet"), (e.faiss, f"_faiss/part-{k:05d}.g1.faiss")):
        (out / rel).rename(out / new)
    e.parquet, e.faiss, e.generation = f"part-{k:05d}.g1.parquet", f"_faiss/part-{k:05d}.g1.faiss", 1
    store.write_manifest(m)
    store = Store(out)
    assert store.format_version == 2 and store.verify() == []
    assert Searcher(out).n_chunks == Searcher(versions["v1"]).n_chunks
    r = update(UpdateConfig(source=versions["v2"], out=out, progress=False, cluster=ClusterConfig(scheduler=scheduler)))
    assert r.committed and r.partitions_rewritten >= 2
    store = Store(out)
    e = store.manifest().partitions[k]
    assert store.format_version == 3 and (e.parquet, e.generation) == (f"part-{k:05d}.g1.parquet", 2)
    assert len(list(out.glob("*.parquet"))) == len(store.manifest().partitions)
    assert_equal_stores(out, versions["fresh"])
