from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from embedlab.index import faiss_ids
from embedlab.store import Manifest, PartitionEntry, Store, StoreMismatchError
from embedlab.storecheck import ShardChecksumError


def make_store(tmp_path, n=50, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    store = Store(tmp_path / "s")
    store.init({"model_sha256": "m", "dtype": "fp32", "dim": dim})
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"d{i // 3}#{i % 3}" for i in range(n)]
    cols = {"chunk_id": ids, "doc_id": [c.split("#")[0] for c in ids]}
    pq_sha, fs_sha = store.write_partition(0, cols, vecs)
    entry = PartitionEntry(index=0, rows=n, tokens=n, docs=len(set(cols["doc_id"])), digest="x",
                           parquet="part-00000.parquet", faiss="_faiss/part-00000.faiss",
                           parquet_sha256=pq_sha, faiss_sha256=fs_sha)
    store.write_manifest(Manifest(partitions={0: entry}, complete=True))
    return store, vecs, ids


def test_faiss_ids_are_deterministic_positive_and_distinct():
    ids = [f"doc{i}#{j}" for i in range(2000) for j in range(3)]
    a, b = faiss_ids(ids), faiss_ids(list(ids))
    assert np.array_equal(a, b) and a.dtype == np.int64
    assert (a >= 0).all() and len(np.unique(a)) == len(ids)


def test_shard_search_maps_back_to_chunk_ids(tmp_path):
    store, vecs, ids = make_store(tmp_path)
    assert store.verify() == []
    index = faiss.read_index(str(store.faiss_path(0)))
    D, I = index.search(vecs[:5], 1)
    back = dict(zip(faiss_ids(ids).tolist(), ids))
    assert [back[i] for i in I[:, 0]] == ids[:5]
    assert np.allclose(D[:, 0], 1.0, rtol=1e-5)


def test_writes_are_byte_identical(tmp_path):
    s1, *_ = make_store(tmp_path / "a")
    s2, *_ = make_store(tmp_path / "b")
    for p in ("part-00000.parquet", "_faiss/part-00000.faiss"):
        assert (s1.root / p).read_bytes() == (s2.root / p).read_bytes()
    assert s1.manifest().to_json() == s2.manifest().to_json()  # the log's records carry times and claims


def test_only_doc_id_is_dictionary_encoded(tmp_path):
    """All-distinct columns (chunk ids, vectors) are written plain: a dictionary there is built and
    thrown away (benchmarks/bench_parquet_write.py); doc_id, which repeats, keeps one."""
    import pyarrow.parquet as pq

    store, vecs, ids = make_store(tmp_path)
    meta = pq.ParquetFile(store.root / "part-00000.parquet").metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema.split(".")[0]: meta.column(i).encodings
                 for i in range(meta.num_columns)}
    assert set(encodings) == {"chunk_id", "doc_id", "vector"}
    assert "RLE_DICTIONARY" in encodings["doc_id"]
    assert not any("DICTIONARY" in e for c in ("chunk_id", "vector") for e in encodings[c])
    assert pq.read_table(store.root / "part-00000.parquet").column("chunk_id").to_pylist() == ids


def test_store_folder_opens_as_one_parquet_dataset(tmp_path):
    import pyarrow.parquet as pq

    store, _, ids = make_store(tmp_path)
    (store.root / ".part-00001.parquet.x.tmp").write_bytes(b"half")
    assert pq.read_table(store.root).column("chunk_id").to_pylist() == ids


@pytest.mark.parametrize("damage,expect", [
    ("truncate_parquet", "bytes, its commit recorded"),
    ("flip_faiss", "part-00000.faiss: sha256 differs"),
    ("delete_entry", "part-00000.parquet: not in the manifest"),
    ("stray_tmp", "stray temporary file"),
    ("delete_parquet", "part-00000.parquet: missing"),
])
def test_verify_names_each_problem_by_file_and_reason(tmp_path, damage, expect):
    store, *_ = make_store(tmp_path)
    pq_path, fs_path = store.parquet_path(0), store.faiss_path(0)
    if damage == "truncate_parquet":
        pq_path.write_bytes(pq_path.read_bytes()[:-100])
    elif damage == "flip_faiss":
        data = bytearray(fs_path.read_bytes())
        data[200] ^= 0xFF
        fs_path.write_bytes(bytes(data))
    elif damage == "delete_entry":
        store.write_manifest(Manifest(partitions={}, complete=True))
    elif damage == "stray_tmp":
        (store.root / ".part-00003.parquet.abc.tmp").write_bytes(b"x")
    elif damage == "delete_parquet":
        pq_path.unlink()
    problems = store.verify()
    assert any(expect in p for p in problems), problems
    if damage == "flip_faiss":  # same size: opening trusts it; loading the shard checks its sha256
        store.require_verified()
        with pytest.raises(ShardChecksumError, match="part-00000.faiss: sha256 .* differs from the committed"):
            store.load_shard(store.manifest().partitions[0])
        return
    with pytest.raises(Exception, match="(?s)does not verify.*embedlab verify"):
        store.require_verified()


def test_deep_verify_catches_ids_that_do_not_match(tmp_path):
    import shutil

    from embedlab.files import sha256_file

    store, vecs, ids = make_store(tmp_path)
    other, *_ = make_store(tmp_path / "other")
    other.write_partition(0, {"chunk_id": ids[::-1], "doc_id": ids}, vecs)
    shutil.copy(other.faiss_path(0), store.faiss_path(0))  # a shard of another partition
    m = store.manifest()
    m.partitions[0].faiss_sha256 = sha256_file(store.faiss_path(0))
    store.write_manifest(m)
    assert any("FAISS ids do not match" in p for p in store.verify())


def test_refuses_to_mix_settings_and_foreign_folders(tmp_path):
    store, *_ = make_store(tmp_path)
    with pytest.raises(StoreMismatchError, match="dtype: store has 'fp32', this run has 'fp16'"):
        Store(store.root).init({"model_sha256": "m", "dtype": "fp16", "dim": 8})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(StoreMismatchError, match="not an embedlab store"):
        Store(other).init({"model_sha256": "m"})


def test_manifest_round_trips(tmp_path):
    store, *_ = make_store(tmp_path)
    m = store.manifest()
    assert Manifest.from_json(json.loads(json.dumps(m.to_json()))).to_json() == m.to_json()
    assert m.rows == 50
