"""Codes written beside the vectors (``embed --codes``): made by the worker, equal to embedlab.ops."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import embedlab
from embedlab import ops
from embedlab.cli import app
from embedlab.codes import CodeSpec, calibrate, parse_codes, read_codes
from embedlab.store import Store, StoreMismatchError

from .conftest import write_jsonl

SIM = "sim:r_max=20000,b_half=16,dim=48"


def test_parse_codes_orders_and_refuses_unknown_kinds():
    assert parse_codes("int8, binary") == ("binary", "int8") and parse_codes("") == ()
    with pytest.raises(ValueError, match="float"):
        parse_codes("binary,float")


def test_encoder_makes_codes_equal_to_ops_on_its_vectors(encoder, scifact_docs):
    ids = encoder.tokenize([d["text"] for d in scifact_docs[:24]])
    ranges = calibrate(encoder.encode_ids(ids[:12]))
    spec = CodeSpec.of(("binary", "int8"), ranges)
    vectors, codes = encoder.encode_ids_coded(ids, spec, batch_size=5)  # several batches, length-sorted
    assert np.array_equal(vectors, encoder.encode_ids(ids, batch_size=5))
    assert np.array_equal(codes["binary"], ops.quantize_binary(vectors))
    assert np.array_equal(codes["int8"], ops.quantize_int8(vectors, ranges))
    assert codes["binary"].shape == (24, encoder.dim // 8) and codes["int8"].dtype == np.int8


def test_embed_writes_codes_with_one_calibration_per_store(tmp_path, scifact_docs):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", scifact_docs[:60])
    out = tmp_path / "out"
    opts = dict(model=SIM, partition_tokens=3000, split_bytes=20_000, progress=False, codes=("binary", "int8"))
    result = embedlab.embed(corpus, out, **opts)
    assert result.ok and result.splits >= 2 and result.partitions >= 3
    store = Store(out)
    assert store.verify() == [] and store.meta()["codes"] == ["binary", "int8"]
    ranges = np.load(store.int8_ranges_path)
    first = min(store.manifest().partitions)
    head = pq.read_table(store.root / store.manifest().partitions[first].parquet, columns=["vector"])
    assert np.array_equal(ranges, calibrate(np.stack(head.column("vector").to_numpy(zero_copy_only=False))))
    for path in store.parquet_files():
        table = pq.read_table(path)
        vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
        assert np.array_equal(read_codes(table, "binary"), ops.quantize_binary(vectors))
        assert np.array_equal(read_codes(table, "int8"), ops.quantize_int8(vectors, ranges))
    # a resume keeps the store's ranges; another choice of codes is another store
    assert embedlab.embed(corpus, out, **opts).partitions_encoded == 0
    assert np.array_equal(np.load(store.int8_ranges_path), ranges)
    with pytest.raises(StoreMismatchError, match="codes"):
        embedlab.embed(corpus, out, **{**opts, "codes": ("binary",)})


def test_cli_refuses_unknown_codes_and_codes_with_limit(tmp_path, scifact_docs):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", scifact_docs[:5])
    runner = CliRunner()
    bad = runner.invoke(app, ["embed", str(corpus), "--out", str(tmp_path / "a"), "--codes", "int4"])
    assert bad.exit_code == 2 and "int4" in bad.output
    limited = runner.invoke(app, ["embed", str(corpus), "--out", str(tmp_path / "b"), "--codes", "binary",
                                  "--limit", "3"])
    assert limited.exit_code == 2 and "limit" in limited.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
