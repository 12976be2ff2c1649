"""What a local Dask cluster takes from the encoder's cores by itself: CPU of an idle cluster.

    .venv/bin/python benchmarks/bench_cluster_idle.py [--seconds 30] [--repeats 3] [--results DIR]

On a CPU machine the encoder's torch threads fill every core, so any other thread that wakes
takes a core from a forward pass. This starts a one-worker cluster with Dask's defaults and one
as embedlab starts it (``embedlab.cluster.connect``), in turn, lets each sit idle, and reads from
/proc the CPU time used by the driver process (scheduler, nanny and client live there) and by
the worker. It prints the median share of a core over the repeats and each worker's periodic
callbacks, and writes the table to benchmarks/results/cluster_idle_<machine>_<date>.md.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Results, Spread, command_line, in_turn, markdown_table, parser  # noqa: E402

WATCHED = ("tick", "memory_monitor", "monitor", "profile")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_callbacks(dask_worker) -> dict[str, float]:
    return {k: pc.callback_time for k, pc in dask_worker.periodic_callbacks.items()}


@contextmanager
def dask_defaults():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


@contextmanager
def embedlab_cluster():
    from embedlab.cluster import connect
    from embedlab.config import ClusterConfig

    with connect(ClusterConfig(workers=1)) as (client, _):
        yield client


def idle_share(start, seconds: float) -> tuple[float, float, dict[str, float]]:
    """Driver's and worker's CPU over ``seconds`` of idling, as a share of one core."""
    with start() as client:
        [(worker_pid, callbacks)] = client.run(
            lambda dask_worker: (os.getpid(), worker_callbacks(dask_worker))).values()
        time.sleep(3)  # let start-up work settle
        d0, w0 = cpu_seconds(os.getpid()), cpu_seconds(worker_pid)
        time.sleep(seconds)
        return ((cpu_seconds(os.getpid()) - d0) / seconds, (cpu_seconds(worker_pid) - w0) / seconds,
                callbacks)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    results = Results("cluster_idle", args.results)
    setups = {"Dask defaults (LocalCluster)": dask_defaults, "embedlab (cluster.connect)": embedlab_cluster}
    def progress(name: str, r: tuple) -> None:
        print(f"{name}: driver {r[0]:.2%}, worker {r[1]:.2%} of a core", flush=True)

    runs = in_turn({name: (lambda start=start: idle_share(start, args.seconds))
                    for name, start in setups.items()}, args.repeats, progress)
    rows = []
    base = None
    for name in setups:
        driver = Spread([d for d, _, _ in runs[name]]).median
        worker = Spread([w for _, w, _ in runs[name]]).median
        base = base or driver + worker
        cb = runs[name][-1][2]
        rows.append([name, f"{driver:.2%}", f"{worker:.2%}", f"{driver + worker:.2%}",
                     f"{(driver + worker) / base:.2f}",
                     *[f"{cb[k]:.0f}" if k in cb else "off" for k in WATCHED]])
    header = ["cluster, 1 worker, idle", "driver (scheduler, nanny, client)", "worker", "together",
              "x Dask defaults", *[f"worker {k} (ms)" for k in WATCHED]]
    results.write_markdown(
        "CPU an idle local Dask cluster takes (share of one core)",
        f"Median of {args.repeats} idle spells of {args.seconds:.0f} s each, the two clusters taken in turn; "
        "CPU time (user + system) from /proc.",
        markdown_table(header, rows), command_line())


if __name__ == "__main__":
    main()
