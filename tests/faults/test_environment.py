"""Environment faults, for real: a full disk (a small tmpfs, or a process file size limit where
this machine may not mount), a read-only file system, an immutable folder (root cannot write
into it either), and a corpus file that shrinks, vanishes or is replaced while the job reads it.

Each gives one line that names the file and says whether the store can be resumed, exit 1; the
store stays consistent and the same command resumes it once the fault is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedlab.config import CorpusConfig
from embedlab.corpus import Document, read_corpus
from embedlab.files import EnvironmentFault
from embedlab.store import Store
from tests.conftest import write_jsonl
from tests.faults.conftest import committed_partitions

EMBEDLAB = [sys.executable, "-m", "embedlab.cli"]
RESUMABLE = "the store is consistent and can be resumed"


def embed(corpus: Path, out: Path, model: Path, *extra: str, **popen) -> subprocess.CompletedProcess:
    """``embedlab embed`` in a subprocess; pass ``--scheduler`` to use a running cluster."""
    return subprocess.run([*EMBEDLAB, "embed", str(corpus), "--out", str(out), "--model", str(model),
                           "--no-progress", "--partition-tokens", "2000", *extra],
                          capture_output=True, text=True, timeout=600, **popen)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single error line of a failed command (nothing else on stderr, no traceback)."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("embedlab: error: "), proc.stderr[-2000:]
    return lines[0]


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real tmpfs of ``size`` at ``path``; skips the test where this machine may not mount."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the file size limit "
                    "variant covers a full disk")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".faiss")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, scifact_docs, tiny_model, scheduler):
    root = tmp_path_factory.mktemp("env")
    path = write_jsonl(root / "corpus.jsonl", scifact_docs[:60])
    clean = embed(path, root / "clean", tiny_model, "--scheduler", scheduler)
    assert clean.returncode == 0, clean.stderr
    return path, root / "clean"


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_is_one_line_naming_the_file_and_the_store_resumes(corpus, tiny_model, tmp_path, how,
                                                                     scheduler):
    path, clean = corpus
    shared = ("--scheduler", scheduler)
    if how == "tmpfs":  # 64 KiB: the store's first few partitions fit, then the disk is full
        with tmpfs(tmp_path / "disk", "64k") as disk:
            out = disk / "out"
            line = one_line_error(embed(path, out, tiny_model, *shared))  # the worker fills the disk
            assert "no space left on device (ENOSPC)" in line
            listed = len(Store(out).manifest().partitions)
            remount(disk, "size=64m")  # a bigger disk
            again = embed(path, out, tiny_model, "--json", *shared)
            assert again.returncode == 0, again.stderr
            got = files(out)
    else:  # a file size limit on the job and the workers it starts (its own cluster):
        out = tmp_path / "out"  # part-00001.parquet (11,258 bytes) is over it, part-00000 (10,904) is not
        line = one_line_error(embed(path, out, tiny_model, preexec_fn=limit_file_size(11_100)))
        assert "file too large (EFBIG)" in line
        listed = len(Store(out).manifest().partitions)
        again = embed(path, out, tiny_model, "--json", *shared)
        assert again.returncode == 0, again.stderr
        got = files(out)
    # the worker writing a partition or the driver committing one may hit the full disk first
    assert (": cannot write: " in line or ": cannot commit to the store's log: " in line) and str(out) in line
    assert RESUMABLE in line
    assert listed >= 1  # what landed before the fault was kept ...
    assert json.loads(again.stdout)["partitions_skipped"] >= listed  # ... and reused by the re-run
    assert got == files(clean)  # byte for byte what an undisturbed run writes


def test_read_only_file_system_fails_before_any_cluster_starts(corpus, tiny_model, tmp_path, scifact_docs):
    path, clean = corpus
    with tmpfs(tmp_path / "ro", "64m") as disk:
        shutil.copytree(clean, disk / "out")
        remount(disk, "ro")
        more = write_jsonl(tmp_path / "more.jsonl", scifact_docs[:61])
        # an address no cluster listens at: any attempt to start one would fail differently
        line = one_line_error(embed(more, disk / "out", tiny_model, "--scheduler", "tcp://127.0.0.1:9"))
        assert str(disk / "out") in line and "read-only file system (EROFS)" in line and RESUMABLE in line
        line = one_line_error(subprocess.run([*EMBEDLAB, "update", str(more), "--out", str(disk / "out")],
                                             capture_output=True, text=True, timeout=300))
        assert "_log: cannot claim the store for writing: read-only file system (EROFS)" in line
        remount(disk, "rw")
        assert Store(disk / "out").verify() == []


def test_an_immutable_store_folder_is_refused_even_to_root(corpus, tiny_model, tmp_path, scifact_docs):
    path, clean = corpus
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        probe = subprocess.run(["touch", str(out / "x")], capture_output=True)
        assert probe.returncode != 0  # not even root may create a file in it
        more = write_jsonl(tmp_path / "more.jsonl", scifact_docs[:61])
        line = one_line_error(embed(more, out, tiny_model, "--scheduler", "tcp://127.0.0.1:9"))
        assert f"{out}: cannot write: operation not permitted (EPERM)" in line and RESUMABLE in line
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert Store(out).verify() == []


def test_a_new_store_that_cannot_be_created_says_nothing_can_be_resumed(corpus, tiny_model, tmp_path):
    path, _ = corpus
    parent = tmp_path / "locked"
    parent.mkdir()
    if subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        line = one_line_error(embed(path, parent / "out", tiny_model, "--scheduler", "tcp://127.0.0.1:9"))
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)
    assert str(parent / "out") in line and "operation not permitted (EPERM)" in line
    assert "no store was written, so there is nothing to resume" in line


def test_a_corpus_that_shrinks_mid_run_stops_the_job_and_the_store_resumes(tmp_path, tiny_model,
                                                                           scifact_docs, scheduler):
    docs = [dict(d, _id=f"{d['_id']}-{k}") for k in range(10) for d in scifact_docs]  # 4,000 docs
    corpus = write_jsonl(tmp_path / "corpus.jsonl", docs)
    whole = corpus.read_bytes()
    out = tmp_path / "out"
    proc = subprocess.Popen([*EMBEDLAB, "embed", str(corpus), "--out", str(out), "--model", str(tiny_model),
                             "--no-progress", "--partition-tokens", "8000", "--scheduler", scheduler],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not committed_partitions(out):  # a partition landed: the job is mid-run
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        os.truncate(corpus, len(whole) // 5)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    line = one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err))
    assert f"{corpus}: the corpus file shrank from {len(whole):,} to {len(whole) // 5:,} bytes" in line
    assert RESUMABLE in line
    assert Store(out).manifest().partitions and not Store(out).manifest().complete
    corpus.write_bytes(whole)  # the file is back: the same command finishes the store
    again = embed(corpus, out, tiny_model, "--partition-tokens", "8000", "--scheduler", scheduler)
    assert again.returncode == 0, again.stderr
    assert Store(out).verify() == []


def test_a_corpus_file_that_vanishes_or_is_replaced_while_read(tmp_path):
    lines = [{"_id": str(i), "text": f"document {i}"} for i in range(20_000)]
    for fmt in ("jsonl", "parquet"):
        for how in ("deleted", "replaced"):
            path = tmp_path / f"c.{fmt}"
            if fmt == "jsonl":
                write_jsonl(path, lines)
            else:
                pq.write_table(pa.Table.from_pylist(lines), path, row_group_size=1000)
            records = read_corpus(CorpusConfig(path=path))
            assert isinstance(next(records), Document)
            path.unlink()
            if how == "replaced":
                path.write_bytes(b"")
            with pytest.raises(EnvironmentFault) as e:
                list(records)
            assert e.value.path == str(path) and e.value.resumable
            assert ("vanished" if how == "deleted" else "replaced by another file") in str(e.value)


def test_a_txt_file_that_vanishes_before_it_is_read(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text(f"text {i}")
    records = read_corpus(CorpusConfig(path=tmp_path))
    assert next(records).doc_id == "0.txt"
    (tmp_path / "1.txt").unlink()
    with pytest.raises(EnvironmentFault, match=r"1.txt: cannot read the corpus file: no such file or "
                                               r"directory \(ENOENT\); the store is consistent"):
        list(records)


def test_a_fault_raised_on_a_worker_reaches_the_driver_whole():
    import pickle

    fault = EnvironmentFault("/x/part-00001.parquet", "cannot write: no space left on device (ENOSPC)", True)
    back = pickle.loads(pickle.dumps(fault))  # how Dask sends a task's exception to the client
    assert (back.path, back.reason, back.resumable, str(back)) == (fault.path, fault.reason, True, str(fault))
