"""Property-based fuzzing of the record path, bounded for CI (seconds); ``scripts/fuzz_records.py``
runs the same properties for as long as it is given and reports how many cases it tried.

Reader and chunker run without the encoder for speed; one end-to-end embed of a fuzzed file with
the tiny real encoder (``faults/test_hostile_corpus.py``) checks that every good record lands in
the store exactly once and every bad one in ``_rejects.jsonl``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedlab.chunking import Chunker

from .fuzzing import check_chunks, check_gzip, check_jsonl, check_parquet, jsonl_files, parquet_tables

CI = settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def chunker():
    from embedlab.encoder import describe_model, fast_tokenizer

    return Chunker(fast_tokenizer(describe_model("sentence-transformers/all-MiniLM-L6-v2").path),
                   chunk_tokens=32, overlap=4)


@CI
@given(data=jsonl_files())
def test_jsonl_reader_and_chunker_hold_the_contract_on_any_bytes(chunker, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        path.write_bytes(data)
        docs = check_jsonl(path, data)
    check_chunks(chunker, docs)


@CI
@given(data=jsonl_files(), cut=st.floats(0.05, 1.0), flip=st.one_of(st.none(), st.integers(0, 10**6)))
def test_gzip_jsonl_cut_or_damaged_anywhere(data, cut, flip):
    with tempfile.TemporaryDirectory() as tmp:
        check_gzip(Path(tmp) / "corpus.jsonl.gz", data, cut, flip)


@CI
@given(table=parquet_tables(), flip=st.one_of(st.none(), st.none(), st.integers(0, 10**6)))
def test_parquet_rows_of_any_type_and_damaged_files(table, flip):
    with tempfile.TemporaryDirectory() as tmp:
        check_parquet(Path(tmp) / "corpus.parquet", *table, flip)
