"""Numerical faults (non-finite vectors) and safe defaults."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

import embedlab
from embedlab.config import EncodeConfig
from embedlab.encoder import Encoder
from embedlab.store import Store
from tests.conftest import write_jsonl


def test_only_the_overflowing_rows_are_reencoded_in_fp32_each_in_its_own_row(tmp_path, hot_model,
                                                                               scifact_docs):
    fp16 = Encoder(EncodeConfig(model=str(hot_model), dtype="fp16", device="cpu"))
    fp32 = Encoder(EncodeConfig(model=str(hot_model), device="cpu", dtype="fp32"))
    probe = fp16.encode_texts(["the zebra runs", "the horse runs"])
    assert np.isfinite(probe).all(1).tolist() == [False, True]  # the fault is real, and selective
    docs = [dict(d) for d in scifact_docs[:12]]
    for i in (2, 5, 9):  # a trigger word in the middle of three documents: one chunk of each
        words = docs[i]["text"].split()
        docs[i]["text"] = " ".join(words[:len(words) // 2] + ["zebra"] + words[len(words) // 2:])
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    r16 = embedlab.embed(corpus, tmp_path / "fp16", model=str(hot_model), dtype="fp16", progress=False,
                         partition_tokens=1000)
    assert r16.ok and "re-encoded" in r16.summary()
    t = pq.read_table(tmp_path / "fp16")
    ids, texts = t.column("chunk_id").to_pylist(), t.column("text").to_pylist()
    hot = {c for c, text in zip(ids, texts) if "zebra" in text.lower().split()}
    assert len(hot) == 3 and len(ids) > 20  # some rows overflow, most do not
    assert sorted(r16.reencoded_fp32) == sorted(hot)  # exactly those rows, not their partitions
    manifest = Store(tmp_path / "fp16").manifest()
    assert sorted(c for p in manifest.partitions.values() for c in p.reencoded_fp32) == sorted(hot)
    v16 = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    assert np.isfinite(v16).all()
    want32 = fp32.encode_texts(texts)  # each row against its own text's vector
    want16 = fp16.encode_texts(texts)
    for i, cid in enumerate(ids):
        want = want32[i] if cid in hot else want16[i]
        assert np.isfinite(want).all() and float(v16[i] @ want) >= 0.9999, cid


def test_remote_code_is_refused_unless_trusted(tmp_path, tiny_model):
    import shutil

    model = tmp_path / "custom"
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(cfg))
    (model / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    safe = Encoder(EncodeConfig(model=str(model), device="cpu"))  # the repo's code never runs
    assert type(safe.model).__module__ == "embedlab.bert"  # a plain BERT, built by embedlab
    with pytest.raises(SystemExit, match="remote code ran"):  # only when the user opts in
        Encoder(EncodeConfig(model=str(model), device="cpu", trust_remote_code=True))


def test_default_cluster_listens_on_loopback_only():
    from embedlab.cluster import connect
    from embedlab.config import ClusterConfig

    with connect(ClusterConfig(workers=1)) as (client, info):
        addresses = [client.scheduler.address, *client.scheduler_info()["workers"]]
        assert info.kind == "local-cpu"
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
        assert "127.0.0.1" in client.dashboard_link


def test_a_store_holds_no_pickle(tmp_path, tiny_model, scifact_docs):
    """Every file of a store is Parquet, FAISS, JSON or a plain numpy array (a split's id hashes,
    read with ``allow_pickle=False``), so reading one never unpickles."""
    corpus = write_jsonl(tmp_path / "c.jsonl", scifact_docs[:5])
    r = embedlab.embed(corpus, tmp_path / "s", model=str(tiny_model), progress=False)
    paths = [p for p in r.out.rglob("*") if p.is_file()]
    assert {p.suffix for p in paths} <= {".parquet", ".faiss", ".json", ".jsonl", ".npy"}
    for p in paths:
        if p.suffix == ".npy":
            assert not np.load(p, allow_pickle=False).dtype.hasobject
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in p.read_text().splitlines()]
        assert p.read_bytes()[:1] != b"\x80"  # the first byte of any pickle stream (PROTO)


def test_verify_cli_reports_problems_by_file_and_exit_status(tmp_path, tiny_model, scifact_docs):
    corpus = write_jsonl(tmp_path / "c.jsonl", scifact_docs[:20])
    r = embedlab.embed(corpus, tmp_path / "s", model=str(tiny_model), progress=False,
                       partition_tokens=1000)
    cli = [sys.executable, "-m", "embedlab.cli", "verify", str(r.out)]
    ok = subprocess.run(cli, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK")
    (r.out / "part-00001.parquet").write_bytes(b"PAR1 not really")
    (r.out / "_faiss" / ".part-00000.faiss.x.tmp").write_bytes(b"x")
    bad = subprocess.run([*cli, "--json"], capture_output=True, text=True)
    report = json.loads(bad.stdout)
    assert bad.returncode == 1 and not report["ok"] and len(report["problems"]) == 2
    assert any("part-00001.parquet: 15 bytes, its commit recorded" in p for p in report["problems"])
    assert any("stray temporary file" in p for p in report["problems"])
