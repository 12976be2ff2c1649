"""Where the encoder tasks run: one place that builds or connects to a Dask cluster.

* ``scheduler`` given: connect to that running cluster (``dask scheduler`` plus ``dask worker``
  or ``dask cuda worker`` processes on any number of hosts).
* CUDA present and dask-cuda installed: a ``LocalCUDACluster``, one worker per GPU, or, with
  more workers than GPUs (``workers_per_gpu``: several for a small model), process workers
  that share the GPUs round-robin (:func:`gpu_sharing_cluster`).
* Otherwise an in-process ``LocalCluster`` of process workers, listening on loopback only,
  with torch threads per worker set so that workers x threads = cores.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from embedlab.config import ClusterConfig
from embedlab.device import cuda_available, gpu_count

# Measured on the 2-core CI machine (benchmarks/results): one worker with two torch threads
# beats two single-threaded workers for all-MiniLM-L6-v2, and loads the model once, not twice.
DEFAULT_CPU_WORKERS = 1

# Dask settings for the clusters we start, each measured on the 2-core CI machine, where the
# encoder's two torch threads fill both cores and any other thread that wakes stalls them:
# * the nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also switches off glibc's
#   dynamic mmap threshold: every activation tensor over 128 KiB is then mmap'ed and unmapped per
#   op, and a CPU forward pass runs about 20% slower. Our workers hold one model and reuse the
#   same tensor sizes, so they keep glibc's defaults. (A CPU encoder then sets malloc itself,
#   embedlab/malloc.py, on any worker; this matters where keep_freed_memory is off.)
# * the worker's statistical profiler samples the task thread every 10 ms and takes the GIL to do
#   it, stalling eager torch's Python dispatch between ops: forward passes ran ~10% slower with it.
# * every scheduler, nanny and worker wakes 50 times a second to time its event loop (tick), and
#   polls memory every 100 ms and system metrics every 500 ms. An idle one-worker cluster took
#   4.1% of a core that way, 0.7% with the intervals below (benchmarks/results/cluster_idle_cpu.md);
#   they only feed warnings and dashboards. The nanny still enforces the worker's memory limit,
#   checked every second.
CLUSTER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                  "distributed.worker.profile.enabled": False,
                  "distributed.admin.tick.interval": "1s",
                  "distributed.admin.system-monitor.interval": "5s",
                  "distributed.worker.memory.monitor-interval": "1s"}


@dataclass(frozen=True)
class ClusterInfo:
    kind: str  # "external", "local-cuda", "local-cuda-shared" or "local-cpu"
    workers: int
    torch_threads: int | None  # per worker; None: left to the worker's own setting
    device: str  # "cuda" for dask-cuda workers, else "auto" (each worker picks)


def dask_cuda_installed() -> bool:
    """Checked before CUDA itself, so that a CPU-only driver never pays for importing torch."""
    import importlib.util

    return importlib.util.find_spec("dask_cuda") is not None


@contextmanager
def main_script_hidden() -> Iterator[None]:
    """While our workers start (and restart), spawn does not re-run the driver's main script.

    Python's spawn start method runs the main script again in every new process. A plain script
    that calls ``embedlab.embed`` at top level, with no ``if __name__ == "__main__":`` guard,
    would so start the job again inside each worker, which multiprocessing refuses ("before the
    current process has finished its bootstrapping phase"). Workers run embedlab's functions
    only, never the script's, so the script's ``__file__`` and ``__spec__`` are hidden from spawn
    meanwhile, as a notebook's main module has none.
    """
    main = sys.modules.get("__main__")
    saved = {k: v for k, v in vars(main).items() if k in ("__file__", "__spec__")} if main else {}
    try:
        if main is not None:
            vars(main).pop("__file__", None)
            main.__spec__ = None
        yield
    finally:
        if main is not None:
            vars(main).update(saved)


@contextmanager
def connect(cfg: ClusterConfig) -> Iterator[tuple[object, ClusterInfo]]:
    """Yield a ``distributed.Client`` and a description of the cluster behind it."""
    import dask
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        with Client(cfg.scheduler, timeout="30s") as client:
            n = len(client.scheduler_info()["workers"])
            yield client, ClusterInfo("external", n, cfg.threads, "auto")
        return

    if dask_cuda_installed() and cuda_available():
        gpus = gpu_count()
        n = cfg.workers or gpus * (cfg.workers_per_gpu or 1)
        with ExitStack() as stack:
            stack.enter_context(main_script_hidden())
            stack.enter_context(dask.config.set(CLUSTER_CONFIG))
            with workers_ignore_sigint():
                if n <= gpus:
                    from dask_cuda import LocalCUDACluster

                    cluster = stack.enter_context(LocalCUDACluster(
                        n_workers=n, threads_per_worker=1, ip="127.0.0.1", dashboard_address="127.0.0.1:0",
                        silence_logs=logging.ERROR))
                else:  # dask-cuda starts at most one worker per visible GPU
                    cluster = stack.enter_context(gpu_sharing_cluster(n, gpus))
            kind = "local-cuda" if n <= gpus else "local-cuda-shared"
            yield stack.enter_context(Client(cluster)), ClusterInfo(kind, n, cfg.threads, "cuda")
        return

    cores = os.cpu_count() or 1
    n = cfg.workers or DEFAULT_CPU_WORKERS
    threads = cfg.threads or max(1, cores // n)
    with ExitStack() as stack:
        stack.enter_context(main_script_hidden())
        stack.enter_context(dask.config.set(CLUSTER_CONFIG))
        with workers_ignore_sigint():
            cluster = stack.enter_context(LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR))
        # the worker picks CUDA if any
        yield stack.enter_context(Client(cluster)), ClusterInfo("local-cpu", n, threads, "auto")


def gpu_visible_devices(n_workers: int, gpus: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each of ``n_workers`` workers sharing ``gpus`` GPUs round-robin."""
    return [str(i % gpus) for i in range(n_workers)]


def gpu_sharing_cluster(n_workers: int, gpus: int) -> Any:
    """A local cluster of ``n_workers`` process workers (nannies), each pinned to one of ``gpus``
    GPUs through its own ``CUDA_VISIBLE_DEVICES``, several to a GPU: what dask-cuda does for one
    worker per GPU. A small model leaves the GPU idle while its worker reads, tokenizes and
    writes, so several workers per GPU keep it busier (``benchmarks/results/embed_gpu_workers.md``)."""
    from distributed import Nanny, Scheduler, SpecCluster

    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}
    rayon = str(max(1, (os.cpu_count() or 1) // n_workers))  # the Rust tokenizer's threads: the host's cores, shared
    workers = {i: {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1", "silence_logs": logging.ERROR,
                                             "env": {"CUDA_VISIBLE_DEVICES": dev, "RAYON_NUM_THREADS": rayon}}}
               for i, dev in enumerate(gpu_visible_devices(n_workers, gpus))}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR, name="embedlab-gpu")


@contextmanager
def workers_ignore_sigint() -> Iterator[None]:
    """Worker processes started inside this block ignore SIGINT (they inherit SIG_IGN).

    Ctrl-C in a terminal signals the whole foreground process group. Workers that took it would
    die mid-task while the job waits on them; instead the job alone stops: it lets the partitions
    in flight land, writes the manifest and shuts its cluster down, workers included.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
