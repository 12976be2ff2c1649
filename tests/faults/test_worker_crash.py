"""A worker process is SIGKILLed mid-job on a real Dask cluster; the job still completes exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

from embedlab.store import Store
from tests.conftest import write_jsonl
from tests.faults.test_interrupt import wait_for_partitions
from tests.test_scheduler import DaskCluster

EMBED = [sys.executable, "-m", "embedlab.cli", "embed"]


def vectors_by_id(root):
    t = pq.read_table(root, columns=["chunk_id", "vector"])
    v = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    return dict(zip(t.column("chunk_id").to_pylist(), v))


def test_killing_a_worker_mid_job_loses_and_duplicates_nothing(tmp_path, scifact_docs):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", scifact_docs[:48])
    args = ["--partition-tokens", "1500", "--no-progress", "--split-bytes", "20000"]  # both workers hold splits
    clean = subprocess.run([*EMBED, str(corpus), "--out", str(tmp_path / "clean"), *args],
                           capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr

    cluster = DaskCluster(tmp_path, n_workers=2)
    try:
        out = tmp_path / "out"
        proc = subprocess.Popen([*EMBED, str(corpus), "--out", str(out), "--scheduler", cluster.address,
                                 "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_partitions(out, 1, proc)
        victim = cluster.workers[0]
        os.killpg(victim.pid, signal.SIGKILL)  # the worker and its nanny: the worker is gone
        victim.wait(timeout=30)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        cluster.close()
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["partitions_encoded"] == summary["partitions"] >= 6
    assert summary["partitions_resent"] >= 1  # the dead worker held work that was redone
    assert Store(out).verify() == []
    got, want = vectors_by_id(out), vectors_by_id(tmp_path / "clean")
    ids = pq.read_table(out, columns=["chunk_id"]).column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == set(want)
    cos = min(float(got[i] @ want[i]) for i in ids)
    assert cos >= 0.9999
