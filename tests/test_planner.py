from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from embedlab.plan_render import render_deadline, render_sizing
from embedlab.planner import (Curve, Job, fleet, fleet_sweep, gpus_for_deadline, parse_duration, parse_ints,
                              r_of_b, sizing, solve_deadline, stream_plan)

REF = Job(docs=1e9, chunks_per_doc=6, price=1.10)
CURVE = Curve(r_max=900, b_half=96)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedlab.cli", *args], check=False,
                          capture_output=True, text=True, timeout=120)


def test_reference_sizing():
    s = sizing(REF, rate=800)
    assert s.chunks == 6_000_000_000
    assert round(s.gpu_hours) == 2083 and round(s.cost) == 2292
    walls = [round(r.wall_hours, 1) for r in fleet_sweep(REF, 800, [8, 64, 256, 1024, 4096])]
    assert walls == [260.4, 32.6, 8.1, 2.0, 0.5]
    assert fleet(REF, 800, 8).wall_hours == pytest.approx(6e9 / (800 * 8) / 3600)


def test_reference_rate_curve():
    assert [round(r_of_b(b, 900, 96)) for b in (8, 32, 128, 512, 2048)] == [69, 225, 514, 758, 860]
    assert np.round(CURVE.rate(np.array([8, 32, 128, 512, 2048]))).tolist() == [69, 225, 514, 758, 860]


def test_without_overhead_every_fleet_costs_the_same_and_scales_perfectly():
    for row in fleet_sweep(REF, 800, [1, 8, 4096]):
        assert row.cost == pytest.approx(sizing(REF, 800).cost)
        assert row.speedup == pytest.approx(row.gpus) and row.efficiency == pytest.approx(1.0)


def test_start_up_overhead_is_billed_per_worker():
    job = Job(docs=1e9, chunks_per_doc=6, price=1.10, overhead_s=600)
    rows = fleet_sweep(job, 800, [8, 64, 4096])
    for row in rows:
        assert row.wall_hours == pytest.approx(600 / 3600 + 6e9 / (800 * row.gpus) / 3600)
        assert row.gpu_hours == pytest.approx(row.gpus * row.wall_hours)
    assert [r.cost for r in rows] == sorted(r.cost for r in rows)
    assert rows[0].efficiency > rows[-1].efficiency


@pytest.mark.parametrize("b_half", [0.0, 3.3, 96, 1000])
def test_knee_and_batch_for_rate_match_a_scan(b_half):
    curve = Curve(r_max=900, b_half=b_half)
    scan = next(b for b in range(1, 100_000) if curve.rate(b) >= 0.9 * 900 * (1 - 1e-12))
    assert curve.knee() == scan
    for target in (1.0, 100.0, 450.0, 899.0):
        b = curve.batch_for_rate(target)
        assert curve.rate(b) >= target * (1 - 1e-12)
        assert b == 1 or curve.rate(b - 1) < target
    assert Curve(r_max=900, b_half=96).knee() == 864
    with pytest.raises(ValueError, match="r_max"):
        curve.batch_for_rate(900)


def test_gpus_for_deadline_is_the_smallest_fleet():
    rng = np.random.default_rng(0)
    for _ in range(20):
        job = Job(docs=float(rng.integers(1e3, 1e7)), chunks_per_doc=float(rng.uniform(1, 8)),
                  overhead_s=float(rng.uniform(0, 300)))
        rate, deadline = float(rng.uniform(10, 1000)), float(rng.uniform(400, 20000))
        g = gpus_for_deadline(job, rate, deadline)
        assert fleet(job, rate, g).wall_hours * 3600 <= deadline * (1 + 1e-9)
        assert g == 1 or fleet(job, rate, g - 1).wall_hours * 3600 > deadline


def test_solve_deadline_reference():
    plan = solve_deadline(REF, parse_duration("2h"), CURVE, max_batch=2048)
    assert plan.gpus == 970  # 6e9 / (859.7 * 7200) = 969.3
    assert plan.batch <= 2048 and plan.wall_hours <= 2.0
    assert fleet(REF, CURVE.rate(2048), 969).wall_hours > 2.0
    assert fleet(REF, CURVE.rate(plan.batch - 1), 970).wall_hours > 2.0
    assert plan.rate == pytest.approx(CURVE.rate(plan.batch))
    assert "970 GPUs" in render_deadline(plan)
    fixed = solve_deadline(REF, 7200, 800.0)
    assert fixed.batch is None and fixed.gpus == math.ceil(6e9 / (800 * 7200))


