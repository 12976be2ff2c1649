"""The commit log: conditional create under real races, torn records, fencing, checkpoints."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from embedlab.claims import Claim
from embedlab.commitlog import (CommitLog, FencedError, LogError, SeqTakenError, TornRecordError,
                                WriterConflictError, open_log)

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def add(key: str, **entry) -> dict:
    return {"op": "add", "key": key, "entry": entry}


def test_commits_fold_into_the_state_and_reopen_the_same(tmp_path):
    log = CommitLog(tmp_path / "_log", durable=False)
    with log.acquire("test") as w:
        w.commit([add("p0", rows=3), add("p1", rows=4)])
        w.commit([{"op": "remove", "key": "p0"}, {"op": "set", "key": "feed", "value": [7, 123]}])
        state = dict(w.snapshot.entries)
    snap = open_log(tmp_path / "_log")
    assert snap.entries == state == {"p1": {"rows": 4}}
    assert snap.meta == {"feed": [7, 123]} and snap.claim is None and snap.seq == 4


def test_the_same_record_number_is_created_once(tmp_path):
    log = CommitLog(tmp_path, durable=False)
    log.create_record(1, "a", [add("x")])
    with pytest.raises(SeqTakenError):
        log.create_record(1, "b", [add("y")])
    assert log.read_record(1)["claim"] == "a"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


RACER = textwrap.dedent("""
    import sys, time
    from embedlab.commitlog import CommitLog, SeqTakenError
    root, label, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    log = CommitLog(root, durable=False)
    while time.time() < start:
        pass
    seq, done, lost = 1, 0, 0
    while done < n:
        try:
            log.create_record(seq, label, [{"op": "add", "key": f"{label}-{done}", "entry": {}}])
            done += 1
        except SeqTakenError:
            lost += 1
        seq += 1
    print(lost)
""")


def test_two_processes_racing_for_every_record_number_each_get_distinct_ones(tmp_path):
    start = time.time() + 1.5  # both processes spin until then, so their commits interleave
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), label, "150", str(start)],
                              env=ENV, stdout=subprocess.PIPE, text=True) for label in ("a", "b")]
    lost = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    snap = CommitLog(tmp_path).replay()
    assert snap.seq == 300
    keys = [k for k in snap.entries]
    for label in ("a", "b"):  # each process's commits: every one once, in its own order
        assert [k for k in keys if k.startswith(label)] == [f"{label}-{i}" for i in range(150)]
    assert sum(lost) > 0, "the processes never collided; the race was not exercised"


ACQUIRE = textwrap.dedent("""
    import sys, time
    from embedlab.commitlog import CommitLog, WriterConflictError
    root, start = sys.argv[1], float(sys.argv[2])
    while time.time() < start:
        pass
    try:
        w = CommitLog(root, durable=False).acquire("racer")
    except WriterConflictError as e:
        print("refused", e)
        sys.exit(3)
    print("won", w.claim.id)
    sys.stdout.flush()
    time.sleep(1)  # hold the claim while the other process tries
