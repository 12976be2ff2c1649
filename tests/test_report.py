"""Reports (tables, tidy CSV, the machine line) and the benchmark harness in benchmarks/common.py."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest

from embedlab.hardware import machine_info
from embedlab.report import csv_text, machine_line, machine_slug, markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402


def test_markdown_table_compact_and_aligned():
    assert markdown_table(["a", "bb"], [[1, "x"], [22, None]]).splitlines() == [
        "| a | bb |", "|---|---|", "| 1 | x |", "| 22 | None |"]
    assert markdown_table(["GPUs", "cost"], [[1, "12.5"], [128, "3.0"]], align=True).splitlines() == [
        "| GPUs | cost |", "|-----:|-----:|", "|    1 | 12.5 |", "|  128 |  3.0 |"]
    from embedlab.planner import markdown_table as planner_table

    assert planner_table(["x"], [[1]]) == markdown_table(["x"], [[1]], align=True)


def test_csv_text_is_tidy():
    rows = [{"dim": 384, "method": "int8", "ndcg@10": 0.64}, {"dim": 64, "pq_nlist": 4, "ndcg@10": None}]
    got = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert list(got[0]) == ["dim", "method", "ndcg@10", "pq_nlist"]  # every key, first-seen order
    assert got[1] == {"dim": "64", "method": "", "ndcg@10": "", "pq_nlist": "4"}
    assert csv_text(rows, ["method", "dim"]).splitlines() == ["method,dim", "int8,384", ",64"]


def test_machine_line_and_slug():
    info = {"cpu": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", "cores": 16, "memory_gib": 125.7,
            "python": "3.11.7", "torch": "2.13.0", "threads": 16, "device": "cpu", "faiss_threads": 4}
    assert machine_line(info) == ("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz, 16 cores, 126 GiB; "
                                  "Python 3.11.7, torch 2.13.0 (16 threads), device cpu, FAISS threads 4")
    assert machine_slug(info) == "intel-xeon-platinum-8480-16c"
    gpu = {**info, "device": "cuda:0", "gpu": "NVIDIA H100 80GB HBM3"}
    assert "GPU NVIDIA H100 80GB HBM3" in machine_line(gpu) and machine_slug(gpu) == "nvidia-h100-80gb-hbm3"
    here = machine_info()  # no device: the machine alone, without torch
    assert here["cores"] >= 1 and "torch" not in here and machine_line(here).startswith(here["cpu"])


def test_spread_timed_and_in_turn():
    s = common.Spread([3.0, 1.0, 2.0])
    assert (s.median, s.lo, s.hi) == (2.0, 1.0, 3.0) and s.range(".1f") == "1.0-3.0"
    assert s.pm(".2f") == "2.00 ± 0.82" and common.Spread([5.0]).pm() == "5.0"
    assert s.map(lambda x: 6 / x).range(".0f") == "2-6"
    calls = []
    seconds, last = common.timed(lambda: calls.append(1) or len(calls), repeats=3, warmup=2)
    assert len(seconds.values) == 3 and last == 5 and len(calls) == 5
    order = []
    runs = common.in_turn({"a": lambda: order.append("a") or len(order), "b": lambda: order.append("b") or 0}, 2)
    assert order == ["a", "b", "a", "b"] and runs == {"a": [1, 3], "b": [0, 0]}
    with pytest.raises(ValueError):
        common.timed(lambda: None, repeats=0)


def test_results_are_named_by_machine_and_date(tmp_path):
    r = common.Results("bench_x", tmp_path, device=None)
    path = r.write_markdown("Title", "What was measured.", markdown_table(["a"], [[1]]), "cmd --flag")
    assert path.parent == tmp_path and path.name.startswith(f"bench_x_{machine_slug(r.machine)}_20")
    text = path.read_text()
    assert text.startswith("# Title\n\nWhat was measured.\n\n| a |") and "Command: cmd --flag" in text
    assert f"Machine: {machine_line(r.machine)}" in text and "load average" in text
    rows = list(csv.DictReader(io.StringIO(r.write_csv([{"x": 1}]).read_text())))
    assert rows == [{"x": "1", "machine": machine_line(r.machine)}]
    assert common.parser("doc").parse_args(["--results", str(tmp_path)]).results == tmp_path


def test_every_benchmark_script_imports_and_parses_its_options():
    """A benchmark whose import broke (a harness function renamed under it) is found here, not on the
    day its numbers are needed: each script's --help runs in a fresh process."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    scripts = sorted((root / "benchmarks").glob("bench_*.py"))
    assert len(scripts) >= 10
    for script in scripts:
        out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                             timeout=120, cwd=root, env={**__import__("os").environ, "PYTHONPATH": str(root)})
        assert out.returncode == 0 and "usage" in out.stdout.lower(), f"{script.name}: {out.stderr[-800:]}"