def test_deadline_shorter_than_start_up_is_refused():
    with pytest.raises(ValueError, match="start-up"):
        gpus_for_deadline(Job(docs=10, overhead_s=600), 100, 300)


def test_streaming_plan():
    p = stream_plan(REF, 0.005, CURVE, stream_batch=32, bulk_batch=2048)
    assert p.new_chunks_per_day == pytest.approx(3e7)
    assert p.load == pytest.approx(3e7 / 86400)
    assert p.stream_rate == pytest.approx(225)
    assert p.standing_gpus == 2 and p.utilisation == pytest.approx(p.load / 450)
    assert p.stream_cost_week == pytest.approx(2 * 168 * 1.10)
    assert p.reembed_gpu_hours_week == pytest.approx(6e9 / CURVE.rate(2048) / 3600)
    assert p.breakeven_growth == pytest.approx(225 / (7 * CURVE.rate(2048)))
    at = stream_plan(REF, p.breakeven_growth, CURVE, 32, 2048)
    weekly_stream_work = 7 * at.new_chunks_per_day / at.stream_rate / 3600
    assert weekly_stream_work == pytest.approx(at.reembed_gpu_hours_week)


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("3600s", 3600), ("1.5h", 5400),
                                           ("1d", 86400), ("1h30m", 5400), ("120", 120), (" 2H ", 7200)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2 hours", "h", "-1h", "2h x"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_ints():
    assert parse_ints("8,64,256") == [8, 64, 256]
    assert parse_ints("1,2,4,...,2048") == [2**i for i in range(12)]
    assert parse_ints("1, 4, ..., 100") == [1, 4, 16, 64, 100]
    for bad in ("1,...,8", "1,2,...", "a,b"):
        with pytest.raises(ValueError):
            parse_ints(bad)


def test_render_sizing_has_the_reference_figures():
    text = render_sizing(REF, sizing(REF, 800), fleet_sweep(REF, 800, [8, 64, 256, 1024, 4096]))
    for want in ("6,000,000,000", "2,083", "$2,292", "260.4", "32.6", "8.1", "0.5"):
        assert want in text


def test_cli_plan_reference_table():
    p = run_cli("plan", "--docs", "1e9", "--chunks-per-doc", "6", "--rate", "800", "--price", "1.10",
                "--gpus", "8,64,256,1024,4096")
    assert p.returncode == 0, p.stderr
    for want in ("6,000,000,000", "2,083", "2,292", "260.4", "32.6", "8.1", "0.5"):
        assert want in p.stdout


def test_cli_plan_deadline_and_streaming():
    p = run_cli("plan", "--docs", "1e9", "--chunks-per-doc", "6", "--price", "1.10", "--deadline", "2h",
                "--rmax", "900", "--bhalf", "96", "--max-batch", "2048", "--growth", "0.005",
                "--stream-batch", "32")
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-3]
    assert last.startswith("deadline 2.0 h: 970 GPUs at batch ")
    assert "859.7 chunks/s" in p.stdout  # r(2048): the rate of the sizing table and the re-embed
    assert "standing fleet 2 GPUs at batch 32" in p.stdout and "break-even growth 3.74%/day" in p.stdout


def test_cli_plan_json_and_from_sweep(tmp_path):
    from embedlab.experiments.sweeps import SweepConfig, SweepResult, fit_saturation

    b = [8, 32, 128, 512, 2048]
    fit = fit_saturation(b, [float(r_of_b(x, 900, 96)) for x in b])
    path = SweepResult(config=SweepConfig(), rows=[], fits={"bf16": fit}, machine={"cpu": "test"}).to_json(
        tmp_path / "sweep.json")
    p = run_cli("plan", "--docs", "1e9", "--chunks-per-doc", "6", "--price", "1.10", "--deadline", "2h",
                "--from-sweep", str(path), "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["deadline"]["gpus"] == 970 and out["deadline"]["max_batch"] == 2048
    assert out["curve"]["r_max"] == pytest.approx(900, rel=1e-3)


@pytest.mark.parametrize("args", [["--docs", "1e9"], ["--docs", "1e9", "--rmax", "900"],
                                  ["--docs", "1e9", "--rate", "800", "--deadline", "soon"],
                                  ["--docs", "-1", "--rate", "800"]])
def test_cli_plan_bad_usage_exits_2(args):
    p = run_cli("plan", *args)
    assert p.returncode == 2 and "error" in p.stderr
