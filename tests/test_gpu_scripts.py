"""The GPU benchmark scripts' dry runs: the same code path as on the device, tiny sizes on the CPU,
so a lent GPU's minutes go to measuring. Checks the fields that ../shared/acceptance reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "benchmarks" / "gpu"


def _run(script: str, out: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(GPU / script), "--dry-run", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_encoder_dry_run_writes_the_fields_the_acceptance_check_reads(tmp_path):
    proc = _run("bench_gpu_encoder.py", tmp_path, "--models", "minilm", "--skip", "compile,queries",
                "--carry", str(tmp_path / "no-carry"), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "encode_gpu.json").read_text())
    assert doc["status"] == "done" and doc["dry_run"] is True
    assert not doc.get("errors"), doc.get("errors")
    assert "CPU" in doc["device"] and "H100" not in doc["device"]  # a dry run never passes for a GPU run
    assert {r["dtype"] for r in doc["rows"]} == {"bf16", "fp32"}  # fp16 is skipped on the CPU, with a reason
    assert any(s["dtype"] == "fp16" and "skipped" in s["status"] for s in doc["skipped"])
    for r in doc["rows"]:
        assert "minilm" in r["model"].lower() and r["batch"] >= 1
        assert r["chunks_per_s"] > 0 and 0 < r["mfu"] < 10
    assert {"minilm/bf16/chunks", "minilm/fp32/chunks"} <= set(doc["fits"])
    assert doc["vs_sentence_transformers_fp16"] > 0
    st = doc["sentence_transformers"]["minilm"]
    assert st["min_cos_to_st"] > 0.9999  # the same random weights give the same vectors in both
    variants = {v["variant"]: v for v in doc["variants"]}
    packed = next(v for k, v in variants.items() if k.startswith("embedlab's CUDA default: packed tokens"))
    assert packed["min_cos_to_default"] > 0.9999 and "not packed here" in packed["variant"]  # CPU: padded
    assert variants["pinned buffers, non-blocking copies, one sync per pass"]["min_cos_to_default"] > 0.9999
    assert variants["pinned + non-blocking + no mask on unpadded batches"]["min_cos_to_default"] > 0.9999
    assert "CUDA" in variants[next(k for k in variants if "CUDA graph" in k)]["status"]
    md = (tmp_path / "encode_gpu.md").read_text()
    assert "Dry run" in md and "| minilm | bf16 |" in md


@pytest.mark.slow
def test_e2e_dry_run_embeds_on_a_local_cluster_and_checks_codes_and_search(tmp_path):
    proc = _run("bench_gpu_e2e.py", tmp_path, "--workers", "1", timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "embed_gpu.json").read_text())
    assert doc["status"] == "done" and not doc.get("errors"), doc.get("errors")
    assert doc["gpu_codes_equal_cpu"] is True and doc["gpu_search_equal_cpu"] is True
    assert doc["chunks_per_s"] > 0 and doc["encoder_alone_chunks_per_s"] > 0
    assert all(r["status"] == "ok" and r["cluster"]["kind"] == "local-cpu" for r in doc["runs"])
