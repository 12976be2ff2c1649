"""The embed command's whole-job errors: one line, no traceback, the file named, exit 1, and
before any cluster starts (each run points at a scheduler address where nothing listens, so a
run that tried to reach a cluster would fail with another message)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

NO_CLUSTER = "tcp://127.0.0.1:9"


def cases(tmp: Path) -> dict[str, tuple[list[str], str, str]]:
    """name -> (embed arguments, the path the message must name, a fragment of the message)."""
    (tmp / "empty.jsonl").write_bytes(b"")
    (tmp / "plain.jsonl.gz").write_bytes(b'{"_id": "a", "text": "not gzip"}\n')
    (tmp / "header.jsonl.gz").write_bytes(gzip.compress(b'{"_id": "a", "text": "x"}\n')[:10])
    (tmp / "broken.parquet").write_bytes(b"PAR1 this is not a parquet file")
    pq.write_table(pa.table({"_id": ["a"], "body": ["x"]}), tmp / "nocol.parquet")
    (tmp / "c.csv").write_text("a,b\n")
    (tmp / "bad.jsonl").write_bytes(b'{"_id": "a"}\n{"_id": 1.5, "text": "x"}\n')
    (tmp / "good.jsonl").write_text('{"_id": "a", "text": "fine"}\n')
    (tmp / "notastore").mkdir(exist_ok=True)
    (tmp / "notastore" / "data.txt").write_text("someone's files")
    out = str(tmp / "out")
    return {
        "missing": ([str(tmp / "missing.jsonl"), "--out", out], "missing.jsonl",
                    "corpus path does not exist"),
        "empty": ([str(tmp / "empty.jsonl"), "--out", out + "1"], "empty.jsonl",
                  "no document could be embedded"),
        "not gzip": ([str(tmp / "plain.jsonl.gz"), "--out", out + "2"], "plain.jsonl.gz", "not gzip data"),
        "gzip header only": ([str(tmp / "header.jsonl.gz"), "--out", out + "3"], "header.jsonl.gz",
                             "ends before any line"),
        "broken parquet": ([str(tmp / "broken.parquet"), "--out", out + "4"], "broken.parquet",
                           "not a readable Parquet file"),
        "parquet column": ([str(tmp / "nocol.parquet"), "--out", out + "5"], "nocol.parquet",
                           "no column 'text'"),
        "unknown format": ([str(tmp / "c.csv"), "--out", out + "6"], "c.csv", "cannot tell the format"),
        "only bad records": ([str(tmp / "bad.jsonl"), "--out", out + "7"], "_rejects.jsonl",
                             "no document could be embedded (2 record(s) rejected"),
        "not a store": ([str(tmp / "good.jsonl"), "--out", str(tmp / "notastore")], "notastore",
                        "is not empty and is not an embedlab store"),
    }


def test_whole_job_errors_are_one_line_naming_the_file_before_any_cluster(tmp_path):
    runs = {}
    for name, (args, _, _) in cases(tmp_path).items():
        # a corpus of only bad records is known as such once the workers have read it: that one
        # runs its own cluster; every other case fails before any (nothing listens at NO_CLUSTER)
        where = [] if name == "only bad records" else ["--scheduler", NO_CLUSTER]
        runs[name] = subprocess.Popen([sys.executable, "-m", "embedlab.cli", "embed", *args, "--no-progress",
                                       *where],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    expected = cases(tmp_path)
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=300)
        _, path, fragment = expected[name]
        lines = [x for x in err.splitlines() if x.strip()]
        assert proc.returncode == 1, (name, err)
        assert len(lines) == 1 and lines[0].startswith("embedlab: error: "), (name, err)
        assert path in lines[0] and fragment in lines[0], (name, lines[0])