""")


def test_two_writers_starting_together_one_wins_and_the_other_is_told_who(tmp_path):
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", ACQUIRE, str(tmp_path), str(start)], env=ENV,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    winner = next(p for p in procs if p.returncode == 0)
    refused = next(o for o, p in zip(outs, procs) if p.returncode == 3)
    assert f"pid {winner.pid}" in refused or "claimed at the same moment" in refused


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    log = CommitLog(tmp_path, durable=False)
    first = log.acquire("embedlab embed corpus --out store")
    with pytest.raises(WriterConflictError) as e:
        CommitLog(tmp_path, durable=False).acquire("another")
    msg = str(e.value)
    assert f"pid {os.getpid()}" in msg and "embedlab embed corpus" in msg and first.claim.id in msg
    assert "--take-over" in msg
    with pytest.raises(WriterConflictError, match="less than the 3600 s"):  # too recent to take over
        CommitLog(tmp_path, durable=False).acquire("another", takeover=True, stale_after=3600)
    first.commit([add("p0")])  # the refused writers changed nothing


def test_takeover_fences_the_old_writer(tmp_path):
    old = CommitLog(tmp_path, durable=False).acquire("old")
    old.commit([add("p0")])
    new = CommitLog(tmp_path, durable=False).acquire("new", takeover=True, stale_after=0)
    with pytest.raises(FencedError) as e:
        old.commit([add("late")])
    assert new.claim.id in str(e.value) and "fenced off" in str(e.value)
    new.commit([add("p1")])
    snap = open_log(tmp_path)
    assert set(snap.entries) == {"p0", "p1"} and snap.claim == new.claim
    takeover = snap.seq - 1
    assert CommitLog(tmp_path).read_record(takeover)["actions"][0]["takeover_of"] == old.claim.id


CRASHER = textwrap.dedent("""
    import os, signal, sys
    from embedlab.commitlog import CommitLog
    w = CommitLog(sys.argv[1], durable=False).acquire("crasher")
    w.commit([{"op": "add", "key": "p0", "entry": {}}])
    print(w.claim.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_the_claim_of_a_killed_writer_is_taken_over_and_says_why(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CRASHER, str(tmp_path)], env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    dead = proc.stdout.strip()
    assert open_log(tmp_path).claim.id == dead
    w = CommitLog(tmp_path, durable=False).acquire("restart")  # no flag: its process is gone
    rec = CommitLog(tmp_path).read_record(w.seq)["actions"][0]
    assert rec["takeover_of"] == dead and rec["reason"] == "its process is gone"
    assert set(w.snapshot.entries) == {"p0"}


def write_record_by_hand(log: CommitLog, seq: int, rec: dict) -> None:
    """A record as the format describes it: canonical JSON with the sha256 of the rest."""
    import hashlib

    body = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
    log.root.mkdir(parents=True, exist_ok=True)
    log.record_path(seq).write_bytes(json.dumps({**rec, "sha256": hashlib.sha256(body).hexdigest()}).encode())


def test_a_claim_from_another_host_needs_an_explicit_takeover_after_silence(tmp_path):
    log = CommitLog(tmp_path, durable=False)
    two_hours_ago = time.time() - 7200
    remote = Claim(id="remote123456", host="gpu-node-7", pid=4242, started=two_hours_ago,
                   proc="other-boot/1/99", owner="embedlab embed")
    write_record_by_hand(log, 1, {"seq": 1, "claim": remote.id, "time": two_hours_ago,
                                  "actions": [{"op": "claim", "claim": remote.__dict__}]})
    assert remote.alive() is None  # another machine: cannot tell
    with pytest.raises(WriterConflictError, match="pid 4242 on gpu-node-7"):
        log.acquire("me")  # silent for two hours, but only an explicit takeover takes it
    with pytest.raises(WriterConflictError, match="7200 s ago"):
        log.acquire("me", takeover=True, stale_after=3 * 3600)
    w = log.acquire("me", takeover=True, stale_after=3600)
    rec = log.read_record(w.seq)["actions"][0]
    assert rec["takeover_of"] == remote.id and "silence" in rec["reason"]


def test_heartbeat_keeps_a_quiet_writer_from_looking_stale(tmp_path):
    log = CommitLog(tmp_path, durable=False)
    w = log.acquire("quiet")
    old = time.time() - 600
    os.utime(log.record_path(1), (old, old))
    w.heartbeat()
    with pytest.raises(WriterConflictError):
        CommitLog(tmp_path, durable=False).acquire("eager", takeover=True, stale_after=300)


def test_a_torn_record_is_named_and_a_torn_tail_can_be_set_aside(tmp_path):
    log = CommitLog(tmp_path, durable=False)
    w = log.acquire("w")
    for i in range(5):
        w.commit([add(f"p{i}")])
    last = log.record_path(w.seq)
    last.write_bytes(last.read_bytes()[:40])  # as an O_EXCL writer killed mid-write leaves it
    with pytest.raises(TornRecordError) as e:
        open_log(tmp_path)
    assert str(last) in str(e.value) and "torn" in str(e.value)
    aside = log.repair_torn_tail()
    assert aside is not None and aside.name.startswith(".") and not last.exists()
    snap = open_log(tmp_path)
    assert set(snap.entries) == {"p0", "p1", "p2", "p3"}
    w2 = CommitLog(tmp_path, durable=False).acquire("after", takeover=True, stale_after=0)
    w2.commit([add("p4")])  # the record number is reused by the next commit
    assert set(open_log(tmp_path).entries) == {f"p{i}" for i in range(5)}


def test_a_damaged_record_in_the_middle_is_not_repaired(tmp_path):
    log = CommitLog(tmp_path, durable=False)
    w = log.acquire("w")
    for i in range(4):
        w.commit([add(f"p{i}")])
    mid = log.record_path(3)
    obj = json.loads(mid.read_bytes())
    obj["actions"][0]["key"] = "forged"
    mid.write_text(json.dumps(obj))  # parses, but its checksum no longer matches
    with pytest.raises(TornRecordError, match="checksum"):
        open_log(tmp_path)
    with pytest.raises(TornRecordError):
        log.repair_torn_tail()


def test_checkpoint_plus_tail_equals_the_full_replay(tmp_path):
    rng = random.Random(3)
    log = CommitLog(tmp_path, checkpoint_every=16, checkpoint_fraction=0.0, durable=False)
    w = log.acquire("w")
    live: set[str] = set()
    for i in range(250):
        actions = [add(f"p{i}", rows=rng.randint(1, 9))]
        if live and rng.random() < 0.3:
            dead = rng.choice(sorted(live))
            live.discard(dead)
            actions.append({"op": "remove", "key": dead})
        if rng.random() < 0.2:
            actions.append({"op": "set", "key": "feed", "value": {"file": "f.jsonl", "offset": i}})
        live.add(f"p{i}")
        w.commit(actions)
    opened, full = log.open(), log.replay()
    assert opened.checkpoint_seq > 0 and opened.records_read < 16 and full.records_read == w.seq
    assert opened.state() == full.state() == w.snapshot.state()
    assert set(opened.entries) == live
    # a damaged checkpoint: readers fall back to an older one (or the full log), same state
    log.checkpoint_path(opened.checkpoint_seq).write_bytes(b"{}")
    fallback = log.open()
    assert fallback.checkpoint_seq < opened.checkpoint_seq and fallback.state() == full.state()


def test_checkpoints_come_more_rarely_as_the_state_grows(tmp_path):
    log = CommitLog(tmp_path, checkpoint_every=10, checkpoint_fraction=0.5, durable=False)
    w = log.acquire("w")
    for i in range(200):
        w.commit([add(f"p{i}")])
    seqs = sorted(int(p.name.split(".")[0]) for p in tmp_path.glob("*.checkpoint.json"))
    gaps = [b - a for a, b in zip([0, *seqs], seqs)]
    assert gaps[0] == 10 and gaps[-1] >= 0.5 * seqs[-2]  # each gap >= half the entries then


def test_a_released_writer_commits_no_more(tmp_path):
    w = CommitLog(tmp_path, durable=False).acquire("w")
    w.release()
    with pytest.raises(LogError, match="released"):
        w.commit([add("x")])
    CommitLog(tmp_path, durable=False).acquire("next")  # a released log is claimed freely
