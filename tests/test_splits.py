"""Split planning and reading: every record exactly once, whatever the split sizes."""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest

from embedlab.splits import (RawRecord, SplitError, plan_splits, read_split, settings_digest,
                             txt_doc_id)

DATA = Path(os.environ.get("EMBEDLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def lines_of(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        out.append((pos, data[pos:end]))
        pos = end
    return out


def read_all(path: Path, split_bytes: int) -> list[RawRecord]:
    return [r for s in plan_splits(str(path), split_bytes=split_bytes) for r in read_split(s)]


def random_jsonl(rng: random.Random) -> bytes:
    parts = []
    for i in range(rng.randint(0, 40)):
        kind = rng.random()
        if kind < 0.1:
            parts.append(b"\n")  # a blank line
        elif kind < 0.2:
            parts.append(b"\r\n")
        else:
            text = "x" * rng.choice([0, 1, 5, 50, 300]) + "\u00e9\u4e2d"
            end = b"\r\n" if rng.random() < 0.3 else b"\n"
            parts.append(json.dumps({"_id": i, "text": text}, ensure_ascii=False).encode() + end)
    data = b"".join(parts)
    if data and rng.random() < 0.5:
        data = data.rstrip(b"\r\n")  # no line end after the last line
    return data


def test_union_of_splits_equals_a_sequential_read_for_random_files_and_split_sizes(tmp_path):
    rng = random.Random(7)
    path = tmp_path / "c.jsonl"
    for trial in range(80):
        data = random_jsonl(rng)
        path.write_bytes(data)
        want = lines_of(data)
        for split_bytes in {1, 2, 3, 7, 64, 333, rng.randint(1, len(data) + 5), len(data) + 1}:
            if len(data) > 300 * split_bytes:  # keep the test fast: at most ~300 splits a file
                continue
            got = [(r.key, r.data) for r in read_all(path, split_bytes)]
            assert got == want, (trial, split_bytes)


def test_split_boundaries_on_line_starts_line_ends_and_inside_lines(tmp_path):
    data = b'{"a":1}\n{"b":2}\r\n\n{"c":3}'
    path = tmp_path / "c.jsonl"
    path.write_bytes(data)
    want = lines_of(data)
    for split_bytes in range(1, len(data) + 2):
        splits = plan_splits(str(path), split_bytes=split_bytes)
        assert splits[0].start == 0 and splits[-1].end == len(data)
        assert all(a.end == b.start for a, b in zip(splits, splits[1:]))
        got = [(r.key, r.data) for s in splits for r in read_split(s)]
        assert got == want


def test_line_numbers_follow_from_per_split_counts(tmp_path):
    data = b"".join(b'{"_id": %d}\n' % i if i % 5 else b"\n" for i in range(200))
    path = tmp_path / "c.jsonl"
    path.write_bytes(data)
    line, numbered = 1, []
    for s in plan_splits(str(path), split_bytes=97):
        recs = list(read_split(s))
        numbered += [(line + i, r.data) for i, r in enumerate(recs)]
        line += len(recs)  # what a worker reports for its split
    assert numbered == list(enumerate(data.splitlines(keepends=True), start=1))


def test_empty_file_is_one_split_with_no_records(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    splits = plan_splits(str(path), split_bytes=10)
    assert len(splits) == 1 and list(read_split(splits[0])) == []


def test_gzip_is_one_split_per_file(tmp_path):
    data = b"".join(b'{"_id": %d, "text": "t"}\n' % i for i in range(500))
    with gzip.open(tmp_path / "a.jsonl.gz", "wb") as fh:
        fh.write(data)
    (tmp_path / "b.jsonl").write_bytes(data)
    splits = plan_splits(str(tmp_path), split_bytes=100)
    gz = [s for s in splits if s.kind == "jsonl.gz"]
    assert len(gz) == 1 and len(splits) > 10
    assert [(r.key, r.data) for r in read_split(gz[0])] == lines_of(data)


def test_keys_depend_on_files_and_settings_only(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"_id": 1}\n' * 100)
    a = [s.key for s in plan_splits(str(path), split_bytes=64, settings={"overlap": 32})]
    b = [s.key for s in plan_splits(str(path), split_bytes=64, settings={"overlap": 32})]
    c = [s.key for s in plan_splits(str(path), split_bytes=64, settings={"overlap": 16})]
    assert a == b and len(set(a)) == len(a) and not set(a) & set(c)
    os.utime(path, ns=(1, 1))  # same bytes, another version: a changed file is planned anew
    d = [s.key for s in plan_splits(str(path), split_bytes=64, settings={"overlap": 32})]
    assert not set(a) & set(d)
    assert settings_digest(None) == "" and settings_digest({"a": 1}) == settings_digest({"a": 1})


def test_parquet_splits_by_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"_id": str(i), "text": f"doc {i} " * (i % 7 + 1)} for i in range(1000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet", row_group_size=64)
    for split_bytes in (1, 2000, 10**9):
        splits = plan_splits(str(tmp_path / "c.parquet"), split_bytes=split_bytes)
        got = [(r.key, r.data) for s in splits for r in read_split(s, batch_rows=50)]
        assert got == list(enumerate(rows))
    assert len(plan_splits(str(tmp_path / "c.parquet"), split_bytes=1)) == 16  # one per row group


def test_txt_folder_splits_by_file_lists(tmp_path):
    root = tmp_path / "docs"
    for i in range(30):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"f{i:02d}.txt").write_bytes(b"word " * (i + 1))
    want = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.txt"))
    for split_bytes in (1, 100, 10**6):
        splits = plan_splits(str(root), split_bytes=split_bytes)
        recs = [(s, r) for s in splits for r in read_split(s)]
        assert [r.key for _, r in recs] == list(range(30))
        assert [txt_doc_id(s, r) for s, r in recs] == want
        assert all(r.data == (root / txt_doc_id(s, r)).read_bytes() for s, r in recs)


def test_fsspec_url_reads_like_a_local_file(tmp_path):
    import fsspec

    data = b"".join(b'{"_id": %d}\r\n' % i for i in range(300))
    with fsspec.open("memory://corpus/c.jsonl", "wb") as fh:
        fh.write(data)
    splits = plan_splits("memory://corpus/c.jsonl", split_bytes=257)
    url = splits[0].url
    assert len(splits) > 5 and url.startswith("memory://") and url.endswith("corpus/c.jsonl")
    assert splits[0].version
    assert [(r.key, r.data) for s in splits for r in read_split(s)] == lines_of(data)


def test_planning_errors_name_the_path(tmp_path):
    with pytest.raises(SplitError, match="does not exist"):
        plan_splits(str(tmp_path / "nope.jsonl"))
    (tmp_path / "c.csv").write_text("a,b\n")
    with pytest.raises(SplitError, match="cannot tell the format"):
        plan_splits(str(tmp_path / "c.csv"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(SplitError, match="bad.parquet"):
        plan_splits(str(tmp_path / "bad.parquet"))


@pytest.mark.parametrize("name", ["scifact", "wikipedia-vital-en"])
def test_real_corpora_split_exactly_once(tmp_path, name):
    src = DATA / name / "corpus.jsonl.gz"
    if not src.is_file():
        pytest.skip(f"{src} not present")
    data = gzip.decompress(src.read_bytes())
    want = lines_of(data)
    assert [(r.key, r.data) for s in plan_splits(str(src)) for r in read_split(s)] == want
    plain = tmp_path / "corpus.jsonl"
    plain.write_bytes(data)
    for split_bytes in (len(data) // 7 + 1, 1 << 16, 12_345):
        splits = plan_splits(str(plain), split_bytes=split_bytes)
        got = [(r.key, r.data) for s in splits for r in read_split(s)]
        assert got == want
