"""The embed job on an external Dask cluster: real `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import embedlab
from embedlab.store import Store

from .conftest import write_jsonl

DASK = str(Path(sys.executable).parent / "dask")


class DaskCluster:
    """A scheduler and ``n`` single-threaded workers on 127.0.0.1, as separate processes."""

    def __init__(self, tmp: Path, n_workers: int = 2):
        self.file = tmp / "scheduler.json"
        self.log = open(tmp / "dask.log", "w")
        common = dict(stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(self.file)], **common)
        self._wait(lambda: self.file.is_file(), "scheduler")
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [subprocess.Popen(
            [DASK, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
             "--host", "127.0.0.1", "--name", f"w{i}"], **common) for i in range(n_workers)]
        from distributed import Client

        with Client(self.address, timeout="30s") as c:
            c.wait_for_workers(n_workers, timeout=60)

    @staticmethod
    def _wait(cond, what, timeout=60):
        end = time.time() + timeout
        while not cond():
            if time.time() > end:
                raise TimeoutError(f"{what} did not start")
            time.sleep(0.2)

    def close(self):
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in [*self.workers, self.scheduler]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def dask_cluster(tmp_path):
    cluster = DaskCluster(tmp_path, n_workers=2)
    yield cluster
    cluster.close()


def test_embed_on_a_running_scheduler_loads_the_model_once_per_worker(dask_cluster, tmp_path,
                                                                      scifact_docs):
    from distributed import Client

    corpus = write_jsonl(tmp_path / "corpus.jsonl", scifact_docs[:24])
    result = embedlab.embed(corpus, tmp_path / "out", scheduler=dask_cluster.address,
                            partition_tokens=1500, progress=False)
    assert result.cluster["kind"] == "external" and result.cluster["workers"] == 2
    assert result.partitions >= 4 and result.partitions_encoded == result.partitions
    assert Store(result.out).verify() == []
    assert pq.read_table(result.out).num_rows == result.chunks

    def encoder_cache():
        from embedlab.encoder import cached_encoder

        info = cached_encoder.cache_info()
        return info.misses, info.hits

    with Client(dask_cluster.address) as client:
        per_worker = client.run(encoder_cache)
    loads = [m for m, _ in per_worker.values()]
    tasks = sum(m + h for m, h in per_worker.values())
    assert loads == [1, 1]  # each worker loaded the model exactly once
    # one warm-up per worker, one device check per split task and one lookup per partition: all hits
    assert tasks == result.partitions + result.splits + 2


def _worker_env(dask_worker) -> dict:
    return {**{k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")},
            "callbacks": {k: pc.callback_time for k, pc in dask_worker.periodic_callbacks.items()}}


def test_local_workers_keep_glibc_malloc_and_wake_rarely(monkeypatch):
    """Dask's MALLOC_TRIM_THRESHOLD_ (~20%), its 10 ms stack sampler (~10%) and its 20 ms event-loop
    ticks slow CPU forward passes that fill every core."""
    from embedlab.cluster import connect
    from embedlab.config import ClusterConfig

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with connect(ClusterConfig(workers=1)) as (client, info):
        [env] = client.run(_worker_env).values()
        scheduler = client.run_on_scheduler(
            lambda dask_scheduler: {k: pc.callback_time for k, pc in dask_scheduler.periodic_callbacks.items()})
    assert info.kind == "local-cpu"
    assert env["MALLOC_TRIM_THRESHOLD_"] is None
    assert env["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", "1")  # the rest of Dask's worker environment is kept
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # nor is the driver's environment changed
    worker = env["callbacks"]
    assert "profile" not in worker
    assert worker["tick"] == scheduler["tick"] == 1000
    assert worker["memory_monitor"] == 1000 and worker["monitor"] == scheduler["monitor"] == 5000
    assert worker["heartbeat"] <= 1000  # liveness is not slowed


def test_workers_sharing_gpus_each_see_one_gpu_round_robin():
    """More workers than GPUs (several per GPU for a small model): each worker process is pinned to
    one GPU by its own CUDA_VISIBLE_DEVICES, as dask-cuda pins one worker per GPU. The cluster is
    real (a scheduler and three nannies); the pinning needs no GPU to be checked."""
    from distributed import Client

    from embedlab.cluster import gpu_sharing_cluster
    from embedlab.config import ClusterConfig, workers_per_gpu_for

    with gpu_sharing_cluster(3, 2) as cluster, Client(cluster) as client:
        seen = client.run(lambda dask_worker: (dask_worker.name, os.environ.get("CUDA_VISIBLE_DEVICES"),
                                               os.environ.get("RAYON_NUM_THREADS")))
    rayon = str(max(1, (os.cpu_count() or 1) // 3))  # the tokenizers' threads share the host's cores
    assert sorted(seen.values()) == [(0, "0", rayon), (1, "1", rayon), (2, "0", rayon)]
    assert workers_per_gpu_for(ClusterConfig(), 384).workers_per_gpu == 4
    assert workers_per_gpu_for(ClusterConfig(), 768).workers_per_gpu == 1
    assert workers_per_gpu_for(ClusterConfig(workers_per_gpu=2), 384).workers_per_gpu == 2
