from __future__ import annotations

from pathlib import Path

import pytest


def committed_partitions(out: Path) -> int:
    """Partitions the store at ``out`` has committed so far (0 before its first commit)."""
    from embedlab.store import Store

    store = Store(out)
    try:
        return len(store.manifest().partitions) if store.exists() else 0
    except (OSError, ValueError):  # the store's identity file is being written
        return 0


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A small random-weight BERT (real tokenizer) for fault runs that must be fast."""
    from embedlab.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def hot_model(tmp_path_factory):
    """A tiny model whose fp16 activations overflow (inf) for texts holding "zebra", and only for
    them; in fp32 every vector is finite."""
    from embedlab.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("hot") / "model", seed=1, hot_word="zebra")


@pytest.fixture(scope="module")
def scheduler():
    """One real Dask cluster (scheduler + a worker process) shared by a module's jobs, which would
    otherwise each start their own and load the model again."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address
