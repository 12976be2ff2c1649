"""OpenMP threads that sleep when they wait, so torch shares the CPU with the input path.

torch's CPU wheels run their intra-op threads on GNU OpenMP, whose idle threads spin for a while
before they sleep. An embedlab worker is never alone on its cores: the tokenizer's threads
(Rust, one per core) read the next batches and a writer thread writes the last partition while
the forward pass runs. A spinning thread holds a core the tokenizer needs, and an OpenMP thread
that the kernel has preempted stalls every barrier of every operator until it runs again. On
the 2-core machine, with one other busy process, a 24,576 x 32 float add took 7.9 ms with
spinning threads and 0.3 ms with sleeping ones, and the whole `embed` of Wikipedia with a
1-layer 32-wide model ran 3.3x faster; on a quiet machine the overlap this allows took its input
ceiling from 0.35 to 0.41 of the raw tokenizer (benchmarks/bench_openmp_wait.py, results in
benchmarks/results/openmp_wait_*.md).

libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it, so this must run before the first
``import torch`` of the process; worker processes inherit it. A value the user set is kept.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"


def prefer_sleeping_threads(environ: dict[str, str] | os._Environ = os.environ) -> str:
    """Set ``OMP_WAIT_POLICY`` to sleep-when-idle unless it is set already; return the value in force."""
    return environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def idle_threads_sleep(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether torch's idle OpenMP threads sleep in this process (the policy in force is PASSIVE),
    so that reading and tokenizing on other threads beside a CPU forward pass can pay."""
    return environ.get("OMP_WAIT_POLICY", "").strip().upper() == WAIT_POLICY
