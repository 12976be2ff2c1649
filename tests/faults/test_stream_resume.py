"""`embedlab stream` SIGKILLed mid-batch, three times at different points; each restart reads only
the records after the last committed one, and the store ends equal to a fresh embed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import embedlab
from embedlab.chunk_stream import content_sha256
from embedlab.corpus import join_title
from embedlab.feed import FeedPosition
from embedlab.store import Store
from embedlab.streaming import StreamConfig, stream
from embedlab.transaction import live_documents

from ..conftest import write_jsonl

BAD = "{this line is not JSON\n"


def position(out: Path, feed: Path) -> FeedPosition:
    """The feed position the store has committed (read while the stream writes)."""
    store = Store(out)
    meta = store.log.snapshot().meta if store.exists() and store.log.log.root.is_dir() else {}
    return FeedPosition.of(feed, meta)


def mid_batch(out: Path) -> bool:
    """A batch's partition is staged and not committed yet."""
    return any((out / "_staging").glob("part-*.parquet.staged"))


def kill_mid_batch(cmd: list[str], out: Path, feed: Path, after: int) -> None:
    """Run the stream CLI; SIGKILL it mid-batch once ``after`` records of the feed are committed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while position(out, feed).records < after:
            assert proc.poll() is None, f"the stream ended before the kill: {proc.communicate()}"
            assert time.time() < deadline, "timed out"
            time.sleep(0.001)
        # Then, for up to 50 ms, wait for a batch staged and not yet committed (the window is a few
        # ms with a tiny model, so a kill may also land while one encodes or commits: each leaves
        # records read and not committed, which is what the restart must not read twice or lose).
        staged_by = time.time() + 0.05
        while not mid_batch(out) and time.time() < staged_by:
            pass
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def live_vectors(out: Path) -> dict[str, np.ndarray]:
    t = pa.concat_tables(Store(out).iter_tables(["chunk_id", "vector"]))
    return dict(zip(t.column("chunk_id").to_pylist(), np.stack(t.column("vector").to_numpy(zero_copy_only=False))))


def test_sigkill_mid_batch_three_times_each_restart_reads_only_uncommitted_records(
        tmp_path, scifact_docs, tiny_model):
    docs = scifact_docs[:150]
    revise = lambda d: dict(d, text=d["text"] + " (revised)")  # noqa: E731
    rounds = [  # lines appended to the feed before each kill; about 60 records each
        [json.dumps(d) + "\n" for d in docs[:60]],
        [json.dumps(d) + "\n" for d in docs[60:100]] + [BAD]
        + [json.dumps(revise(d)) + "\n" for d in docs[:10]]
        + [json.dumps({"op": "delete", "_id": d["_id"]}) + "\n" for d in docs[10:15]] + [BAD, BAD],
        [json.dumps(d) + "\n" for d in docs[100:150]] + [json.dumps(revise(d)) + "\n" for d in docs[60:65]]
        + [json.dumps({"op": "delete", "_id": d["_id"]}) + "\n" for d in docs[20:25]],
    ]
    kill_after = [4, 25, 41]  # records of the round committed before its kill: different points
    feed, out = tmp_path / "feed.jsonl", tmp_path / "out"
    feed.touch()
    cmd = [sys.executable, "-m", "embedlab.cli", "stream", "--watch", str(feed), "--out", str(out),
           "--max-batch", "3", "--max-delay-ms", "5", "--idle-exit-s", "60", "--model", str(tiny_model),
           "--dtype", "fp32", "--json"]
    cfg = StreamConfig(watch=feed, out=out, max_batch=3, max_delay_ms=5, idle_exit_s=0.3, poll_ms=5)
    total = 0
    for lines, after in zip(rounds, kill_after):
        with open(feed, "a") as fh:
            fh.write("".join(lines))
        before = total
        total += len(lines)
        kill_mid_batch(cmd, out, feed, before + after)
        committed = position(out, feed).records
        assert before + after <= committed < total  # killed mid-feed, mid-batch
        r = stream(cfg)  # the restart
        assert r.resumed_after == committed
        assert r.records_read == r.records == total - committed  # only what was not committed
        assert position(out, feed).records == total and Store(out).verify() == []
    again = stream(cfg)
    assert again.records_read == 0 and again.resumed_after == total
    final = {d["_id"]: d for d in docs}
    final.update({d["_id"]: revise(d) for d in docs[:10] + docs[60:65]})
    for d in docs[10:15] + docs[20:25]:
        del final[d["_id"]]
    store = Store(out)
    assert {d: s.sha256 for d, s in live_documents(store, store.manifest()).items()} == {
        d["_id"]: content_sha256(join_title(d["title"], d["text"])) for d in final.values()}
    rejects = [json.loads(x) for x in store.rejects_path.read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [101, 117, 118]  # each bad line once, none lost
    bulk = embedlab.embed(write_jsonl(tmp_path / "final.jsonl", list(final.values())), tmp_path / "bulk",
                          model=str(tiny_model), progress=False, dtype="fp32")
    got, want = live_vectors(out), live_vectors(bulk.out)
    assert got.keys() == want.keys()  # nothing lost, nothing duplicated (verify: no chunk live twice)
    assert min(float(got[k] @ want[k]) for k in want) >= 0.9999
