"""Whole-job interruption: SIGINT and SIGKILL of the `embedlab embed` process, then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedlab.store import Store
from tests.conftest import write_jsonl
from tests.faults.conftest import committed_partitions

EMBED = [sys.executable, "-m", "embedlab.cli", "embed"]


def start_embed(corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*EMBED, str(corpus), "--out", str(out), "--no-progress", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_partitions(out: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if committed_partitions(out) >= n:
            return
        assert proc.poll() is None, f"embed ended early: {proc.communicate()}"
        time.sleep(0.2)
    raise TimeoutError("no partition landed")


def group_members(pgid: int) -> set[int]:
    """Every live process in process group ``pgid`` (the job, its cluster's nannies and workers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def wait_until_gone(pids: set[int], timeout: float = 30) -> set[int]:
    """The processes of ``pids`` still alive after ``timeout`` seconds."""
    end = time.time() + timeout
    alive = set(pids)
    while alive and time.time() < end:
        alive = {pid for pid in alive if Path(f"/proc/{pid}").exists()
                 and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}
        time.sleep(0.2)
    return alive


def stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and (p.suffix == ".parquet" and p.parent == root or p.suffix == ".faiss")}


@pytest.fixture(scope="module")
def job(tmp_path_factory, scifact_docs):
    root = tmp_path_factory.mktemp("interrupt")
    corpus = write_jsonl(root / "corpus.jsonl", scifact_docs[:60])
    clean = root / "clean"
    proc = subprocess.run([*EMBED, str(corpus), "--out", str(clean), "--no-progress",
                           "--partition-tokens", "2000"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return corpus, clean


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_job_resumes_and_equals_a_clean_run(job, tmp_path, sig):
    corpus, clean = job
    out = tmp_path / "out"
    proc = start_embed(corpus, out, "--partition-tokens", "2000")
    try:
        wait_for_partitions(out, 2, proc)
        members = group_members(proc.pid)
        assert len(members) >= 3  # the job, and its cluster's nanny and worker processes
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the whole foreground group
        else:
            os.kill(proc.pid, sig)  # kill -9 of the job alone: its workers must not stay behind
        _, err = proc.communicate(timeout=120)
        left = wait_until_gone(members)
        assert not left, f"processes outlived the job: {left}"
    finally:
        stop_group(proc)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Run the same command again to resume" in err
        assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    done = len(Store(out).manifest().partitions)
    assert done >= 2
    again = subprocess.run([*EMBED, str(corpus), "--out", str(out), "--no-progress",
                            "--partition-tokens", "2000", "--json"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["partitions_skipped"] >= done  # every partition the manifest lists verifies
    assert summary["partitions_skipped"] + summary["partitions_encoded"] == summary["partitions"]
    assert Store(out).verify() == []
    assert files(out) == files(clean)
