from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from embedlab.config import EncodeConfig
from embedlab.experiments.sweeps import (SweepConfig, fit_saturation, read_sweep_fits, run_sweep,
                                         unsupported_reason)
from embedlab.planner import r_of_b

BATCHES = 2.0 ** np.arange(12)  # 1 .. 2048


@pytest.mark.parametrize("seed", range(5))
def test_fit_recovers_r_max_and_b_half_from_noisy_rates(seed):
    rng = np.random.default_rng(seed)
    r = r_of_b(BATCHES, 900, 96) * (1 + 0.03 * rng.standard_normal(BATCHES.size))
    fit = fit_saturation(BATCHES, r)
    assert fit.r_max == pytest.approx(900, rel=0.05)
    assert fit.b_half == pytest.approx(96, rel=0.05)
    assert fit.r_max_se is not None and fit.b_half_se is not None
    assert 0.005 < fit.rel_rms < 0.06
    assert fit.knee == fit.curve.knee(0.9) and fit.points == 12 and fit.max_batch == 2048


def test_fit_on_exact_rates_and_its_knee():
    fit = fit_saturation(BATCHES, r_of_b(BATCHES, 900, 96))
    assert fit.r_max == pytest.approx(900, rel=1e-6) and fit.b_half == pytest.approx(96, rel=1e-6)
    assert fit.rel_rms < 1e-6
    assert fit.knee in (864, 865)  # ceil(9 b_half): 900 * 864 / (864 + 96) = 810 = 0.9 r_max
    assert fit.knee_measured == 1024  # smallest swept batch at or above 810 chunks/s


def test_fit_needs_two_positive_points():
    with pytest.raises(ValueError):
        fit_saturation([4], [10.0])
    with pytest.raises(ValueError):
        fit_saturation([1, 2], [10.0, 0.0])


def test_unsupported_dtypes_have_reasons():
    assert unsupported_reason("fp32", "cpu") is None
    assert unsupported_reason("bf16", "cpu") is None
    assert "int4" in unsupported_reason("int4", "cpu")
    assert "GPU" in unsupported_reason("fp16", "cpu")
    assert "CPU only" in unsupported_reason("int8", "cuda")


def test_config_sorts_batches_and_validates():
    cfg = SweepConfig(batch_sizes=(8, 1, 2, 8), dtypes=("fp32",))
    assert cfg.batch_sizes == (1, 2, 8)
    with pytest.raises(ValueError):
        SweepConfig(batch_sizes=(0, 1))
    with pytest.raises(ValueError):
        SweepConfig(repeats=0)
    with pytest.raises(ValueError, match="overlap"):
        SweepConfig(chunk_tokens=64, overlap=32)


class FakeEncoder:
    """Takes (b + b_half) / r_max seconds per batch, so r(b) is known; runs out of memory at b >= oom.
    Batches last 12 ms or more, so a sleep's overshoot on a loaded machine (about a millisecond)
    stays well inside the fit's tolerance."""

    r_max, b_half, oom = 400.0, 4.0, 16

    def __init__(self, cfg):
        self.cfg = cfg

    def encode_ids(self, ids, batch_size):
        if batch_size >= self.oom:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        for _ in range(0, len(ids), batch_size):
            time.sleep((batch_size + self.b_half) / self.r_max)
        return np.zeros((len(ids), 4), np.float32)


def test_sweep_fits_the_curve_and_stops_at_out_of_memory(monkeypatch):
    monkeypatch.setattr("embedlab.encoder.Encoder", FakeEncoder)
    ids = [np.arange(10 + i, dtype=np.int32) for i in range(24)]
    cfg = SweepConfig(batch_sizes=(1, 2, 4, 8, 16, 32), dtypes=("fp32", "int4"), warmup=1, repeats=3,
                      encode=EncodeConfig(device="cpu"))
    res = run_sweep(cfg, ids=ids)
    status = [(r["dtype"], r["batch"], r["status"]) for r in res.rows]
    assert status == [("fp32", 1, "ok"), ("fp32", 2, "ok"), ("fp32", 4, "ok"), ("fp32", 8, "ok"),
                      ("fp32", 16, "oom"), ("int4", None, "skipped")]
    assert "larger batches not tried" in res.rows[4]["note"]
    assert [r["chunks"] for r in res.rows[:4]] == [24, 24, 24, 24]
    fit = res.fits["fp32"]
    assert fit.r_max == pytest.approx(400, rel=0.25) and fit.b_half == pytest.approx(4, rel=0.35)
    assert set(res.fits) == {"fp32"}


@pytest.fixture
def one_thread():
    """One torch thread (steady on a shared CPU); the process's setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


def test_sweep_on_real_scifact_chunks(scifact_dir, tmp_path, one_thread):
    cfg = SweepConfig(corpus=scifact_dir / "corpus.jsonl.gz", docs=10, chunks=8, chunk_tokens=64, overlap=8,
                      batch_sizes=(1, 2, 4), dtypes=("fp32", "int4"), warmup=1, repeats=2,
                      encode=EncodeConfig(device="cpu", torch_threads=one_thread, compile=False))
    res = run_sweep(cfg)
    ok = [r for r in res.rows if r["status"] == "ok"]
    assert [r["batch"] for r in ok] == [1, 2, 4]
    assert len({r["tokens"] for r in ok}) == 1 and all(r["chunks"] == 8 for r in ok)
    for r in ok:
        assert r["chunks_per_s_min"] <= r["chunks_per_s"] <= r["chunks_per_s_max"]
        assert r["tokens_per_s"] > r["chunks_per_s"] > 0
        assert r["peak_mem_mb"] > 50 and r["mem_kind"].startswith("rss")
    assert ok[0]["pad_frac"] == 0.0 and ok[0]["speedup"] == 1.0
    skipped = [r for r in res.rows if r["status"] == "skipped"]
    assert [r["dtype"] for r in skipped] == ["int4"] and skipped[0]["note"]
    assert ok[0]["compiled"] is False and ok[0]["threads"] == 1
    assert res.fits["fp32"].knee >= 1
    assert "skipped: the encoder has no int4 dtype" in res.table() and "fp32" in res.fits_table()
    csv_path, json_path, png_path = res.save(tmp_path)
    with open(csv_path) as fh:
        assert len(list(csv.DictReader(fh))) == len(res.rows)
    assert json.loads(json_path.read_text())["machine"]["cores"] >= 1
    assert read_sweep_fits(json_path) == res.fits
    assert png_path.read_bytes()[:4] == b"\x89PNG"


def test_cli_sweep_writes_files_that_plan_reads(small_corpus, tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "embedlab.cli"]
    args = ["--data", str(small_corpus), "--docs", "4", "--chunks", "4", "--chunk-tokens", "64",
            "--overlap", "8", "--batch-sizes", "1,2", "--dtypes", "fp32,int4", "--repeats", "1",
            "--warmup", "0", "--device", "cpu", "--threads", "1", "--no-compile", "--out", str(out)]
    p = subprocess.run([*cmd, "sweep", *args], check=False, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "skipped: the encoder has no int4 dtype" in p.stdout and "r_max" in p.stdout
    assert {f.name for f in out.iterdir()} == {"sweep.csv", "sweep.json", "sweep.png"}
    p = subprocess.run([*cmd, "plan", "--docs", "1e6", "--from-sweep", str(out / "sweep.json")],
                       check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "(fp32, " in p.stdout and "chunks      1,000,000" in p.stdout
